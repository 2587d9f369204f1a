"""Robust cross-entropy bounds (margin form and loss fusion) and margin specifications."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ctxbudget.bounds import compute_bounds, margin_spec, robust_cross_entropy, verified_margin_lower

from .conftest import pgd, random_box, sample_box, small_conv_net


def test_margin_spec_rows() -> None:
    y = torch.tensor([0, 2, 4])
    C = margin_spec(y, 5)
    assert C.shape == (3, 4, 5) and C.dtype == torch.float32
    for b, yb in enumerate(y.tolist()):
        others = [j for j in range(5) if j != yb]
        for s, j in enumerate(others):
            row = torch.zeros(5)
            row[yb] += 1
            row[j] -= 1
            assert torch.equal(C[b, s], row)
    with pytest.raises(ValueError):
        margin_spec(torch.tensor([5]), 5)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
@pytest.mark.parametrize("fusion", [True, False])
@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0])
def test_robust_ce_is_an_upper_bound(method: str, fusion: bool, beta: float) -> None:
    net = small_conv_net(11)
    x, xl, xu = random_box(4, (1, 8, 8), seed=7, scale=0.1, zero_frac=0.2)
    y = torch.tensor([0, 1, 2, 3])
    bound = robust_cross_entropy(net, xl, xu, y, method=method, fusion=fusion, beta=beta)
    assert bound.shape == (4,) and bound.dtype == torch.float64
    pts = sample_box(xl, xu, 12, seed=3)
    with torch.no_grad():
        ce = F.cross_entropy(net(pts.flatten(0, 1)), y.repeat(12), reduction="none").view(12, 4)
    assert bool((ce <= bound + 1e-9).all())
    worst = pgd(lambda z: F.cross_entropy(net(z), y, reduction="none").unsqueeze(1), xl, xu)
    assert bool((worst[:, 0] <= bound + 1e-9).all())


def test_robust_ce_sound_on_trained_net_float32() -> None:
    from .test_soundness import trained_ish

    net = trained_ish(2).float()
    x, xl, xu = random_box(6, (1, 8, 8), seed=8, dtype=torch.float32, scale=0.05)
    with torch.no_grad():
        y = net(x).argmax(1)
    for fusion in (True, False):
        bound = robust_cross_entropy(net, xl, xu, y, method="crown-ibp", fusion=fusion)
        worst = pgd(lambda z: F.cross_entropy(net(z), y, reduction="none").unsqueeze(1), xl, xu)
        assert bool((worst[:, 0] <= bound + 1e-4).all())


def test_ibp_fusion_equals_ibp_margins_and_beta_zero_is_ibp() -> None:
    net = small_conv_net(12)
    x, xl, xu = random_box(4, (1, 8, 8), seed=9, scale=0.1)
    y = torch.tensor([4, 3, 2, 1])
    a = robust_cross_entropy(net, xl, xu, y, method="ibp", fusion=True)
    b = robust_cross_entropy(net, xl, xu, y, method="ibp", fusion=False)
    c = robust_cross_entropy(net, xl, xu, y, method="crown-ibp", fusion=True, beta=0.0)
    d = robust_cross_entropy(net, xl, xu, y, method="crown-ibp", fusion=False, beta=1e-6)
    assert torch.allclose(a, b, atol=1e-12) and torch.allclose(a, c, atol=1e-12) and torch.allclose(a, d, atol=1e-12)
    # margin form from margin lower bounds: log(1 + Σ exp(−m_j))
    m = verified_margin_lower(net, xl, xu, y, "crown-ibp")
    lo, _ = compute_bounds(net, xl, xu, "crown-ibp", C=margin_spec(y, 5, dtype=torch.float64))
    assert torch.allclose(m, lo, atol=1e-12)
    e = robust_cross_entropy(net, xl, xu, y, method="crown-ibp", fusion=False)
    assert torch.allclose(e, torch.log1p(torch.exp(-m).sum(1)), atol=1e-10)
    # mixing of margins
    mi = verified_margin_lower(net, xl, xu, y, "ibp")
    mm = verified_margin_lower(net, xl, xu, y, "crown-ibp", beta=0.3)
    assert torch.allclose(mm, 0.3 * m + 0.7 * mi, atol=1e-12)


def test_zero_box_robust_ce_equals_clean_ce() -> None:
    net = small_conv_net(13)
    x, _, _ = random_box(3, (1, 8, 8), seed=10)
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        ce = F.cross_entropy(net(x), y, reduction="none")
    for method in ("ibp", "crown-ibp", "crown"):
        for fusion in (True, False):
            r = robust_cross_entropy(net, x, x, y, method=method, fusion=fusion)
            assert torch.allclose(r, ce, atol=1e-9), (method, fusion)


@pytest.mark.parametrize("method,fusion,beta,expect", [
    ("crown-ibp", True, 1.0, ("ibp", 1.0)),        # fusion: the IBP bounds of the z_j
    ("ibp", True, 1.0, ("ibp", 1.0)),
    ("crown", True, 1.0, ("crown", 1.0)),          # full CROWN bounds its own z_j
    ("crown-ibp", False, 1.0, ("crown-ibp", 1.0)),
    ("crown-ibp", False, 0.3, ("crown-ibp", 0.3)),  # the mixed margins
])
def test_return_margins_are_the_by_product_bounds(method, fusion, beta, expect) -> None:
    net = small_conv_net(12)
    x, xl, xu = random_box(5, (1, 8, 8), seed=8, scale=0.05)
    y = torch.tensor([0, 1, 2, 3, 4])
    ce, margins = robust_cross_entropy(net, xl, xu, y, method=method, fusion=fusion, beta=beta, return_margins=True)
    torch.testing.assert_close(ce, robust_cross_entropy(net, xl, xu, y, method=method, fusion=fusion, beta=beta))
    ref = verified_margin_lower(net, xl, xu, y, method=expect[0], beta=expect[1])
    assert margins.shape == (5, 4)
    torch.testing.assert_close(margins, ref, rtol=1e-9, atol=1e-9)
