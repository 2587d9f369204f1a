"""Wall time of one ``ctxbudget evaluate`` on one process vs under torchrun with N CPU ranks (gloo),
alternated, with the per-example arrays compared.

    PYTHONPATH=src python benchmarks/bench_eval_ranks.py MODEL [--limit 2000] [--ranks 2] [--repeats 2] \
        [--data-dir DIR] [--extra "--liu-limit 0"]

MODEL is a run directory or a registered model. Each process uses one thread (OMP_NUM_THREADS=1), so
one process uses one core and N ranks N cores. Prints a Markdown table (seconds per repeat, the ratio
of the medians) and whether the N-rank per_example.npz equals the one-process one array by array.
"""
from __future__ import annotations

import argparse
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _evaluate(model: str, out: Path, ranks: int, args: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    launcher = [sys.executable, "-m", "ctxbudget"] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port", str(_free_port()),
         "-m", "ctxbudget"]
    t = time.perf_counter()
    subprocess.run([*launcher, "evaluate", model, "--out", str(out), "--device", "cpu", "--no-progress", *args],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--extra", default="", help="more evaluate arguments, e.g. \"--liu-limit 0\"")
    a = ap.parse_args()
    args = ["--limit", str(a.limit), *(["--data-dir", a.data_dir] if a.data_dir else []), *shlex.split(a.extra)]
    times: dict[int, list[float]] = {1: [], a.ranks: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats):
            for r in (1, a.ranks):
                times[r].append(_evaluate(a.model, Path(tmp) / f"r{r}", r, args))
        one, many = (np.load(Path(tmp) / f"r{r}" / "per_example.npz") for r in (1, a.ranks))
        same = all(np.array_equal(one[k], many[k], equal_nan=one[k].dtype.kind == "f") for k in one.files)
    m1, mn = statistics.median(times[1]), statistics.median(times[a.ranks])
    print(f"`ctxbudget evaluate {a.model} {' '.join(args)}`, one thread per process\n")
    print("| processes | seconds (each repeat) | median | speed-up |")
    print("|---|---|---|---|")
    print(f"| 1 | {', '.join(f'{t:.1f}' for t in times[1])} | {m1:.1f} | 1.00 |")
    print(f"| {a.ranks} (torchrun, gloo) | {', '.join(f'{t:.1f}' for t in times[a.ranks])} | {mn:.1f} | {m1 / mn:.2f} |")
    print(f"\nper_example.npz of {a.ranks} ranks == one process, array by array: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
