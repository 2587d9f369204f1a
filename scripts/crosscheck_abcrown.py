"""Cross-check ctxbudget's certificates with the complete verifier α,β-CROWN.

    python scripts/crosscheck_abcrown.py MODEL [--limit N] [--timeout S] [--out DIR] [--abcrown DIR]
                                         [--table PATH_WITHOUT_SUFFIX]

MODEL is a run directory or a registered model name (``ctxbudget models list``). The script

1. exports the first ``--limit`` test examples with ``ctxbudget export MODEL --format vnnlib
   --budget both --limit N --timeout S --abcrown-device cpu --out DIR`` (skipped when DIR already
   holds that export), and checks every VNN-LIB file against the sha256 in ``manifest.json``;
2. runs α,β-CROWN (``--abcrown DIR`` as prepared by ``shared/tools/abcrown/setup.sh``, default
   ``$ABCROWN_DIR`` or ``/work/abcrown``) on the export's ``instances.csv`` through its
   ``abcrown.yaml``, on the CPU, ``--override_timeout S`` per instance, one verifier process for all
   pending instances (``--select_instance``), its per-instance results read from the pickle that
   ``--results_file`` names (``{"summary": {status: [csv row, …]}, "results": [[status, seconds], …]}``,
   rows in csv order);
3. writes ``TABLE.md`` and ``TABLE.json``: per instance (example, box kind) ctxbudget's verdict and
   best margin lower bound from the manifest, α,β-CROWN's verdict and time; summary lines count the
   contradictions (ctxbudget certifies and α,β-CROWN finds a counterexample; ctxbudget says
   misclassified and α,β-CROWN proves it safe: both must be 0) and the instances α,β-CROWN settles
   that ctxbudget leaves open.

α,β-CROWN's statuses: ``safe``/``safe-incomplete`` (unsat: certified), ``unsafe-pgd``/``unsafe-bab``
(sat: a counterexample), ``unknown`` (timeout); a proof found after the timeout (``safe (timed
out)``) still counts as certified. An instance whose verifier process crashed is ``error`` and the
run goes on with the next one.

Resumable: finished instances are kept in ``DIR/crosscheck_results.json`` with their file's sha256
and skipped on the next run while the file is unchanged (a larger ``--limit`` re-exports and only
runs the new or changed instances). The verifier is never a dependency of ctxbudget and never runs
in the tests (tests/export/test_crosscheck_abcrown.py checks the parsing and the table only).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import pickle
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

KINDS = ("learned", "uniform")
RESULTS = "crosscheck_results.json"
PENDING = "abcrown_pending.json"
PICKLE = "abcrown_results.pkl"


class CrosscheckError(Exception):
    """A problem reported as one line (exit code 2)."""


# ---------------------------------------------------------------------------------------- instances


def load_instances(export_dir: Path) -> list[dict[str, Any]]:
    """The export's instances in ``instances.csv`` order, each joined with its manifest entry:
    ``row, index, label, prediction, kind, vnnlib, sha256, ctxbudget, margin``."""
    manifest = json.loads((export_dir / "manifest.json").read_text())
    by_file: dict[str, tuple[dict[str, Any], str]] = {}
    for ex in manifest["examples"]:
        for kind, name in ex["files"].items():
            by_file[name] = (ex, kind)
    out = []
    with open(export_dir / "instances.csv", newline="") as f:
        for row, item in enumerate(r for r in csv.reader(f) if r):
            if item[1] not in by_file:
                raise CrosscheckError(f"{export_dir / 'instances.csv'}: {item[1]} is not in manifest.json")
            ex, kind = by_file[item[1]]
            verdict = ex["ctxbudget"][kind]
            out.append({"row": row, "index": ex["index"], "label": ex["label"], "prediction": ex["prediction"],
                        "kind": kind, "vnnlib": item[1], "sha256": ex["sha256"][kind],
                        "ctxbudget": verdict["verdict"], "margin": verdict["best_min_margin_lower"]})
    return out


def check_hashes(export_dir: Path, instances: Iterable[dict[str, Any]]) -> None:
    """Every VNN-LIB file must have the sha256 the manifest gives (the box ctxbudget judged)."""
    for inst in instances:
        digest = hashlib.sha256((export_dir / inst["vnnlib"]).read_bytes()).hexdigest()
        if digest != inst["sha256"]:
            raise CrosscheckError(f"{export_dir / inst['vnnlib']} differs from the sha256 in manifest.json")


# ------------------------------------------------------------------------------------------ parsing


def abcrown_verdict(status: str) -> str:
    """``certified`` / ``counterexample`` / ``timeout`` / ``error`` from an α,β-CROWN status string."""
    if status == "error":
        return "error"
    if "unsafe" in status:
        return "counterexample"
    if "safe" in status:
        return "certified"
    return "timeout"


def parse_abcrown_results(obj: dict[str, Any]) -> dict[int, tuple[str, float]]:
    """``{csv row: (status, seconds)}`` from α,β-CROWN's csv-mode results pickle.

    ``summary`` maps each status to the rows that got it; ``results`` lists ``[status, seconds]`` in
    the order the rows ran (ascending)."""
    rows = sorted(r for idx in obj["summary"].values() for r in idx)
    results = obj["results"]
    if len(rows) != len(results):
        raise CrosscheckError(f"results pickle: {len(rows)} rows in summary but {len(results)} results")
    out = {}
    for row, (status, seconds) in zip(rows, results):
        if row not in obj["summary"].get(status, ()):
            raise CrosscheckError(f"results pickle: row {row} has status {status!r} but the summary disagrees")
        out[row] = (str(status), float(seconds))
    return out


def is_done(inst: dict[str, Any], done: dict[str, dict[str, Any]], timeout: float) -> bool:
    """Whether ``inst`` has a result for its current file (a timeout counts only under a timeout as long)."""
    res = done.get(inst["vnnlib"])
    return (res is not None and res["sha256"] == inst["sha256"]
            and not (res["verdict"] == "timeout" and res.get("timeout_s", 0.0) < timeout))


def merge_pickle(export_dir: Path, done: dict[str, dict[str, Any]]) -> int:
    """Fold a finished or interrupted verifier run (``PICKLE`` + ``PENDING``) into ``done``; returns the
    number of instances added (each recorded with its file's sha256 and the timeout at launch)."""
    pkl, pending = export_dir / PICKLE, export_dir / PENDING
    if not (pkl.exists() and pending.exists()):
        return 0
    sidecar = json.loads(pending.read_text())
    launched = {int(k): v for k, v in sidecar["rows"].items()}
    with open(pkl, "rb") as f:
        parsed = parse_abcrown_results(pickle.load(f))
    added = 0
    for row, (status, seconds) in parsed.items():
        if row in launched:
            done[launched[row]["vnnlib"]] = {"sha256": launched[row]["sha256"], "status": status,
                                             "verdict": abcrown_verdict(status), "time_s": seconds,
                                             "timeout_s": sidecar["timeout_s"]}
            added += 1
    pkl.unlink()
    pending.unlink()
    return added


def load_done(export_dir: Path) -> dict[str, dict[str, Any]]:
    """Finished instances ``{vnnlib path: {sha256, status, verdict, time_s}}`` (empty if none)."""
    path = export_dir / RESULTS
    return json.loads(path.read_text())["instances"] if path.exists() else {}


def save_done(export_dir: Path, done: dict[str, dict[str, Any]], wall_s: float) -> None:
    path = export_dir / RESULTS
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"verifier_wall_s": wall_s, "instances": done}, indent=1) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------- the table


