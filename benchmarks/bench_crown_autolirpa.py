"""Full CROWN side by side: ctxbudget's engine vs auto_LiRPA's, same model, boxes and process.

    PYTHONPATH=src:/work/abcrown/abcrown/auto_LiRPA /work/abcrown/venv/bin/python \\
        benchmarks/bench_crown_autolirpa.py mnist-learned-0.4-paper --n 200 --repeats 3 --data-dir ../shared/data

MODEL is a run directory or a registered model name. auto_LiRPA is never a dependency of ctxbudget:
run this with an interpreter where both import (above: the venv and the auto_LiRPA checkout that
``shared/tools/abcrown/setup.sh`` prepares). Protocol: the first ``--n`` test images, the model's own
budgets (learned or uniform, at its ε0), the box ``[clip(x − ε), clip(x + ε)]``, lower bounds of the
K−1 margins ``f_y − f_j`` with intermediate bounds by CROWN for every layer (ours:
``verified_margin_lower(…, "crown")``; auto_LiRPA: ``compute_bounds(method="CROWN", C=…,
bound_upper=False)``), under ``torch.no_grad()``, ``--threads`` threads (default 2). The two take
turns ``--repeats`` times after one warm-up call each; the table gives the median and best wall
time, the median CPU time of the process over the call, the number verified (every margin bound
> 0) and the mean smallest margin bound. ``--profile`` prints the top operators of one call of each.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    try:
        from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
    except ImportError as exc:
        raise SystemExit(f"auto_LiRPA does not import here ({exc}); see this script's docstring") from None
    from ctxbudget.bounds import margin_spec, verified_margin_lower
    from ctxbudget.budgets import input_box
    from ctxbudget.evaluate import load_split
    from ctxbudget.run import load_run
    from ctxbudget.runtime import tune_allocator

    tune_allocator()
    torch.set_num_threads(a.threads)
    run = load_run(a.model)
    ds = load_split(run, "test", a.data_dir)
    x, y = ds.images[: a.n], ds.labels[: a.n]
    model = run.classifier.eval()
    with torch.no_grad():
        lo, hi = input_box(x, run.budgets(x))
    C = margin_spec(y, int(model(x[:1]).shape[1]))
    lirpa = BoundedModule(model, torch.empty_like(x), device="cpu", verbose=False)
    bx = BoundedTensor(x, PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi))

    def ours() -> torch.Tensor:
        return verified_margin_lower(model, lo, hi, y, "crown", x=x)

    def theirs() -> torch.Tensor:
        lb, _ = lirpa.compute_bounds(x=(bx,), C=C, method="CROWN", bound_upper=False)
        return lb

    engines: dict[str, Callable[[], torch.Tensor]] = {"ctxbudget": ours, "auto_LiRPA": theirs}
    walls: dict[str, list[float]] = {k: [] for k in engines}
    cpus: dict[str, list[float]] = {k: [] for k in engines}
    bounds: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, f in engines.items():                     # warm-up
            bounds[name] = f()
        for _ in range(a.repeats):
            for name, f in engines.items():
                t0, c0 = time.perf_counter(), time.process_time()
                f()
                walls[name].append(time.perf_counter() - t0)
                cpus[name].append(time.process_time() - c0)
        if a.profile:
            from torch.profiler import ProfilerActivity, profile
            for name, f in engines.items():
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    f()
                print(f"## {name}\n{prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15)}")
    print(f"{run.model if getattr(run, 'model', None) else a.model}: full CROWN on the first {len(y)} test images, "
          f"own budgets, margins of the K−1 other classes, {a.threads} threads, torch {torch.__version__}; "
          f"{a.repeats} alternated calls each after a warm-up")
    print("| engine | wall median (s) | wall best (s) | CPU median (s) | verified | mean smallest margin bound |")
    print("|---|---|---|---|---|---|")
    for name in engines:
        worst = bounds[name].min(1).values
        print(f"| {name} | {statistics.median(walls[name]):.2f} | {min(walls[name]):.2f} | "
              f"{statistics.median(cpus[name]):.2f} | {int((worst > 0).sum())} / {len(y)} | {float(worst.mean()):.4f} |")
    ratio = statistics.median(walls["ctxbudget"]) / statistics.median(walls["auto_LiRPA"])
    print(f"ctxbudget / auto_LiRPA (median wall): {ratio:.2f}")


if __name__ == "__main__":
    main()
