"""Figure functions write non-empty images; budget statistics inside/outside label regions."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ctxbudget import viz
from ctxbudget.budgets import LearnedBudget
from ctxbudget.evaluate.visualize import visualize_run
from ctxbudget.models import BudgetGenerator


def _ok(paths):
    assert paths and all(p.stat().st_size > 1000 for p in paths)


def test_budget_grid_grey_and_rgb(tmp_path):
    x = torch.rand(4, 1, 8, 8)
    _ok(viz.save_figure(viz.budget_grid(x, torch.rand_like(x) * 0.2, 0.2, labels=[0, 1, 2, 3], preds=[0, 1, 0, 3]),
                        tmp_path / "grey"))
    x = torch.rand(3, 3, 8, 12)
    fig = viz.budget_grid(x, torch.rand_like(x), 1.0, labels=[1, 2, 3], class_names=list("abcd"), per_channel=True)
    assert len(fig.axes) == 5 * 3 + 1                                  # image + mean + 3 channels, colourbar
    _ok(viz.save_figure(fig, tmp_path / "rgb", formats=("png",)))


def test_training_curves_and_histogram(tmp_path):
    metrics = [{"epoch": e, "split": s, "clean_err": 0.5 / e, "verified_err": 0.9 / e, "eps0": min(e, 5) * 0.08}
               for e in range(1, 8) for s in ("train", "test")]
    _ok(viz.save_figure(viz.training_curves(metrics), tmp_path / "curves"))
    eps = np.exp(np.random.default_rng(0).uniform(np.log(0.2), np.log(0.8), size=(10, 1, 8, 8)))
    _ok(viz.save_figure(viz.budget_histogram(eps, 0.4, 0.2, 0.8), tmp_path / "hist"))


def test_visualize_run_with_regions(tmp_path):
    torch.manual_seed(0)
    shape = (1, 8, 8)
    threat = LearnedBudget(BudgetGenerator(shape), 0.1, 0.5, 2.0).eval()
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    regions = torch.zeros(6, 1, 8, 8, dtype=torch.bool)
    regions[:, :, :, :2] = True
    ds = SimpleNamespace(images=torch.rand(6, *shape), labels=torch.arange(6) % 3, regions=regions,
                         info=SimpleNamespace(classes=["a", "b", "c"]))
    metrics = [{"epoch": e, "split": "test", "clean_err": 0.1, "verified_err": 0.2, "eps0": 0.1} for e in (1, 2)]
    run = SimpleNamespace(dataset="toy", kind="learned", eps0=0.1, classifier=classifier, budgets=threat,
                          predict=lambda x: classifier(x).argmax(1),
                          limits=threat.limits, metrics=lambda: metrics)
    res = visualize_run(run, tmp_path / "fig", indices=[0, 2, 4], dataset=ds)
    names = sorted(p.split("/")[-1] for p in res["paths"])
    assert names == ["budget_hist.pdf", "budget_hist.png", "budget_maps.pdf", "budget_maps.png",
                     "budget_stats.json", "training_curves.pdf", "training_curves.png"]
    stats = json.loads((tmp_path / "fig" / "budget_stats.json").read_text())
    region = stats["contextuality"]["label_region_vs_elsewhere"]         # "toy": inside vs outside its regions
    assert region["count"] == 6 * 16 and region["count_other"] == 6 * 48 and stats["lower"] == pytest.approx(0.05)
    assert "regions" not in stats                                        # one home: the contextuality statistics
    assert stats["min"] >= 0.05 - 1e-6 and stats["max"] <= 0.2 + 1e-6


def test_visualize_stats_limit_not_a_multiple_of_the_batch(tmp_path):
    """Regression: budgets for the statistics were computed in batches of 256 that ran past
    ``stats_limit`` (1024 budgets for 1000 regions → broadcast error on Watermarked MNIST)."""
    torch.manual_seed(0)
    shape = (1, 8, 8)
    threat = LearnedBudget(BudgetGenerator(shape), 0.1, 0.5, 2.0).eval()
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    n = 300
    regions = torch.zeros(n, 1, 8, 8, dtype=torch.bool)
    regions[:, :, :2, :2] = True
    ds = SimpleNamespace(images=torch.rand(n, *shape), labels=torch.arange(n) % 3, regions=regions,
                         info=SimpleNamespace(classes=["a", "b", "c"]))
    run = SimpleNamespace(dataset="watermarked-toy", kind="learned", eps0=0.1, classifier=classifier, budgets=threat,
                          predict=lambda x: classifier(x).argmax(1),
                          limits=threat.limits, metrics=lambda: [])
    res = visualize_run(run, tmp_path / "fig", num=2, dataset=ds, stats_limit=280)
    stats = res["stats"]
    assert stats["n"] == 280
    ctx = stats["contextuality"]
    assert ctx["n"] == 280 and 0.0 <= ctx["input_dependent_share"] <= 1.0
    assert ctx["watermark_vs_elsewhere"]["count_other"] == 280 * 60
