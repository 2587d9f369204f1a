"""Doubled MNIST: mean budget on the strokes (x > 0.5) of the attended vs the ignored digit.

    python results/diagnostics/doubled_stroke_budgets.py RUN_DIR [RUN_DIR ...]    # first 1,000 test images
"""
import sys

import torch

import ctxbudget
from ctxbudget.contextuality import STROKE_THRESHOLD, region_masks
from ctxbudget.evaluate.evaluate import load_split

for run_dir in sys.argv[1:]:
    run = ctxbudget.load_run(run_dir)
    ds = load_split(run, "test")
    x, regions = ds.images[:1000], ds.regions[:1000]
    with torch.no_grad():
        eps = torch.cat([run.budgets(x[i:i + 250]) for i in range(0, len(x), 250)])
    attended, ignored = region_masks(run.dataset, x, regions)["attended_vs_ignored"]
    stroke = x > STROKE_THRESHOLD
    a, b = float(eps[attended & stroke].mean()), float(eps[ignored & stroke].mean())
    print(f"{run_dir}: strokes of the attended digit {a:.4f}, of the ignored digit {b:.4f} (ignored / attended ×{b / a:.2f})")
