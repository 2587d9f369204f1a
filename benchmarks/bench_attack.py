"""The evaluation's PGD attack in float32 vs bf16 steps (``--attack-precision``): time and verdicts.

    PYTHONPATH=src python benchmarks/bench_attack.py MODEL [MODEL ...] [--limit 2000] [--batch-size 128] \
        [--columns learned uniform] [--threads 1] [--data-dir DIR]

MODEL is a run directory or a registered model. For each batch of the first ``--limit`` test images
and each budget column, the attack of ``ctxbudget evaluate`` (``evaluate.steps.attack_batch``: one
untargeted and three targeted runs of 50 steps, per-example seeds, an example leaves once broken)
runs with float32 steps, with bf16 steps (same seeds) and, as the yardstick of chance, with float32
steps and another seed, in rotating order, on the same boxes. Prints a Markdown table: seconds of
the two seed-0 attacks and their ratio, examples broken by each, and the examples broken by one
only: bf16 vs float32 (same seeds: the searches take different paths, so a few may differ either
way) beside float32 seed 1 vs seed 0 (how many differ by chance alone). Each reported margin is the
float32 margin at its point.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ctxbudget.budgets import UniformBudget
from ctxbudget.evaluate.evaluate import load_split
from ctxbudget.evaluate.steps import AttackSettings, attack_batch, batches
from ctxbudget.run import load_run
from ctxbudget.runtime import fast_bf16

#: (name, precision, seed) of the three attacks
ATTACKS = (("float32", "float32", 0), ("bfloat16", "bfloat16", 0), ("float32-seed1", "float32", 1))


def compare(model: str, limit: int, batch_size: int, columns: list[str], data_dir: str | None) -> list[dict]:
    run = load_run(model)            # a run directory or a registered model, eval mode
    ds = load_split(run, "test", data_dir)
    images, labels = ds.images[:limit], ds.labels[:limit]
    clf, threat = run.classifier.eval(), run.threat.eval()
    rows = []
    for column in columns:
        budget = threat if column == "learned" else UniformBudget(run.eps0)
        secs = {a[0]: 0.0 for a in ATTACKS}
        margin = {a[0]: np.zeros(len(images), np.float32) for a in ATTACKS}
        for i, s in enumerate(batches(len(images), batch_size)):
            x, y = images[s], labels[s]
            with torch.no_grad():
                eps = budget(x)
            for name, precision, seed in ATTACKS[i % 3:] + ATTACKS[:i % 3]:
                t = time.perf_counter()
                margin[name][s] = attack_batch(clf, x, y, eps, AttackSettings(precision=precision, seed=seed), column,
                                               range(s.start, s.stop))
                secs[name] += time.perf_counter() - t
        b32, b16, b1 = (margin[a[0]] < 0 for a in ATTACKS)
        rows.append({"model": model, "column": column, "n": len(images), "s32": secs["float32"],
                     "s16": secs["bfloat16"], "broken32": int(b32.sum()), "broken16": int(b16.sum()),
                     "only32": int((b32 & ~b16).sum()), "only16": int((b16 & ~b32).sum()),
                     "broken1": int(b1.sum()), "only0": int((b32 & ~b1).sum()), "only1": int((b1 & ~b32).sum())})
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
    torch.set_num_threads(args.threads)
    if not fast_bf16("cpu"):
        print("note: this CPU has no native bf16 (AVX-512 BF16 / AMX): bf16 steps are emulated and slower")
    rows = [r for m in args.models for r in compare(m, args.limit, args.batch_size, args.columns, args.data_dir)]
    print("\n| model | column | images | float32 s | bf16 s | float32 / bf16 | broken: float32 / bf16 "
          "| float32 only / bf16 only | chance: broken seed 1, seed 0 only / seed 1 only |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['model']}` | {r['column']} | {r['n']:,} | {r['s32']:.1f} | {r['s16']:.1f} | "
              f"{r['s32'] / max(r['s16'], 1e-9):.2f} | {r['broken32']} / {r['broken16']} | {r['only32']} / {r['only16']} "
              f"| {r['broken1']}, {r['only0']} / {r['only1']} |")


if __name__ == "__main__":
    main()
