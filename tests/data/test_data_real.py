"""Checks on the real MNIST (skipped when it is absent) and on the embedded mnist-sample."""
from __future__ import annotations

import numpy as np
import torch

from ctxbudget.data import get_dataset
from ctxbudget.data import sample as sample_mod

COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_real_mnist_train(real_root):
    ds = get_dataset("mnist", "train", root=real_root)
    assert ds.images.shape == (60000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert torch.bincount(ds.labels, minlength=10).tolist() == COUNTS
    assert ds.images.min() == 0.0 and ds.images.max() == 1.0
    test = get_dataset("mnist", "test", root=real_root)
    assert test.images.shape == (10000, 1, 28, 28)


def test_relative_root_from_repo(real_root, monkeypatch):
    """``get_dataset("mnist", "train", root="../shared/data")`` works from the repository root."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    rel = Path("..") / "shared" / "data"
    if not (rel / "mnist").is_dir():
        rel = real_root
    assert len(get_dataset("mnist", "test", root=str(rel))) == 10000


def test_real_watermarked_mnist(real_root):
    w = get_dataset("watermarked-mnist", "test", root=real_root, seed=0)
    base = get_dataset("mnist", "test", root=real_root)
    assert w.images.shape == (10000, 1, 28, 28) and int(w.labels.max()) == 19
    assert torch.equal(w.labels % 10, base.labels)
    assert w.images.max() <= 1.0 and (w.images >= base.images).all()
    assert (w.images[w.regions] <= torch.maximum(base.images[w.regions], torch.tensor(0.3))).all()


def test_sample_balance_and_shape():
    tr, te = get_dataset("mnist-sample", "train"), get_dataset("mnist-sample", "test")
    assert tr.images.shape == (5000, 1, 28, 28) and te.images.shape == (1000, 1, 28, 28)
    assert torch.bincount(tr.labels).tolist() == [500] * 10
    assert torch.bincount(te.labels).tolist() == [100] * 10
    assert sample_mod.SAMPLE_PATH.stat().st_size < 3_000_000
    idx = sample_mod.sample_indices("train")
    assert np.all(np.diff(idx) > 0) and idx.max() < 60000
    # real handwriting, not noise: typical MNIST ink statistics
    assert 0.08 < tr.images.mean() < 0.2 and (tr.images == 0).float().mean() > 0.7


def test_sample_matches_idx_and_rebuilds_identically(real_root):
    from ctxbudget.data.mnist import load_mnist_arrays

    for split in ("train", "test"):
        x, y = load_mnist_arrays(real_root, split)
        sx, sy = sample_mod.load_sample_arrays(split)
        idx = sample_mod.sample_indices(split)
        assert np.array_equal(sx, x[idx]) and np.array_equal(sy, y[idx])
    rebuilt = sample_mod.build_sample_arrays(real_root, seed=0)
    for split in ("train", "test"):
        assert np.array_equal(rebuilt[f"{split}_indices"], sample_mod.sample_indices(split))


def test_doubled_mnist_sample_follows_the_border():
    base = get_dataset("mnist-sample", "test")
    d = get_dataset("doubled-mnist-sample", "test", seed=0)
    assert d.images.shape == (1000, 3, 32, 56) and d.info.input_shape == (3, 32, 56)
    red = d.images[:, 0, 0, 0] == 1.0
    green = d.images[:, 1, 0, 0] == 1.0
    assert (red ^ green).all() and (d.images[:, 2, :4] == 0).all()
    # left half is the base image (grey copied to RGB); red → left label, green → the partner's
    assert torch.equal(d.images[:, :, 4:, :28], base.images.expand(-1, 3, -1, -1))
    assert torch.equal(d.labels[red], base.labels[red])
    right = d.images[green, 0, 4:, 28:]
    partner = [int(torch.nonzero((base.images[:, 0] == r).flatten(1).all(1))[0]) for r in right[:20]]
    assert torch.equal(d.labels[green][:20], base.labels[partner])
    # the region mask covers the border and the attended half only
    assert d.regions[red][:, 0, 4:, :28].all() and not d.regions[red][:, 0, 4:, 28:].any()
    assert d.regions[green][:, 0, 4:, 28:].all() and not d.regions[green][:, 0, 4:, :28].any()


def test_real_doubled_mnist(real_root):
    d = get_dataset("doubled-mnist", "train", root=real_root)
    assert d.images.shape == (60000, 3, 32, 56) and int(d.labels.max()) == 9
