"""Benchmark of certified evaluation: IBP, CROWN-IBP, CROWN and α-CROWN on N examples of a trained run.

Usage (from the repo root):

    python benchmarks/bench_eval.py runs/demo-learned --n 200
    python benchmarks/bench_eval.py runs/demo-learned --n 200 --methods crown crown-grad --json out.json

Protocol: the first ``--n`` images of the run's test split, the run's own budgets ε(x) (learned or
uniform, at its target ε0), box ``[clip(x − ε), clip(x + ε)]``, lower bounds of the K−1 margins
``f_y − f_j`` (``ctxbudget.bounds.verified_margin_lower``, one batch of N) under
``torch.no_grad()``. Each method runs in its own subprocess (``--threads`` threads, default 2,
allocator tuned as the ``ctxbudget`` commands do); the time is the wall time of the bound call
(best of ``--repeat``) and the CPU time of the process over it (user + system, all threads: less
sensitive than wall time to other jobs on a shared machine), "peak" the growth of the process's maximum resident set size over it.

Rows: ``ibp``, ``crown-ibp``, ``crown``, ``alpha-crown`` (``--alpha-steps`` Adam steps,
``--alpha-lr``, ``--alpha-wide-neurons``: one row per value given); ``crown-grad`` is full CROWN
with autograd on (the box requires grad) followed by ``backward()`` of the summed margins, as a
caller that needs gradients runs it.

Reported: seconds, verified count (all K−1 margin bounds > 0), mean over the N examples of the
smallest margin lower bound (logit units), peak memory.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Optional

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown", "crown-grad")


def run_single(run_dir: str, method: str, n: int, threads: int, repeat: int, alpha_steps: int,
               alpha_lr: float, alpha_wide_neurons: Optional[int]) -> dict:
    import torch

    from ctxbudget.bounds import verified_margin_lower
    from ctxbudget.budgets import input_box
    from ctxbudget.evaluate import load_split
    from ctxbudget.run import load_run
    from ctxbudget.runtime import tune_allocator

    tune_allocator()
    torch.set_num_threads(threads)
    run = load_run(run_dir)
    ds = load_split(run, "test")
    x, y = ds.images[:n], ds.labels[:n]
    with torch.no_grad():
        lo, hi = input_box(x, run.budgets(x))
    opts: dict = {"alpha_steps": alpha_steps, "alpha_lr": alpha_lr} if method == "alpha-crown" else {}
    if method == "alpha-crown" and alpha_wide_neurons is not None:
        opts["alpha_wide_neurons"] = alpha_wide_neurons
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = cpu = float("inf")
    m = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        if method == "crown-grad":
            lo_g = lo.clone().requires_grad_(True)
            m = verified_margin_lower(run.classifier, lo_g, hi, y, "crown")
            m.sum().backward()
            m = m.detach()
        else:
            with torch.no_grad():
                m = verified_margin_lower(run.classifier, lo, hi, y, method, **opts)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB on Linux
    worst = m.min(1).values
    return {"method": method, "n": len(y), "seconds": best, "cpu_seconds": cpu, "verified": int((worst > 0).sum()),
            "mean_min_margin": float(worst.mean()), "peak_mb": peak_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--methods", nargs="+", default=list(METHODS[:4]), choices=METHODS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--alpha-steps", type=int, default=20)
    ap.add_argument("--alpha-lr", type=float, default=0.1)
    ap.add_argument("--alpha-wide-neurons", type=int, nargs="+", default=None,
                    help="unstable neurons per sample re-optimised in a wide layer (default: the "
                         "library's); several values: one α-CROWN row each")
    ap.add_argument("--json", default=None)
    ap.add_argument("--single", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.single:
        res = run_single(a.run_dir, a.single, a.n, a.threads, a.repeat, a.alpha_steps, a.alpha_lr,
                         a.alpha_wide_neurons[0] if a.alpha_wide_neurons else None)
        print("RESULT " + json.dumps(res))
        return
    rows = []
    print(f"| method | wall (s) | CPU (s) | verified / {a.n} | mean smallest margin bound | peak memory |")
    print("|---|---|---|---|---|---|")
    widths: list[Optional[int]] = list(a.alpha_wide_neurons) if a.alpha_wide_neurons else [None]
    jobs = [(m, k) for m in a.methods for k in (widths if m == "alpha-crown" else [None])]
    for method, wide in jobs:
        cmd = [sys.executable, __file__, a.run_dir, "--single", method, "--n", str(a.n), "--threads",
               str(a.threads), "--repeat", str(a.repeat), "--alpha-steps", str(a.alpha_steps),
               "--alpha-lr", str(a.alpha_lr)] + (["--alpha-wide-neurons", str(wide)] if wide is not None else [])
        label = method if wide is None or len(widths) == 1 else f"{method} (wide {wide})"
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        line = [s for s in out.stdout.splitlines() if s.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            print(f"| {label} | failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]} | | | |")
            continue
        r = json.loads(line[0][7:])
        r["label"] = label
        rows.append(r)
        print(f"| {label} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['verified']} | {r['mean_min_margin']:.3f} | "
              f"{r['peak_mb'] / 1024:.2f} GB |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
