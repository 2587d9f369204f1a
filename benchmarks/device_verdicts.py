"""Evaluate one model on several devices and count the examples whose verdict differs.

    PYTHONPATH=src python benchmarks/device_verdicts.py [--model quickstart-learned] [--limit 1000] \
        [--devices cpu,cuda] [--batch-size 128] [--data-dir DIR]

``--model`` is a run directory or a registered model (default: the packaged quick-start model, which
needs no data). Every device evaluates the same images (IBP + CROWN-IBP, PGD 20 steps, no Liu et al.)
with the same per-example attack seeds; the table gives each device's time and verified errors, and
per device pair the examples whose verdict differs, split into those the rounding rule explains (the
certified margin bound within 2τ of 0 on either side, docs/method.md) and the rest (must be 0).
Markdown on stdout.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ctxbudget.devices import resolve
from ctxbudget.evaluate import evaluate_model, load_split
from ctxbudget.run import load_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="quickstart-learned")
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    devices = [d for d in args.devices.split(",") if d]
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        devices = [d for d in devices if not d.startswith("cuda")]
        print("no CUDA device: CPU only\n")
    records: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    for name in devices:
        run = load_run(args.model, device=resolve(name))
        ds = load_split(run, "test", args.data_dir)
        x, y = ds.images[:args.limit], ds.labels[:args.limit]
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        summary, rec = evaluate_model(run.classifier, run.threat, x, y, batch_size=args.batch_size, liu_limit=0,
                                      attack_steps=20, progress=False, return_records=True)
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        records[name] = rec
        v = summary["verified_err"]
        rows.append(f"| {name} | {len(x)} | {seconds:.1f} | {100 * summary['clean_err']:.2f} | {100 * v['learned']:.2f} | "
                    f"{100 * v['uniform']:.2f} | {summary['soundness_violations']} |")
    print(f"model {args.model}, torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "") + "\n")
    print("| device | examples | seconds | clean % | verified learned % | verified uniform % | soundness violations |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| pair | budgets | verdicts differ | within 2τ of 0 (rounding rule) | unexplained |")
    print("|---|---|---|---|---|")
    base = devices[0]
    for other in devices[1:]:
        a, b = records[base], records[other]
        for kind in ("learned", "uniform"):
            diff = a[f"verified_{kind}_any"] != b[f"verified_{kind}_any"]
            near = np.zeros_like(diff)
            for m in ("ibp", "crown_ibp"):
                tol = np.maximum(a[f"tol_{kind}_{m}"], b[f"tol_{kind}_{m}"])
                near |= (np.abs(a[f"min_lb_{kind}_{m}"]) <= 2 * tol) | (np.abs(b[f"min_lb_{kind}_{m}"]) <= 2 * tol)
            print(f"| {base} vs {other} | {kind} | {int(diff.sum())} | {int((diff & near).sum())} | "
                  f"{int((diff & ~near).sum())} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
