"""scripts/crosscheck_abcrown.py: its parsing and table only, on a fake export and a fake verifier
results pickle written here (α,β-CROWN itself never runs in the tests)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("crosscheck_abcrown", REPO / "scripts" / "crosscheck_abcrown.py")
assert _spec is not None and _spec.loader is not None
xc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(xc)

# (example index, label, prediction, {kind: ctxbudget verdict})
EXAMPLES = [(0, 7, 7, {"learned": "certified", "uniform": "not certified"}),
            (1, 2, 2, {"learned": "not certified", "uniform": "not certified"}),
            (2, 1, 4, {"learned": "misclassified", "uniform": "misclassified"})]


def _fake_export(root: Path) -> None:
    """manifest.json, instances.csv and VNN-LIB stand-ins in the export's layout."""
    (root / "vnnlib").mkdir(parents=True)
    examples, rows = [], []
    for i, y, p, verdicts in EXAMPLES:
        files, hashes, ours = {}, {}, {}
        for kind, verdict in verdicts.items():
            name = f"vnnlib/{kind}_{i:05d}.vnnlib"
            (root / name).write_text(f"; fake {kind} {i}\n")
            files[kind], hashes[kind] = name, hashlib.sha256((root / name).read_bytes()).hexdigest()
            margin = 1.5 if verdict == "certified" else -0.5
            ours[kind] = {"verdict": verdict, "certified_by": [], "min_margin_lower": {"ibp": margin},
                          "best_min_margin_lower": margin}
            rows.append(f"model.onnx,{name},30")
        examples.append({"index": i, "label": y, "prediction": p, "files": files, "sha256": hashes, "ctxbudget": ours})
    (root / "manifest.json").write_text(json.dumps({"kinds": ["learned", "uniform"], "timeout": 30.0,
                                                    "examples": examples}))
    (root / "instances.csv").write_text("\n".join(rows) + "\n")


def _fake_verifier_run(root: Path, statuses: dict[int, tuple[str, float]]) -> None:
    """What one α,β-CROWN run leaves: the pending sidecar and its csv-mode results pickle."""
    instances = xc.load_instances(root)
    rows = {str(i["row"]): {"vnnlib": i["vnnlib"], "sha256": i["sha256"]} for i in instances}
    (root / xc.PENDING).write_text(json.dumps({"timeout_s": 30.0, "rows": rows}))
    summary: dict[str, list[int]] = {}
    for row, (status, _) in statuses.items():
        summary.setdefault(status, []).append(row)
    with open(root / xc.PICKLE, "wb") as f:
        pickle.dump({"summary": summary, "results": [[s, t] for _, (s, t) in sorted(statuses.items())],
                     "bab_ret": []}, f)


def test_statuses_map_to_verdicts():
    assert [xc.abcrown_verdict(s) for s in ("safe", "safe-incomplete", "safe (timed out)", "unsafe-pgd",
                                            "unsafe-bab", "unknown", "error")] == \
        ["certified", "certified", "certified", "counterexample", "counterexample", "timeout", "error"]


def test_pickle_rows_follow_the_summary():
    obj = {"summary": {"safe": [4, 1], "unsafe-pgd": [3]}, "results": [["safe", 1.0], ["unsafe-pgd", 0.1], ["safe", 2.0]]}
    assert xc.parse_abcrown_results(obj) == {1: ("safe", 1.0), 3: ("unsafe-pgd", 0.1), 4: ("safe", 2.0)}
    with pytest.raises(xc.CrosscheckError):
        xc.parse_abcrown_results({"summary": {"safe": [0, 1]}, "results": [["safe", 1.0]]})


