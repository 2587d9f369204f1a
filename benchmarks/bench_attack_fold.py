"""The evaluation's PGD attack with and without the first layer's product-and-fold input gradient.

    PYTHONPATH=src python benchmarks/bench_attack_fold.py MODEL [MODEL ...] [--limit 2000] [--batch-size 128] \
        [--columns learned uniform] [--threads 1] [--data-dir DIR]

MODEL is a run directory or a registered model. For each batch of the first ``--limit`` test images
and each budget column, the attack of ``ctxbudget evaluate`` (``evaluate.steps.attack_batch``, float32
steps, seed 0) runs twice on the same boxes, in alternating order: with the few-channel convolutions'
input gradient through ``bounds.conv.fold_transpose`` (the default) and through PyTorch's
``conv_transpose2d`` (``bounds.conv.FOLD_MAX_IN_CHANNELS = 0``). Both gradients are the same sums in
another order, so the searches may part where a gradient entry is within rounding of 0. Prints a
Markdown table: seconds of each, their ratio, examples broken by each and by one only.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ctxbudget.bounds import conv
from ctxbudget.budgets import UniformBudget
from ctxbudget.evaluate.evaluate import load_split
from ctxbudget.evaluate.steps import AttackSettings, attack_batch, batches
from ctxbudget.run import load_run
from ctxbudget.runtime import tune_allocator

#: (name, FOLD_MAX_IN_CHANNELS) of the two attacks
PATHS = (("fold", conv.FOLD_MAX_IN_CHANNELS), ("conv_transpose2d", 0))


def compare(model: str, limit: int, batch_size: int, columns: list[str], data_dir: str | None) -> list[dict]:
    run = load_run(model)            # a run directory or a registered model, eval mode
    ds = load_split(run, "test", data_dir)
    images, labels = ds.images[:limit], ds.labels[:limit]
    clf, threat = run.classifier.eval(), run.threat.eval()
    rows = []
    for column in columns:
        budget = threat if column == "learned" else UniformBudget(run.eps0)
        secs = {p[0]: 0.0 for p in PATHS}
        margin = {p[0]: np.zeros(len(images), np.float32) for p in PATHS}
        for i, s in enumerate(batches(len(images), batch_size)):
            x, y = images[s], labels[s]
            with torch.no_grad():
                eps = budget(x)
            for name, channels in PATHS[i % 2:] + PATHS[:i % 2]:
                conv.FOLD_MAX_IN_CHANNELS = channels
                t = time.perf_counter()
                margin[name][s] = attack_batch(clf, x, y, eps, AttackSettings(), column, range(s.start, s.stop))
                secs[name] += time.perf_counter() - t
            conv.FOLD_MAX_IN_CHANNELS = PATHS[0][1]
        bf, bt = (margin[p[0]] < 0 for p in PATHS)
        rows.append({"model": model, "column": column, "n": len(images), "s_fold": secs["fold"],
                     "s_ct": secs["conv_transpose2d"], "broken_fold": int(bf.sum()), "broken_ct": int(bt.sum()),
                     "only_fold": int((bf & ~bt).sum()), "only_ct": int((bt & ~bf).sum())})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--columns", nargs="+", default=["learned", "uniform"], choices=["learned", "uniform"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    tune_allocator()  # as the ctxbudget command does
    torch.set_num_threads(args.threads)
    rows = [r for m in args.models for r in compare(m, args.limit, args.batch_size, args.columns, args.data_dir)]
    print("\n| model | column | images | fold s | conv_transpose2d s | conv_transpose2d / fold | broken: fold / "
          "conv_transpose2d | fold only / conv_transpose2d only |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['model']}` | {r['column']} | {r['n']:,} | {r['s_fold']:.1f} | {r['s_ct']:.1f} | "
              f"{r['s_ct'] / r['s_fold']:.2f} | {r['broken_fold']:,} / {r['broken_ct']:,} | "
              f"{r['only_fold']} / {r['only_ct']} |")


if __name__ == "__main__":
    main()
