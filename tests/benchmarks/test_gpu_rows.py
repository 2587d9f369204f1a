"""benchmarks/gpu_rows.py: row specs, and `collect` packing finished and unfinished rows (no training)."""
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_rows", ROOT / "benchmarks" / "gpu_rows.py")
gpu_rows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_rows)


def test_parse_spec():
    assert gpu_rows.parse_spec("a=table1/learned-0.4,budget.generator=dense,num_threads=2") == \
        ("a", "table1", "learned-0.4", ["budget.generator=dense", "num_threads=2"])
    assert gpu_rows.parse_spec("b=fast/learned-0.4") == ("b", "fast", "learned-0.4", [])
    for bad in ("table1/learned-0.4", "a=table1", "a=/row", "a=t/r,novalue"):
        with pytest.raises(ValueError, match="bad row spec"):
            gpu_rows.parse_spec(bad)


def _run(work: Path, name: str, epochs: int, finished: bool, ckpt_bytes: int) -> None:
    run = work / name / "table1" / "learned-0.4"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"epoch": e, "split": "test", "clean_err": 0.02,
                                                             "verified_err": 0.1}) for e in range(1, epochs + 1)))
    (run / "checkpoints" / "last.pt").write_bytes(b"L" * ckpt_bytes)
    if finished:
        (run / "final.pt").write_bytes(b"F" * ckpt_bytes)
        (run / "results.json").write_text("{}")
    (work / f"{name}.log").write_text("log\n")


def test_collect_packs_each_row_with_the_checkpoint_that_resumes_it(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    _run(work, "done", 3, True, 1000)
    _run(work, "half", 2, False, 1000)
    _run(work, "big", 2, False, 3 * 2**20)          # its checkpoint does not fit under --max-mib 2
    (work / "rows.json").write_text(json.dumps({n: {"pid": 2**22 + 7, "experiment": "table1", "row": "learned-0.4"}
                                                for n in ("done", "half", "big")}))
    gpu_rows.collect(work, out, seconds=0, max_mib=2)
    data = b"".join(p.read_bytes() for p in sorted(out.glob("rows.tar.part-*")))
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert "done/table1/learned-0.4/final.pt" in names and "done/table1/learned-0.4/checkpoints/last.pt" not in names
    assert "half/table1/learned-0.4/checkpoints/last.pt" in names and "half/table1/learned-0.4/metrics.jsonl" in names
    assert "big/table1/learned-0.4/metrics.jsonl" in names
    assert not any(n.startswith("big/") and n.endswith(".pt") for n in names)
    report = (out / "rows.md").read_text()
    assert "| done | table1/learned-0.4 | finished | 3 | 2.00 % | 10.00 % | final.pt |" in report
    assert "| half | table1/learned-0.4 | exited | 2 |" in report
    assert "last.pt left out (size)" in report