def test_table_counts_contradictions_and_settled_instances(tmp_path):
    _fake_export(tmp_path)
    instances = xc.load_instances(tmp_path)
    assert [(i["row"], i["index"], i["kind"], i["ctxbudget"]) for i in instances][:2] == \
        [(0, 0, "learned", "certified"), (1, 0, "uniform", "not certified")]
    xc.check_hashes(tmp_path, instances)
    # rows: 0 ex0 learned certified | 1 ex0 uniform open | 2 ex1 learned open | 3 ex1 uniform open
    #       4 ex2 learned misclassified | 5 ex2 uniform misclassified; row 5 not reached (interrupted run)
    _fake_verifier_run(tmp_path, {0: ("unsafe-bab", 3.0), 1: ("safe", 2.0), 2: ("unsafe-pgd", 0.5),
                                  3: ("unknown", 30.0), 4: ("safe-incomplete", 1.0)})
    done: dict = {}
    assert xc.merge_pickle(tmp_path, done) == 5
    assert {r["timeout_s"] for r in done.values()} == {30.0}
    assert not (tmp_path / xc.PICKLE).exists() and not (tmp_path / xc.PENDING).exists()
    table = xc.tabulate(instances, done)
    s = table["summary"]
    assert (s["instances"], s["run"], s["contradictions"]) == (6, 5, 2)
    assert s["contradictions_certified_vs_counterexample"] == 1 and s["contradictions_misclassified_vs_safe"] == 1
    assert (s["open_verified_by_abcrown"], s["open_counterexample_by_abcrown"], s["open_left_open"]) == (1, 1, 1)
    assert s["abcrown_total_s"] == pytest.approx(36.5)
    assert table["rows"][5]["abcrown"] == "not run"
    md = xc.to_markdown(table, "fake", "python scripts/crosscheck_abcrown.py fake", 40.0)
    assert "**contradictions: 2**" in md and md.count("CONTRADICTION") == 2 and "timeout (wall clock): 30 s on 5" in md
    assert "40 s wall" in md and "not recorded" in xc.to_markdown(table, "fake", "cmd", 0.0)
    assert len([ln for ln in md.splitlines() if ln.startswith("| ")]) == 1 + 6


def test_resume_skips_done_instances_unless_the_file_changed_or_the_timeout_grew(tmp_path):
    _fake_export(tmp_path)
    instances = xc.load_instances(tmp_path)
    done = {instances[0]["vnnlib"]: {"sha256": instances[0]["sha256"], "status": "safe", "verdict": "certified",
                                     "time_s": 1.0, "timeout_s": 30.0},
            instances[1]["vnnlib"]: {"sha256": instances[1]["sha256"], "status": "unknown", "verdict": "timeout",
                                     "time_s": 30.0, "timeout_s": 30.0},
            instances[2]["vnnlib"]: {"sha256": "0" * 64, "status": "safe", "verdict": "certified",
                                     "time_s": 1.0, "timeout_s": 30.0}}
    assert [xc.is_done(i, done, 30.0) for i in instances[:4]] == [True, True, False, False]
    assert [xc.is_done(i, done, 60.0) for i in instances[:2]] == [True, False]
    (tmp_path / instances[0]["vnnlib"]).write_text("changed\n")
    with pytest.raises(xc.CrosscheckError, match="differs from the sha256"):
        xc.check_hashes(tmp_path, instances)


def test_missing_verifier_is_one_line(tmp_path, capsys):
    assert xc.main(["crosscheck_abcrown.py", "some-model", "--abcrown", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no alpha,beta-CROWN in") and "\n" not in err


def test_summary_counts_contradictions_and_the_gap_per_model_and_box(tmp_path):
    spec = importlib.util.spec_from_file_location("crosscheck_summary", REPO / "scripts" / "crosscheck_summary.py")
    assert spec is not None and spec.loader is not None
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)

    def r(kind, ours, ab):
        return {"kind": kind, "ctxbudget": ours, "abcrown": ab, "time_s": 1.0, "timeout_s": 30.0}
    a = {"model": "a", "rows": [r("learned", "certified", "certified"), r("learned", "not certified", "certified"),
                                r("learned", "not certified", "counterexample"), r("uniform", "misclassified",
                                                                                    "counterexample"),
                                r("uniform", "not certified", "timeout"), r("uniform", "certified", "not run")]}
    b = {"model": "b", "rows": [r("learned", "certified", "counterexample")]}
    c = summary.counts(a["rows"])
    assert (c["instances"], c["contradictions"], c["certified_both"], c["open_verified"], c["open_cex"],
            c["open_open"], c["misclassified_cex"]) == (5, 0, 1, 1, 1, 1, 1)
    text = summary.summarize([a, b])
    assert "| `a` · learned | 3 | **0** | 1 | 0 | 1 | 1 | 0 | 0 | 66.7 → 33.3 (≥ 33.3) |" in text
    assert "| **all** | 6 | **1** |" in text and "over 2 models, **1 contradiction**." in text
    paths = []
    for t in (a, b):
        p = tmp_path / f"{t['model']}.json"
        p.write_text(json.dumps(t))
        paths.append(str(p))
    assert summary.main([*paths, "--out", str(tmp_path / "s.md")]) == 0 and (tmp_path / "s.md").read_text() == text
    assert summary.main([str(tmp_path / "missing.json")]) == 2


def test_table_files_keep_the_dots_of_a_model_name():
    assert xc.table_files(Path("results/crosscheck/mnist-learned-0.4-paper")) == (
        Path("results/crosscheck/mnist-learned-0.4-paper.md"), Path("results/crosscheck/mnist-learned-0.4-paper.json"))
    assert xc.table_files(Path("t/x.md")) == (Path("t/x.md"), Path("t/x.json"))
