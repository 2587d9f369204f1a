"""The evaluation's PGD attack two ways on the same boxes: time and verdicts.

    PYTHONPATH=src python benchmarks/bench_attack.py MODEL [MODEL ...] [--compare precision|fold] [--limit 2000] \
        [--batch-size 128] [--columns learned uniform] [--threads 1] [--data-dir DIR]

MODEL is a run directory or a registered model. For each batch of the first ``--limit`` test images
and each budget column, the attack of ``ctxbudget evaluate`` (``evaluate.steps.attack_batch``: one
untargeted and three targeted runs of 50 steps, per-example seeds, an example leaves once broken)
runs in several variants, in rotating order, on the same boxes:

* ``--compare precision`` (default; ``--attack-precision``): float32 steps, bf16 steps (same seeds)
  and, as the yardstick of chance, float32 steps with another seed. The searches take different
  paths, so a few verdicts may differ either way; the third variant shows how many differ by chance
  alone. Each reported margin is the float32 margin at its point.
* ``--compare fold``: float32 steps with the few-channel convolutions' input gradient through
  PyTorch's ``conv_transpose2d`` (``bounds.conv.FOLD_MAX_IN_CHANNELS = 0``) and through
  ``bounds.conv.fold_transpose`` (the default): the same sums in another order, so the searches may
  part only where a gradient entry is within rounding of 0.

Prints a Markdown table: seconds of the first two variants and their ratio, the examples broken by
each and by one only (and, for ``precision``, the chance column).
"""
from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from ctxbudget.bounds import conv
from ctxbudget.budgets import UniformBudget
from ctxbudget.evaluate.evaluate import load_split
from ctxbudget.evaluate.steps import AttackSettings, attack_batch, batches
from ctxbudget.run import load_run
from ctxbudget.runtime import fast_bf16, tune_allocator


@contextmanager
def fold_channels(n: int) -> Iterator[None]:
    """``bounds.conv.FOLD_MAX_IN_CHANNELS`` set to ``n`` for the duration (0: PyTorch's kernels only)."""
    old = conv.FOLD_MAX_IN_CHANNELS
    conv.FOLD_MAX_IN_CHANNELS = n
    try:
        yield
    finally:
        conv.FOLD_MAX_IN_CHANNELS = old


#: per comparison: (name, attack settings, FOLD_MAX_IN_CHANNELS) of each variant; the first two are compared
VARIANTS = {
    "precision": (("float32", AttackSettings(precision="float32", seed=0), conv.FOLD_MAX_IN_CHANNELS),
                  ("bfloat16", AttackSettings(precision="bfloat16", seed=0), conv.FOLD_MAX_IN_CHANNELS),
                  ("float32-seed1", AttackSettings(precision="float32", seed=1), conv.FOLD_MAX_IN_CHANNELS)),
    "fold": (("conv_transpose2d", AttackSettings(), 0),
             ("fold", AttackSettings(), conv.FOLD_MAX_IN_CHANNELS)),
}


def compare(model: str, limit: int, batch_size: int, columns: list[str], data_dir: str | None,
            variants: tuple) -> list[dict]:
    run = load_run(model)            # a run directory or a registered model, eval mode
    ds = load_split(run, "test", data_dir)
    images, labels = ds.images[:limit], ds.labels[:limit]
    clf, threat = run.classifier.eval(), run.threat.eval()
    n = len(variants)
    rows = []
    for column in columns:
        budget = threat if column == "learned" else UniformBudget(run.eps0)
        secs = {v[0]: 0.0 for v in variants}
        margin = {v[0]: np.zeros(len(images), np.float32) for v in variants}
        for i, s in enumerate(batches(len(images), batch_size)):
            x, y = images[s], labels[s]
            with torch.no_grad():
                eps = budget(x)
            for name, settings, channels in variants[i % n:] + variants[:i % n]:
                with fold_channels(channels):
                    t = time.perf_counter()
                    margin[name][s] = attack_batch(clf, x, y, eps, settings, column, range(s.start, s.stop))
                    secs[name] += time.perf_counter() - t
        broken = [margin[v[0]] < 0 for v in variants]
        a, b = broken[0], broken[1]
        row = {"model": model, "column": column, "n": len(images), "s_a": secs[variants[0][0]],
               "s_b": secs[variants[1][0]], "broken_a": int(a.sum()), "broken_b": int(b.sum()),
               "only_a": int((a & ~b).sum()), "only_b": int((b & ~a).sum())}
        if n > 2:  # the chance column: the third variant against the first
            c = broken[2]
            row.update(broken_c=int(c.sum()), only_a_vs_c=int((a & ~c).sum()), only_c=int((c & ~a).sum()))
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--compare", choices=sorted(VARIANTS), default="precision")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--columns", nargs="+", default=["learned", "uniform"], choices=["learned", "uniform"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    tune_allocator()  # as the ctxbudget command does
    torch.set_num_threads(args.threads)
    variants = VARIANTS[args.compare]
    if args.compare == "precision" and not fast_bf16("cpu"):
        print("note: this CPU has no native bf16 (AVX-512 BF16 / AMX): bf16 steps are emulated and slower")
    rows = [r for m in args.models
            for r in compare(m, args.limit, args.batch_size, args.columns, args.data_dir, variants)]
    a, b = variants[0][0], variants[1][0]
    chance = " | chance: broken seed 1, seed 0 only / seed 1 only" if len(variants) > 2 else ""
    print(f"\n| model | column | images | {a} s | {b} s | {a} / {b} | broken: {a} / {b} | {a} only / {b} only{chance} |")
    print("|---" * (9 if chance else 8) + "|")
    for r in rows:
        line = (f"| `{r['model']}` | {r['column']} | {r['n']:,} | {r['s_a']:.1f} | {r['s_b']:.1f} | "
                f"{r['s_a'] / max(r['s_b'], 1e-9):.2f} | {r['broken_a']:,} / {r['broken_b']:,} | "
                f"{r['only_a']} / {r['only_b']}")
        if chance:
            line += f" | {r['broken_c']:,}, {r['only_a_vs_c']} / {r['only_c']}"
        print(line + " |")


if __name__ == "__main__":
    main()
