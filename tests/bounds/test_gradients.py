"""Gradients w.r.t. the box and the parameters (gradcheck in float64) and into ε."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ctxbudget.bounds import compute_bounds, margin_spec, robust_cross_entropy

from .conftest import small_conv_net


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(),
                         nn.Linear(5, 3)).double()


def _box(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 2, 3, generator=g, dtype=torch.float64)
    eps = 0.05 + 0.1 * torch.rand(x.shape, generator=g, dtype=torch.float64)
    return x - eps, x + eps


def _away_from_kinks(net, xl, xu) -> bool:
    """No ReLU pre-activation bound (IBP or CROWN) within 1e-3 of 0, no adaptive-slope tie."""
    from ctxbudget.bounds import Bounder

    bd = Bounder(net, xl, xu)
    for pre in (bd.ibp_state()[0], bd.crown_pre()):
        for l, u in pre.values():
            if bool((l.abs() < 1e-3).any() or (u.abs() < 1e-3).any() or ((u + l).abs() < 1e-3).any()):
                return False
    return True


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_gradcheck_box(method: str) -> None:
    net = tiny_net(1)
    xl, xu = _box(1)
    assert _away_from_kinks(net, xl, xu)
    C = margin_spec(torch.tensor([0, 2]), 3, dtype=torch.float64)

    def f(a, b):
        lo, up = compute_bounds(net, a, b, method, C=C)
        return lo, up

    assert torch.autograd.gradcheck(f, (xl.requires_grad_(), xu.requires_grad_()), eps=1e-6, atol=1e-6)

    def g(a, b):
        return (robust_cross_entropy(net, a, b, torch.tensor([0, 2]), method=method, fusion=True),
                robust_cross_entropy(net, a, b, torch.tensor([0, 2]), method=method, fusion=False, beta=0.7))

    assert torch.autograd.gradcheck(g, (xl, xu), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_gradcheck_parameters(method: str) -> None:
    net = tiny_net(1)
    xl, xu = _box(1)
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    y = torch.tensor([1, 0])

    def f(*ps):
        net2 = copy.deepcopy(net)
        for name, p in zip(names, ps):  # the parameters become the (differentiable) inputs
            mod, attr = name.rsplit(".", 1)
            m = net2.get_submodule(mod)
            delattr(m, attr)
            setattr(m, attr, p)
        lo, _ = compute_bounds(net2, xl, xu, method, C=margin_spec(y, 3, dtype=torch.float64), bound_upper=False)
        ce = robust_cross_entropy(net2, xl, xu, y, method=method, fusion=True)
        return lo, ce

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
@pytest.mark.parametrize("fusion", [True, False])
def test_grad_flows_to_eps_and_params(method: str, fusion: bool) -> None:
    net = small_conv_net(21, dtype=torch.float32, bn=True).train()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    theta = torch.zeros(4, 1, 8, 8, requires_grad=True)
    eps = 0.1 * torch.sigmoid(theta)
    xl, xu = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 3])
    loss = robust_cross_entropy(net, xl, xu, y, method=method, fusion=fusion, x=x).mean()
    loss.backward()
    assert theta.grad is not None and bool(torch.isfinite(theta.grad).all()) and float(theta.grad.abs().sum()) > 0
    for p in net.parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())


@pytest.mark.parametrize("per_row", [False, True])
def test_relu_backward_node_gradcheck(per_row: bool) -> None:
    """The fused ReLU backward node has correct gradients for all four inputs."""
    from ctxbudget.bounds.relu import relu_backward

    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, 4, 2, 2, generator=g, dtype=torch.float64)
    A = torch.where(A.abs() < 0.05, A + 0.2, A).requires_grad_()  # away from the sign switch
    dl = torch.rand((2, 3, 4, 2, 2) if per_row else (2, 4, 2, 2), generator=g, dtype=torch.float64).requires_grad_()
    du = torch.rand(2, 4, 2, 2, generator=g, dtype=torch.float64).requires_grad_()
    bu = torch.rand(2, 4, 2, 2, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(relu_backward, (A, dl, du, bu))
