"""``visualize_run``: the figures and ``budget_stats.json`` of a run (what ``ctxbudget visualize`` writes).

Figures (``ctxbudget.viz``): budget maps of chosen test images, training curves from
``metrics.jsonl`` (with the per-epoch contextuality panel), a histogram of budgets. Statistics over
the first ``stats_limit`` examples: range and means of the budgets, the contextuality statistics
(``ctxbudget.contextuality``) and, for learned budgets, the blindness diagnostic
(``ctxbudget.evaluate.blindness``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from .. import viz
from ..contextuality import contextuality_of
from ..data import ImageDataset
from ..run import Run, atomic_write_bytes, output_dir_for
from .blindness import blindness_stats
from .evaluate import load_split


def visualize_run(run: Run, out_dir: str | Path, *, indices: Sequence[int] | None = None, num: int = 8,
                  per_channel: bool = False, split: str = "test", data_dir: str | None = None,
                  stats_limit: int = 1000, dataset: ImageDataset | None = None) -> dict:
    """Write the figures and ``budget_stats.json`` of ``run`` into ``out_dir``; return paths + stats.

    For a registered model ``out_dir`` must lie outside the registry (``ctxbudget.run.output_dir_for``)."""
    out = output_dir_for(run, out_dir)
    ds = dataset if dataset is not None else load_split(run, split, data_dir)
    n = int(ds.images.shape[0])
    idx = list(indices) if indices is not None else list(range(min(num, n)))
    lower, upper = run.limits()
    paths: list[Path] = []
    with torch.no_grad():
        x = ds.images[idx]
        eps = run.budgets(x)
        pred = run.predict(x)
    classes = list(getattr(ds.info, "classes", []) or []) or None
    source = getattr(ds.info, "label", None) or run.dataset         # names the data source in every title
    fig = viz.budget_grid(x, eps, upper, labels=ds.labels[idx].tolist(), preds=pred.tolist(), class_names=classes,
                          per_channel=per_channel,
                          title=f"{source}: {run.kind} budgets, ε0 = {run.eps0:.4g}, u = {upper:.4g} (label / prediction)")
    paths += viz.save_figure(fig, out / "budget_maps")
    metrics = run.metrics()
    if metrics:
        paths += viz.save_figure(viz.training_curves(metrics, title=source), out / "training_curves")
    m = min(max(stats_limit, 1), n)
    with torch.no_grad():
        all_eps = torch.cat([run.budgets(ds.images[i:min(i + 256, m)]) for i in range(0, m, 256)])
    paths += viz.save_figure(viz.budget_histogram(all_eps, run.eps0, lower, upper, title=source),
                             out / "budget_hist")
    flat = all_eps.flatten().double()
    stats: dict = {"dataset": run.dataset, "data_source": source, "split": split, "kind": run.kind, "n": m,
                   "eps0": run.eps0, "lower": lower, "upper": upper, "mean": float(flat.mean()), "min": float(flat.min()),
                   "max": float(flat.max()), "geo_mean": float(flat.clamp_min(1e-300).log().mean().exp())}
    regions = getattr(ds, "regions", None)
    if m >= 2:
        stats["contextuality"] = contextuality_of(all_eps, ds.images[:m], dataset_name=run.dataset,
                                                  regions=None if regions is None else regions[:m])
        if run.kind == "learned":
            stats["blindness"] = blindness_stats(run.classifier, all_eps, ds.images[:m], ds.labels[:m])
    atomic_write_bytes(out / "budget_stats.json", (json.dumps(stats, indent=2) + "\n").encode())
    return {"paths": [str(p) for p in paths] + [str(out / "budget_stats.json")], "stats": stats}

