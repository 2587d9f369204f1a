"""Benchmark of one certified-training step (bounds + backward + Adam) vs. a natural step.

Usage (from the repo root):

    python benchmarks/bench_bounds.py --models dm-small dm-large

Protocol: MNIST-shaped random input (1×28×28, 10 classes), batch 128, ``torch.set_num_threads(2)``
(``--threads``), per-pixel budgets ``eps = 0.1 · sigmoid(θ)`` with θ (B×1×28×28) trained by the same
Adam optimiser as the model (so gradients flow into ε), box ``[clip(x−ε), clip(x+ε)]``. One step =
loss + backward + Adam step; we report the median of ``--steps`` steps after ``--warmup`` steps,
and the ratio to the natural step (cross-entropy on clean logits + backward + Adam) measured in
the same process, alternating natural and bound steps (the ratio is the median of the per-pair
ratios, robust to load changes on a shared machine). Each configuration runs in its own subprocess; "peak MB" is the growth of the
process's maximum resident set size (``resource.getrusage(...).ru_maxrss``) over the step loop,
measured after the model, data and optimiser are set up and one natural step is done
(on CUDA: ``torch.cuda.max_memory_allocated``).
Like the ``ctxbudget`` commands, the processes run with ``ctxbudget.runtime.tune_allocator()``
(``--no-malloc-tuning`` to measure glibc's defaults).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "natural": "natural step: CE(clean logits) + backward + Adam",
    "ibp": "IBP robust CE",
    "crown-ibp-margins": "CROWN-IBP, margins (K−1 rows, fusion=False)",
    "crown-ibp-fusion": "CROWN-IBP, loss fusion (1 row)",
}


def run_single(model_name: str, config: str, batch: int, steps: int, warmup: int, threads: int,
               device: str, fused: bool = False) -> dict:
    import torch
    import torch.nn.functional as F

    from ctxbudget.bounds import robust_cross_entropy
    from ctxbudget.bounds.relu import fused_relu_unavailable, set_fused_relu
    from ctxbudget.models.classifiers import get_model
    from ctxbudget.runtime import tune_allocator

    tuned = tune_allocator()  # as the ctxbudget commands do (off with --no-malloc-tuning)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    model = get_model(model_name, (1, 28, 28), 10).to(dev).train()
    x = torch.rand(batch, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    theta = torch.zeros(batch, 1, 28, 28, device=dev, requires_grad=True)
    opt = torch.optim.Adam(list(model.parameters()) + [theta], lr=1e-4)

    def step(cfg: str) -> None:
        opt.zero_grad(set_to_none=True)
        if cfg == "natural":
            loss = F.cross_entropy(model(x), y)
        else:
            eps = 0.1 * torch.sigmoid(theta)
            xl, xu = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
            if cfg == "ibp":
                loss = robust_cross_entropy(model, xl, xu, y, method="ibp").mean()
            elif cfg == "crown-ibp-margins":
                loss = robust_cross_entropy(model, xl, xu, y, method="crown-ibp", fusion=False).mean()
            elif cfg == "crown-ibp-fusion":
                loss = robust_cross_entropy(model, xl, xu, y, method="crown-ibp", fusion=True).mean()
            else:
                raise ValueError(cfg)
        loss.backward()
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(cfg: str) -> float:
        sync()
        t0 = time.perf_counter()
        step(cfg)
        sync()
        return time.perf_counter() - t0

    step("natural")  # allocates Adam state
    sync()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    compile_s = None
    if fused:   # the first fused step compiles the ReLU rules for this shape
        set_fused_relu(True)
        compile_s = timed(config)
        set_fused_relu(False)
    for _ in range(warmup):
        step(config)
        step("natural")
    # natural and bound steps alternate, so that load changes on a shared machine hit both alike;
    # with --fused-relu the fused bound step takes its turn right after the eager one
    nat, times, ftimes = [], [], []
    for _ in range(steps):
        nat.append(timed("natural"))
        times.append(timed(config))
        if fused:
            set_fused_relu(True)
            ftimes.append(timed(config))
            set_fused_relu(False)
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB on Linux
    return {"model": model_name, "config": config, "median_s": statistics.median(times),
            "natural_median_s": statistics.median(nat),
            "ratio": statistics.median(t / n for t, n in zip(times, nat)),
            "times": times, "natural_times": nat, "peak_mb": peak_mb, "malloc_tuned": tuned,
            **({"fused_ratio": statistics.median(t / n for t, n in zip(ftimes, nat)), "fused_times": ftimes,
                "fused_median_s": statistics.median(ftimes), "fused_first_step_s": compile_s,
                "fused_unavailable": fused_relu_unavailable()} if fused else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["dm-small", "dm-large"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="keep glibc's default allocator settings (see ctxbudget.runtime)")
    ap.add_argument("--fused-relu", action="store_true",
                    help="also time each bound step with the fused (torch.compile) ReLU rules, interleaved")
    ap.add_argument("--single", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.single:
        res = run_single(a.single[0], a.single[1], a.batch, a.steps, a.warmup, a.threads, a.device, a.fused_relu)
        print("RESULT " + json.dumps(res))
        return
    if a.no_malloc_tuning:
        os.environ["CTXBUDGET_MALLOC_TUNING"] = "0"  # read by the subprocesses
    results = []
    for model in a.models:
        for config in [c for c in a.configs if c != "natural"]:
            cmd = [sys.executable, os.path.abspath(__file__), "--single", model, config, "--batch", str(a.batch),
                   "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads),
                   "--device", a.device] + (["--fused-relu"] if a.fused_relu else [])
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                print(out.stdout, out.stderr, file=sys.stderr)
                raise SystemExit(f"{model} {config} failed")
            res = json.loads(line[0][7:])
            results.append(res)
            print(f"{model:9s} {config:18s} median {res['median_s']:.3f}s natural {res['natural_median_s']:.3f}s "
                  f"ratio {res['ratio']:.2f}  peak +{res['peak_mb']:.0f} MB"
                  + (f"  fused: ratio {res['fused_ratio']:.2f}, first step {res['fused_first_step_s']:.1f}s "
                     f"{res['fused_unavailable'] or ''}" if a.fused_relu else ""), flush=True)
    print()
    tuning = "malloc tuned" if all(r["malloc_tuned"] for r in results) else "default malloc"
    print(f"| step / natural step (batch {a.batch}, {a.threads} threads, {a.device}, {tuning}) | "
          + " | ".join(a.models) + " |")
    print("|---|" + "---|" * len(a.models))
    cfgs = [c for c in a.configs if c != "natural"]
    cells = []
    for model in a.models:
        nats = [r["natural_median_s"] for r in results if r["model"] == model]
        cells.append(f"{statistics.median(nats):.3f} s")
    print(f"| {CONFIGS['natural']} (median over runs) | " + " | ".join(cells) + " |")
    for config in cfgs:
        cells = []
        for model in a.models:
            r = next(r for r in results if r["model"] == model and r["config"] == config)
            cells.append(f"{r['ratio']:.2f}× ({r['median_s']:.3f} s; peak +{r['peak_mb']:.0f} MB)"
                         + (f"; fused {r['fused_ratio']:.2f}×" if a.fused_relu else ""))
        print(f"| {CONFIGS[config]} | " + " | ".join(cells) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
