"""The fused (torch.compile) ReLU rules: same values as the eager rules up to float rounding, sound
bounds, and a silent-but-logged eager fallback where compilation is unavailable or fails."""
from __future__ import annotations

import logging

import pytest
import torch

from ctxbudget.bounds import compute_bounds, margin_spec, robust_cross_entropy
from ctxbudget.bounds import relu as R

from .conftest import random_box, sample_box, small_conv_net
from .test_relu import edge_bounds, masked_relaxation


@pytest.fixture
def fused(monkeypatch):
    """The fused rules switched on for one test (process state restored afterwards), compiled afresh:
    the compiled rules and dynamo's caches of earlier tests (other shapes, in any test order) could
    otherwise reach dynamo's recompile limit, and the rules would fall back to eager."""
    import torch._dynamo

    monkeypatch.setattr(R, "_fused", True)
    monkeypatch.setattr(R, "_unavailable", {})
    monkeypatch.setattr(R, "_compiled", {})
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _needs_compiler() -> None:
    reason = R._why_unavailable("cpu")
    if reason is not None:
        pytest.skip(reason)


def _rules(l, u, A, fused_on: bool, monkeypatch):
    monkeypatch.setattr(R, "_fused", fused_on)
    ins = [t.clone().requires_grad_() for t in (l, u, A)]
    c, r = R.relu_interval(ins[0], ins[1])
    dl, du, bu = R.relu_relaxation(ins[0], ins[1])
    new_A, bias = R.relu_backward(ins[2], dl, du, bu)
    g = torch.Generator().manual_seed(7)
    w = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (c, r, du, bu, new_A, bias)]
    total = sum((t * wt).sum() for t, wt in zip((c, r, du, bu, new_A, bias), w))
    grads = torch.autograd.grad(total, ins)
    return [t.detach() for t in (c, r, dl, du, bu, new_A, bias)], list(grads)


# each compiled case costs seconds of inductor compilation (tens on a loaded 2-core machine): one
# runs by default, the others are marked slow (CI runs them)
@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.float64, marks=pytest.mark.slow)])
def test_fused_rules_equal_the_eager_rules(dtype, fused, monkeypatch):
    _needs_compiler()
    l, u = edge_bounds(dtype)
    l, u = l[:510].view(2, 255), u[:510].view(2, 255)
    A = torch.randn(2, 3, 255, generator=torch.Generator().manual_seed(3), dtype=dtype)
    A[0, 0, :20] = 0.0
    eager, eager_g = _rules(l, u, A, False, monkeypatch)
    comp, comp_g = _rules(l, u, A, True, monkeypatch)
    assert not R.fused_relu_unavailable()
    # element-wise outputs: bitwise; the bias (a sum over neurons) and gradients: to float rounding
    for a, b in zip(eager[:6], comp[:6]):
        assert torch.equal(a, b)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(comp[6], eager[6], **tol)
    for a, b in zip(eager_g, comp_g):
        torch.testing.assert_close(b, a, **tol)
    # and the relaxation is still the definition, case by case
    for ours, ref in zip(comp[2:5], masked_relaxation(l, u)):
        assert torch.equal(ours, ref)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_fused_bounds_match_eager_and_are_sound(method, fused, monkeypatch):
    _needs_compiler()
    net = small_conv_net(0, dtype=torch.float32)
    x, lo, hi = random_box(12, (1, 8, 8), seed=2, dtype=torch.float32, scale=0.05)
    y = net(x).argmax(1)
    C = margin_spec(y, 5)
    out = {}
    for on in (False, True):
        monkeypatch.setattr(R, "_fused", on)
        lower, upper = compute_bounds(net, lo, hi, method, C=C)
        lo_g = lo.clone().requires_grad_()
        ce = robust_cross_entropy(net, lo_g, hi, y, method, fusion=True)
        (g,) = torch.autograd.grad(ce.sum(), lo_g)
        out[on] = (lower.detach(), upper.detach(), ce.detach(), g)
    assert not R.fused_relu_unavailable()
    for a, b in zip(out[False], out[True]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    with torch.no_grad():   # sound: every sampled point of the box lies within the fused bounds
        pts = sample_box(lo, hi, 64, seed=1)
        vals = torch.einsum("bsk,nbk->nbs", C, net(pts.flatten(0, 1)).view(64, 12, 5))
    lower, upper = out[True][:2]
    assert bool((vals >= lower - 1e-4).all()) and bool((vals <= upper + 1e-4).all())


def _check_fallback(monkeypatch, caplog, compiler):
    calls = []

    def counting(*a, **k):
        calls.append(1)
        return compiler(*a, **k)

    monkeypatch.setattr(R, "_compiled", {})
    monkeypatch.setattr(R, "_compiler", lambda: counting)
    net = small_conv_net(1, dtype=torch.float64)
    x, lo, hi = random_box(4, (1, 8, 8), seed=1, scale=0.05)
    C = margin_spec(net(x).argmax(1), 5)
    monkeypatch.setattr(R, "_fused", False)
    want = compute_bounds(net, lo, hi, "crown-ibp", C=C)
    monkeypatch.setattr(R, "_fused", True)
    with caplog.at_level(logging.WARNING, logger=R.__name__):
        got = compute_bounds(net, lo, hi, "crown-ibp", C=C)
        again = compute_bounds(net, lo, hi, "crown-ibp", C=C)
    for a, b, c in zip(want, got, again):
        assert torch.equal(a, b) and torch.equal(a, c)        # the eager rules ran
    warnings = [r for r in caplog.records if r.name == R.__name__ and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "eager" in warnings[0].getMessage()   # logged once
    assert "cpu" in R.fused_relu_unavailable()
    assert len(calls) == 1                                     # never tried again
    return warnings[0].getMessage()


def test_fallback_when_the_compiler_raises(fused, monkeypatch, caplog):
    def broken(*a, **k):
        raise RuntimeError("no backend")

    msg = _check_fallback(monkeypatch, caplog, broken)
    assert "no backend" in msg


def test_fallback_when_the_compiled_call_fails(fused, monkeypatch, caplog):
    """torch.compile is lazy: a missing compiler shows on the first call of the compiled rule."""
    def lazy(rule, **kw):
        def call(*a):
            raise OSError("cc1plus: not found")
        return call

    msg = _check_fallback(monkeypatch, caplog, lazy)
    assert "cc1plus" in msg


def test_no_compilation_is_tried_without_a_cpp_compiler(fused, monkeypatch, caplog):
    from torch._inductor import cpp_builder

    def missing():
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    monkeypatch.setattr(R, "_compiled", {})
    monkeypatch.setattr(R, "_compiler", lambda: pytest.fail("compile attempted without a compiler"))
    l, u = edge_bounds(torch.float32)
    with caplog.at_level(logging.WARNING, logger=R.__name__):
        got = R.relu_relaxation(l, u)
    monkeypatch.setattr(R, "_fused", False)
    for a, b in zip(got, R.relu_relaxation(l, u)):
        assert torch.equal(a, b)
    assert "C++ compiler" in R.fused_relu_unavailable()["cpu"]


def test_switch_is_off_by_default_and_set_by_the_config():
    from ctxbudget.config import RunConfig

    assert RunConfig().fused_relu is False
    before = R.fused_relu()
    try:
        R.set_fused_relu(True)
        assert R.fused_relu()
    finally:
        R.set_fused_relu(before)
