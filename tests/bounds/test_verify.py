"""The verification rule (ctxbudget.bounds.verify): τ scaled to the magnitudes, float64 re-check."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ctxbudget.bounds import compute_bounds, margin_spec
from ctxbudget.bounds.verify import RTOL_FACTOR, certify, margin_magnitude

from .conftest import random_box, small_conv_net


def _linear(seed: int, offset: float):
    """Flatten → Linear(784, 2), label 0, exact worst-case margin of example 0 = offset (float64)."""
    g = torch.Generator().manual_seed(seed)
    w = 3 * torch.randn(2, 784, generator=g)
    x = torch.rand(3, 1, 28, 28, generator=g)
    lo, hi = (x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1)
    d = (w[0] - w[1]).double()
    corner = torch.where(d > 0, lo.flatten(1).double(), hi.flatten(1).double())
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with torch.no_grad():
        net[1].weight.copy_(w)
        net[1].bias.zero_()
        net[1].bias[0] = float(offset - corner[0] @ d)
    return net.eval(), x, lo, hi, torch.zeros(3, dtype=torch.long)


def test_magnitude_is_the_sum_of_absolute_terms():
    net, x, lo, hi, y = _linear(0, 0.0)
    m = margin_magnitude(net, lo, hi, y)
    w, b = net[1].weight.double(), net[1].bias.double()
    top = torch.max(lo.abs(), hi.abs()).flatten(1).double()
    expect = (top @ w.abs().t() + b.abs()).sum(1, keepdim=True)        # M_0 + M_1
    assert torch.allclose(m, expect, rtol=1e-6)


def test_band_between_tau_and_two_tau_needs_the_float64_recheck():
    net, x, lo, hi, y = _linear(1, 0.0)
    tau = float(margin_magnitude(net, lo, hi, y)[0, 0]) * RTOL_FACTOR * torch.finfo(torch.float32).eps
    net, x, lo, hi, y = _linear(1, 1.5 * tau)                           # exact margin 1.5τ: certifiable
    v = certify(net, lo, hi, y, "ibp", x=x)
    assert bool(v.verified[0]) and bool(v.rechecked[0])
    assert float(v.lower[0, 0]) == pytest.approx(1.5 * tau, rel=1e-3)   # float64 bound ≈ the exact margin
    assert not bool(certify(net, lo, hi, y, "ibp", x=x, recheck=False).verified[0])   # conservative 2τ
    net, x, lo, hi, y = _linear(1, 0.5 * tau)                           # exact margin 0.5τ: within rounding
    assert not bool(certify(net, lo, hi, y, "ibp", x=x).verified[0])


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_certify_agrees_with_plain_rule_away_from_zero(method):
    net = small_conv_net(0, dtype=torch.float32)
    x, lo, hi = random_box(16, (1, 8, 8), seed=3, dtype=torch.float32, scale=0.02)
    y = net(x).argmax(1)
    low = compute_bounds(net, lo, hi, method, C=margin_spec(y, 5), bound_upper=False)[0]
    v = certify(net, lo, hi, y, method, x=x)
    clear = (low.min(1).values.abs() > 1e-3)
    assert torch.equal(v.verified[clear], (low.min(1).values > 0)[clear])
    assert (v.tol > 0).all() and (v.tol < 1e-3).all()


@pytest.mark.parametrize("bn", [False, True])
def test_certify_reusing_the_loss_bounder_gives_the_same_verdict(bn):
    """certify(..., bounder=bd) takes τ from bd's cached IBP pass: bitwise the verdict, τ and bounds
    of a fresh computation (training mode BatchNorm included: the statistics of the same x)."""
    from ctxbudget.bounds import Bounder
    from ctxbudget.bounds.loss import robust_cross_entropy_from

    net = small_conv_net(1, dtype=torch.float32, bn=bn)
    net.train(bn)
    x, lo, hi = random_box(16, (1, 8, 8), seed=5, dtype=torch.float32, scale=0.02)
    y = net(x).argmax(1)
    bd = Bounder(net, lo.requires_grad_(), hi, x)
    _, margins = robust_cross_entropy_from(bd, y, "crown-ibp", return_margins=True)
    for recheck in (False, True):
        fresh = certify(net, lo, hi, y, "crown-ibp", lower=margins, x=x, recheck=recheck)
        shared = certify(net, lo, hi, y, "crown-ibp", lower=margins, x=x, recheck=recheck, bounder=bd)
        assert torch.equal(fresh.tol, shared.tol)
        assert torch.equal(fresh.verified, shared.verified)
        assert torch.equal(fresh.lower, shared.lower)
    assert torch.equal(margin_magnitude(net, lo, hi, y, x=x), margin_magnitude(net, lo, hi, y, x=x, bounder=bd))
