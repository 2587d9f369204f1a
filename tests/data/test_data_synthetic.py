"""Watermarked MNIST and doubled CIFAR-10 constructions on small synthetic bases."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ctxbudget.data import get_dataset
from ctxbudget.data.synthetic import doubled, make_marks, watermark


def _pool():
    """Pool images: digit 0 = constant 1.0, digit 1 = constant 0.5 (so the mark value reveals b)."""
    images = torch.cat([torch.ones(3, 1, 28, 28), torch.full((3, 1, 28, 28), 0.5)])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    return images, labels


def test_make_marks_is_area_scale_then_crop():
    x = torch.rand(5, 1, 28, 28)
    m = make_marks(x)
    assert m.shape == (5, 1, 8, 8)
    torch.testing.assert_close(m, F.adaptive_avg_pool2d(x, 12)[:, :, 2:10, 2:10])


def test_watermark_label_rule_region_and_opacity():
    n = 400
    base = torch.full((n, 1, 28, 28), 0.1)
    labels = torch.arange(n) % 10
    pool_x, pool_y = _pool()
    x, y, r = watermark(base, labels, seed=3, pool_images=pool_x, pool_labels=pool_y)
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and r.dtype == torch.bool and r.shape == (n, 1, 28, 28)
    assert (r.sum((1, 2, 3)) == 64).all()
    # outside the region the image is untouched; inside it is max(x, 0.3·mark)
    assert torch.equal(x[~r], base[~r])
    inside = x[r].view(n, 64)
    is_one = torch.isclose(inside, torch.tensor(0.15)).all(1)  # mark of digit 1 (0.5·0.3)
    is_zero = torch.isclose(inside, torch.tensor(0.3)).all(1)  # mark of digit 0 (1.0·0.3)
    assert (is_one ^ is_zero).all()
    assert torch.equal(y, labels + 10 * is_one.long())
    assert is_one.any() and is_zero.any()
    # region: an 8×8 box in the left (cols 0..7) or right (cols 20..27) margin, rows s..s+7
    cols = r[:, 0].any(1)  # N×28
    rows = r[:, 0].any(2)
    left = cols[:, :8].all(1) & ~cols[:, 8:].any(1)
    right = cols[:, 20:].all(1) & ~cols[:, :20].any(1)
    assert (left ^ right).all() and left.any() and right.any()
    tops = rows.float().argmax(1)
    assert (rows.sum(1) == 8).all() and tops.min() == 0 and tops.max() == 20
    assert set(tops.tolist()) == set(range(21))


def test_watermark_composite_keeps_bright_digit_pixels():
    base = torch.zeros(50, 1, 28, 28)
    base[:, :, :, :] = 0.9
    pool_x, pool_y = _pool()
    x, _, _ = watermark(base, torch.zeros(50, dtype=torch.long), pool_images=pool_x, pool_labels=pool_y)
    assert torch.equal(x, base)  # max(0.9, ≤0.3) = 0.9


def test_watermark_deterministic_by_seed_and_default_pool():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(64, 1, 28, 28, generator=g)
    labels = torch.arange(64) % 10
    a = watermark(base, labels, seed=1)
    b = watermark(base, labels, seed=1)
    c = watermark(base, labels, seed=2)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert a[0].min() >= 0 and a[0].max() <= 1
    with pytest.raises(ValueError, match="digit 1"):
        watermark(base, torch.zeros(64, dtype=torch.long))


def test_doubled_construction():
    n = 50
    base = torch.arange(n, dtype=torch.float32).div(n).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    base[:, :, 0, 0] = 1.0  # mark top-left pixel so halves are recognisable
    labels = torch.arange(n) % 10
    x, y, r = doubled(base, labels, seed=0, chunk=7)
    assert x.shape == (n, 3, 36, 64) and r.shape == (n, 1, 36, 64) and y.shape == (n,)
    border = x[:, :, :4, :]
    red = (border == torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)).all(3).all(2).all(1)
    green = (border == torch.tensor([0, 1.0, 0]).view(1, 3, 1, 1)).all(3).all(2).all(1)
    assert (red ^ green).all() and red.any() and green.any()
    assert torch.equal(x[:, :, 4:, :32], base)  # left = the base image itself
    partner = (x[:, 0, 5, 40] * n).round().long()  # right image's constant value identifies it
    assert (partner != torch.arange(n)).all()
    assert torch.equal(x[:, :, 4:, 32:], base[partner])
    assert torch.equal(y, torch.where(green, labels[partner], labels))
    # regions: full border + attended half
    assert r[:, 0, :4, :].all()
    assert torch.equal(r[:, 0, 4:, :32].all(2).all(1), red) and torch.equal(r[:, 0, 4:, 32:].all(2).all(1), green)
    assert (r.sum((1, 2, 3)) == 4 * 64 + 32 * 32).all()
    x2, y2, r2 = doubled(base, labels, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(r, r2)
    assert not torch.equal(doubled(base, labels, seed=1)[0], x)


def test_registry_synthetic_sets(tmp_path, write_cifar):
    write_cifar(tmp_path, n_per_batch=8)
    d = get_dataset("doubled-cifar10", "train", root=tmp_path, seed=4)
    assert d.images.shape == (40, 3, 36, 64) and d.regions.shape == (40, 1, 36, 64)
    assert d.info.input_shape == (3, 36, 64) and d.info.num_classes == 10
    assert torch.equal(d.images, get_dataset("doubled-cifar10", "train", root=tmp_path, seed=4).images)
    w = get_dataset("watermarked-mnist-sample", "test", seed=0)
    assert w.images.shape == (1000, 1, 28, 28) and w.info.num_classes == 20 and len(w.info.classes) == 20
    assert w.labels.min() >= 0 and w.labels.max() <= 19 and (w.regions.sum((1, 2, 3)) == 64).all()
    base = get_dataset("mnist-sample", "test")
    assert torch.equal(w.labels % 10, base.labels)
    assert torch.equal(w.images[~w.regions], base.images[~w.regions])
    w_train = get_dataset("watermarked-mnist-sample", "train", seed=0)
    assert torch.bincount(w_train.labels, minlength=20).min() > 150  # both mark digits for every class