def tabulate(instances: list[dict[str, Any]], done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-instance rows (ctxbudget's and α,β-CROWN's verdicts) and the summary counts."""
    rows = []
    for inst in instances:
        res = done.get(inst["vnnlib"])
        if res is not None and res["sha256"] != inst["sha256"]:
            res = None
        ab = res["verdict"] if res else "not run"
        ours = inst["ctxbudget"]
        note = ""
        if ours == "certified" and ab == "counterexample":
            note = "CONTRADICTION: certified by ctxbudget, counterexample by α,β-CROWN"
        elif ours == "misclassified" and ab == "certified":
            note = "CONTRADICTION: misclassified, yet proved safe by α,β-CROWN"
        elif ours == "not certified" and ab in ("certified", "counterexample"):
            note = f"settled by α,β-CROWN ({ab})"
        rows.append({"index": inst["index"], "label": inst["label"], "prediction": inst["prediction"],
                     "kind": inst["kind"], "ctxbudget": ours, "margin_lower": inst["margin"], "abcrown": ab,
                     "abcrown_status": res["status"] if res else None,
                     "time_s": res["time_s"] if res else None, "timeout_s": res.get("timeout_s") if res else None,
                     "note": note})
    return {"summary": summarize_rows(rows), "rows": rows}


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary counts of :func:`tabulate`'s rows (any subset of them: one box kind, several models):
    contradictions, agreements, open instances settled or left open, α,β-CROWN's times."""
    ran = [r for r in rows if r["abcrown"] != "not run"]

    def count(ours: str, ab: str) -> int:
        return sum(r["ctxbudget"] == ours and r["abcrown"] == ab for r in ran)

    times = [r["time_s"] for r in ran if r["time_s"] is not None]
    summary = {
        "instances": len(rows), "run": len(ran),
        "contradictions_certified_vs_counterexample": count("certified", "counterexample"),
        "contradictions_misclassified_vs_safe": count("misclassified", "certified"),
        "open_verified_by_abcrown": count("not certified", "certified"),
        "open_counterexample_by_abcrown": count("not certified", "counterexample"),
        "open_left_open": sum(r["ctxbudget"] == "not certified" and r["abcrown"] in ("timeout", "error") for r in ran),
        "agree_certified": count("certified", "certified"),
        "agree_misclassified": count("misclassified", "counterexample"),
        "certified_abcrown_timeout": count("certified", "timeout"),
        "errors": sum(r["abcrown"] == "error" for r in ran),
        "abcrown_total_s": sum(times), "abcrown_mean_s": sum(times) / len(times) if times else 0.0,
        "timeouts_used_s": dict(sorted(Counter(r["timeout_s"] for r in ran).items(), key=lambda kv: str(kv[0]))),
    }
    summary["contradictions"] = (summary["contradictions_certified_vs_counterexample"]
                                 + summary["contradictions_misclassified_vs_safe"])
    return summary


def to_markdown(table: dict[str, Any], title: str, command: str, wall_s: float) -> str:
    """The table as Markdown: the command, the summary lines, one row per instance."""
    s = table["summary"]
    lines = [f"# α,β-CROWN cross-check: {title}", "", "```", command, "```", "",
             f"- instances: {s['instances']} (α,β-CROWN ran on {s['run']})",
             f"- **contradictions: {s['contradictions']}** (ctxbudget certified / α,β-CROWN counterexample: "
             f"{s['contradictions_certified_vs_counterexample']}; misclassified / α,β-CROWN safe: "
             f"{s['contradictions_misclassified_vs_safe']})",
             f"- agreements: {s['agree_certified']} certified by both, {s['agree_misclassified']} misclassified "
             "with a counterexample from α,β-CROWN",
             f"- left open by ctxbudget, settled by α,β-CROWN: {s['open_verified_by_abcrown']} verified, "
             f"{s['open_counterexample_by_abcrown']} counterexamples; still open: {s['open_left_open']}",
             f"- certified by ctxbudget, α,β-CROWN timed out: {s['certified_abcrown_timeout']}; verifier errors: "
             f"{s['errors']}",
             f"- time: α,β-CROWN {s['abcrown_total_s']:.1f} s over the instances (mean {s['abcrown_mean_s']:.2f} s), "
             + (f"{wall_s:.0f} s wall for its processes (start-up included)" if wall_s > 0
                else "wall time of its processes not recorded") + "; per-instance timeout (wall clock): "
             + ", ".join(f"{t:g} s on {n}" for t, n in s["timeouts_used_s"].items() if t is not None), "",
             "| example | label | box | ctxbudget | best margin LB | α,β-CROWN | status | time (s) | note |",
             "|---:|---:|---|---|---:|---|---|---:|---|"]
    for r in table["rows"]:
        t = "" if r["time_s"] is None else f"{r['time_s']:.2f}"
        lines.append(f"| {r['index']} | {r['label']} | {r['kind']} | {r['ctxbudget']} | {r['margin_lower']:.4g} | "
                     f"{r['abcrown']} | {r['abcrown_status'] or ''} | {t} | {r['note']} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- the commands


def export(model: str, limit: int, timeout: float, out: Path) -> None:
    """``ctxbudget export`` unless ``out`` already holds this export (same limit, both kinds, timeout)."""
    manifest = out / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if len(m["examples"]) == limit and list(m["kinds"]) == list(KINDS) and m["timeout"] == timeout:
            return
    cmd = [sys.executable, "-m", "ctxbudget", "export", model, "--format", "vnnlib", "--budget", "both",
           "--limit", str(limit), "--timeout", f"{timeout:g}", "--abcrown-device", "cpu", "--out", str(out)]
    print("$", shlex.join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise CrosscheckError(f"ctxbudget export {model} failed (its message is above)")


def verifier_paths(abcrown_dir: Path) -> tuple[Path, Path]:
    """``(python, complete_verifier folder)`` of an α,β-CROWN set up by setup.sh, or one-line error."""
    python, cv = abcrown_dir / "venv" / "bin" / "python", abcrown_dir / "abcrown" / "complete_verifier"
    if not (python.exists() and (cv / "abcrown.py").exists()):
        raise CrosscheckError(f"no alpha,beta-CROWN in {abcrown_dir} (need venv/bin/python and "
                              "abcrown/complete_verifier/abcrown.py): run shared/tools/abcrown/setup.sh, "
                              "or pass --abcrown DIR")
    return python, cv


def run_verifier(abcrown_dir: Path, export_dir: Path, pending: list[dict[str, Any]], timeout: float,
                 log: Path) -> int:
    """One α,β-CROWN process on the ``pending`` instances; returns its exit code."""
    python, cv = verifier_paths(abcrown_dir)
    rows = {str(p["row"]): {"vnnlib": p["vnnlib"], "sha256": p["sha256"]} for p in pending}
    (export_dir / PENDING).write_text(json.dumps({"timeout_s": timeout, "rows": rows}))
    cmd = [str(python), "abcrown.py", "--config", str((export_dir / "abcrown.yaml").resolve()), "--device", "cpu",
           "--override_timeout", f"{timeout:g}", "--results_file", str((export_dir / PICKLE).resolve()),
           "--select_instance", *(str(p["row"]) for p in pending)]
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=cv, stdout=f, stderr=subprocess.STDOUT)
        try:
            return proc.wait()
        except KeyboardInterrupt:       # stop the verifier too; what it finished is kept
            proc.terminate()
            proc.wait()
            raise


def last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"


def crosscheck(abcrown_dir: Path, export_dir: Path, timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """Run the verifier on every instance not yet done; returns ``(instances, done, verifier wall s)``."""
    instances = load_instances(export_dir)
    check_hashes(export_dir, instances)
    done = load_done(export_dir)
    wall = json.loads((export_dir / RESULTS).read_text())["verifier_wall_s"] if (export_dir / RESULTS).exists() else 0.0
    if merge_pickle(export_dir, done):
        save_done(export_dir, done, wall)
    log = export_dir / "abcrown_log.txt"
    errors_in_a_row = 0
    while True:
        pending = [i for i in instances if not is_done(i, done, timeout)]
        if not pending:
            break
        print(f"alpha,beta-CROWN on {len(pending)} instances (log: {log})", flush=True)
        start = time.time()
        try:
            rc = run_verifier(abcrown_dir, export_dir, pending, timeout, log)
        finally:                         # also on Ctrl-C: keep what the verifier finished
            wall += time.time() - start
            added = merge_pickle(export_dir, done)
            save_done(export_dir, done, wall)
        if rc < 0:
            raise CrosscheckError(f"alpha,beta-CROWN was killed by signal {-rc} after {added} instances; "
                                  "rerun to resume")
        if rc != 0:
            first = next((p for p in pending if not is_done(p, done, timeout)), None)
            print(f"alpha,beta-CROWN exited {rc} on {first['vnnlib'] if first else 'exit'}: {last_line(log)}",
                  flush=True)
            if first is not None:       # the instance it crashed on: recorded as an error, the run goes on
                done[first["vnnlib"]] = {"sha256": first["sha256"], "status": "error", "verdict": "error",
                                         "time_s": None, "timeout_s": timeout}
                errors_in_a_row = errors_in_a_row + 1 if added == 0 else 1
        save_done(export_dir, done, wall)
        if errors_in_a_row >= 3:
            raise CrosscheckError(f"alpha,beta-CROWN failed on 3 instances in a row; see {log}")
        if rc == 0 and not added:
            raise CrosscheckError(f"alpha,beta-CROWN wrote no results for {len(pending)} instances; see {log}")
    return instances, done, wall


def table_files(table: Path) -> tuple[Path, Path]:
    """``TABLE.md`` and ``TABLE.json`` for ``--table TABLE`` (a model name's dots are kept:
    ``mnist-learned-0.4-paper`` → ``mnist-learned-0.4-paper.md``; a given .md/.json suffix is dropped)."""
    stem = str(table)[: -len(table.suffix)] if table.suffix in (".md", ".json") else str(table)
    return Path(stem + ".md"), Path(stem + ".json")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def command_line(argv: list[str]) -> str:
    """This invocation as a shell line, with the niceness and OMP_NUM_THREADS it ran under."""
    prefix = []
    if os.environ.get("OMP_NUM_THREADS"):
        prefix.append(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    if os.nice(0) > 0:
        prefix.append(f"nice -n {os.nice(0)}")
    return " ".join([*prefix, "python", *(shlex.quote(a) for a in argv)])


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="run directory or registered model name")
    ap.add_argument("--limit", type=int, default=10, help="first N test examples (2 instances each)")
    ap.add_argument("--timeout", type=float, default=30.0, help="alpha,beta-CROWN's timeout per instance (s)")
    ap.add_argument("--out", type=Path, default=None, help="export and verifier files (default out/crosscheck/MODEL)")
    ap.add_argument("--abcrown", type=Path, default=Path(os.environ.get("ABCROWN_DIR", "/work/abcrown")),
                    help="setup.sh's DEST (default $ABCROWN_DIR or /work/abcrown)")
    ap.add_argument("--table", type=Path, default=None,
                    help="writes TABLE.md and TABLE.json (default results/crosscheck/MODEL)")
    args = ap.parse_args(argv[1:])
    name = Path(args.model).name
    out = args.out or Path("out/crosscheck") / name
    table_path = args.table or Path("results/crosscheck") / name
    try:
        if args.limit < 1 or not args.timeout > 0:
            raise CrosscheckError("--limit must be >= 1 and --timeout > 0")
        verifier_paths(args.abcrown)
        export(args.model, args.limit, args.timeout, out)
        instances, done, wall = crosscheck(args.abcrown, out, args.timeout)
    except CrosscheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; finished instances are kept in {out / RESULTS}, rerun to resume", file=sys.stderr)
        return 130
    table = tabulate(instances, done)
    table["command"] = command_line(argv)
    table["model"] = args.model
    table["timeout_s"] = args.timeout
    table["verifier_wall_s"] = wall
    md, js = table_files(table_path)
    md.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(js, json.dumps(table, indent=1) + "\n")
    write_atomic(md, to_markdown(table, args.model, table["command"], wall))
    s = table["summary"]
    print(f"{s['run']} instances: {s['contradictions']} contradictions; settled by alpha,beta-CROWN where ctxbudget "
          f"is open: {s['open_verified_by_abcrown']} verified, {s['open_counterexample_by_abcrown']} counterexamples; "
          f"mean {s['abcrown_mean_s']:.2f} s per instance; wrote {md} and {js.name}")
    return 1 if s["contradictions"] else 0


if __name__ == "__main__":
    # SIGTERM, and SIGINT even when started in the background, stop the verifier and keep its results
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
