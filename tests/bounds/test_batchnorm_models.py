"""The registered BatchNorm models (dm-small-bn, dm-medium-bn): bounds sound in eval and train mode."""
import copy

import pytest
import torch
from torch import nn

from ctxbudget.bounds import Bounder, compute_bounds, margin_spec
from ctxbudget.models import get_model, ibp_init_

SHAPE = (1, 16, 16)   # small, and large enough for both architectures


def _bn_net(name: str, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    net = get_model(name, SHAPE, 5).double()
    ibp_init_(net)
    with torch.no_grad():   # non-trivial affine parameters and running statistics
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.01, 0.05)
    return net


def _frozen_at(net: nn.Sequential, x: torch.Tensor) -> nn.Sequential:
    """Copy of ``net`` in eval mode whose BatchNorm running statistics are those of the batch ``x``
    reaching each BatchNorm (the network that training-mode bounds are about)."""
    frozen = copy.deepcopy(net)
    h = x
    with torch.no_grad():
        for m in frozen:
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                dims = [0] + list(range(2, h.dim()))
                m.running_mean.copy_(h.mean(dims))
                m.running_var.copy_(h.var(dims, unbiased=False))
                m.eval()
            h = m(h)
    return frozen.eval()


def _box(seed: int, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *SHAPE, generator=g, dtype=torch.float64)
    x[:, :, :2] = 0.0                                              # clipped pixels
    eps = 0.002 + 0.02 * torch.rand(x.shape, generator=g, dtype=torch.float64)   # per-pixel budgets
    return x, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def _samples(xl: torch.Tensor, xu: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k points per example: corners and uniform points of the box, (k·B)×C×H×W, example-major."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(k, *xl.shape, generator=g, dtype=xl.dtype)
    u[: k // 2] = u[: k // 2].round()                              # half of them are vertices
    return (xl + (xu - xl) * u).transpose(0, 1).reshape(-1, *xl.shape[1:])


@pytest.mark.parametrize("name", ["dm-small-bn", "dm-medium-bn", "dm-small-px-bn"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_bn_model_bounds_contain_sampled_points(name, mode):
    net = _bn_net(name, seed=3)
    net.train(mode == "train")
    x, xl, xu = _box(seed=4)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    C = margin_spec(y, 5, dtype=torch.float64)
    reference = _frozen_at(net, x) if mode == "train" else net
    pts = _samples(xl, xu, 64, seed=5)
    with torch.no_grad():
        out = reference(pts).view(len(x), 64, 5)                   # B×k×K
    margins = torch.einsum("bsk,bnk->bns", C, out)                 # B×k×(K−1)
    # full CROWN bounds every unstable neuron of DM-medium's 32×14×14 first layer: 40 s; DM-small suffices for it
    for method in ("ibp", "crown-ibp") + (("crown",) if name != "dm-medium-bn" else ()):
        lo, up = compute_bounds(net, xl, xu, method, x=x)
        assert bool((out >= lo.unsqueeze(1) - 1e-9).all()) and bool((out <= up.unsqueeze(1) + 1e-9).all()), method
        mlo, _ = compute_bounds(net, xl, xu, method, C=C, x=x, bound_upper=False)
        assert bool((margins >= mlo.unsqueeze(1) - 1e-9).all()), method
    if mode == "train":   # the train-mode network is not the one a batch of box points would give
        with torch.no_grad():
            assert not torch.allclose(net(pts)[:5], reference(pts)[:5])


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_bounder_forward_is_the_bounded_network(mode):
    net = _bn_net("dm-small-bn", seed=6)
    net.train(mode == "train")
    x, xl, xu = _box(seed=7)
    bd = Bounder(net, xl, xu, x)
    before = [b.clone() for b in net.buffers()]
    pts = _samples(xl, xu, 4, seed=8)
    with torch.no_grad():
        expect = (_frozen_at(net, x) if mode == "train" else net)(pts)
    assert torch.allclose(bd.forward(pts), expect, atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(before, net.buffers()))   # running statistics untouched
