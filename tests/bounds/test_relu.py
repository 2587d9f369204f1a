"""The ReLU rules (``ctxbudget.bounds.relu``) against their plain masked definitions.

The engine computes them with float arithmetic and hand-written backward passes (for speed); here
the same quantities are written the obvious way with boolean masks and ``torch.where`` and the two
are compared, values and gradients, on random inputs and on every boundary case.
"""
from __future__ import annotations

import pytest
import torch

from ctxbudget.bounds.relu import ibp_relu, relu_backward, relu_relaxation


def masked_relaxation(l: torch.Tensor, u: torch.Tensor):
    """The definition: stable active (l ≥ 0) → (1, 1, 0), stable inactive → (0, 0, 0), unstable →
    (1 if u > −l else 0, chord slope, chord intercept)."""
    unstable = (l < 0) & (u > 0)
    active = (l >= 0).to(l.dtype)
    denom = torch.where(unstable, u - l, torch.ones_like(u))
    slope = u / denom
    d_up = torch.where(unstable, slope, active)
    b_up = torch.where(unstable, -l * slope, torch.zeros_like(u))
    d_low = torch.where(unstable, (u > -l).to(u.dtype), active)
    return d_low, d_up, b_up


def masked_relu_backward(A, dl, du, bu):
    neg = A < 0
    new_A = A * torch.where(neg, du.unsqueeze(1), dl if dl.dim() == A.dim() else dl.unsqueeze(1))
    bias = (torch.where(neg, A, torch.zeros_like(A)) * bu.unsqueeze(1)).flatten(2).sum(-1)
    return new_A, bias


def edge_bounds(dtype=torch.float64):
    """(l, u) pairs covering every case: l = u = 0, l = 0 < u, l < u = 0, u = −l, stable both sides,
    unstable both ways, plus random ones."""
    cases = [(0.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (-1.0, 1.0), (-2.0, 1.0), (-1.0, 2.0), (0.5, 2.0),
             (-3.0, -1.0), (-1e-30, 1e-30), (0.3, 0.3), (-0.3, -0.3), (-5.0, 1e-7)]
    l = torch.tensor([c[0] for c in cases], dtype=dtype)
    u = torch.tensor([c[1] for c in cases], dtype=dtype)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 500, generator=g, dtype=dtype)
    return torch.cat([l, torch.minimum(a, b)]), torch.cat([u, torch.maximum(a, b)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relaxation_matches_definition(dtype) -> None:
    l, u = edge_bounds(dtype)
    for ours, ref in zip(relu_relaxation(l, u), masked_relaxation(l, u)):
        assert torch.equal(ours, ref)


def test_relaxation_gradients_match_definition() -> None:
    l, u = edge_bounds()
    keep = ((l.abs() > 1e-6) | (l == 0)) & ((u.abs() > 1e-6) | (u == 0))  # the definition's grads are fine there
    l, u = l[keep], u[keep]
    g = torch.Generator().manual_seed(1)
    w_up, w_b = torch.randn(2, l.numel(), generator=g, dtype=l.dtype)
    grads = []
    for fn in (relu_relaxation, masked_relaxation):
        a, b = l.clone().requires_grad_(), u.clone().requires_grad_()
        _, d_up, b_up = fn(a, b)
        ((d_up * w_up).sum() + (b_up * w_b).sum()).backward()
        grads.append((a.grad, b.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-12)


def test_relaxation_gradcheck_and_no_nan() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 40, generator=g, dtype=torch.float64)
    l, u = torch.minimum(a, b) - 0.01, torch.maximum(a, b) + 0.01
    assert torch.autograd.gradcheck(lambda l, u: relu_relaxation(l, u)[1:],
                                    (l.requires_grad_(), u.requires_grad_()))
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    out = relu_relaxation(z, z + 0.0)
    sum(t.sum() for t in out[1:]).backward()
    assert all(bool(torch.isfinite(t).all()) for t in out) and bool(torch.isfinite(z.grad).all())


@pytest.mark.parametrize("per_row", [False, True])
def test_relu_backward_matches_definition(per_row: bool) -> None:
    g = torch.Generator().manual_seed(3)
    A = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    A[0, 0, 0] = 0.0  # exact zeros take the lower line, as A ≥ 0
    dl = torch.rand((2, 3, 4, 5) if per_row else (2, 4, 5), generator=g, dtype=torch.float64)
    du, bu = torch.rand(2, 2, 4, 5, generator=g, dtype=torch.float64)
    ins = [t.clone().requires_grad_() for t in (A, dl, du, bu)]
    ref_ins = [t.clone().requires_grad_() for t in (A, dl, du, bu)]
    ours, ref = relu_backward(*ins), masked_relu_backward(*ref_ins)
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=0)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-13, atol=1e-13)
    w = torch.randn(ours[0].shape, generator=g, dtype=torch.float64)
    wb = torch.randn(ours[1].shape, generator=g, dtype=torch.float64)
    ((ours[0] * w).sum() + (ours[1] * wb).sum()).backward()
    ((ref[0] * w).sum() + (ref[1] * wb).sum()).backward()
    for a, b in zip(ins, ref_ins):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_ibp_relu_is_the_interval_image() -> None:
    g = torch.Generator().manual_seed(4)
    c = torch.randn(100, generator=g, dtype=torch.float64)
    r = torch.rand(100, generator=g, dtype=torch.float64)
    cc, rr = ibp_relu(c, r)
    torch.testing.assert_close(cc - rr, torch.relu(c - r))
    torch.testing.assert_close(cc + rr, torch.relu(c + r))
