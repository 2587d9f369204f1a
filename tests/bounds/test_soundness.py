"""Soundness: sampled and PGD points of the box lie within the bounds, for every method."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ctxbudget.bounds import compute_bounds, margin_spec
from ctxbudget.models.classifiers import get_model

from .conftest import pgd, random_box, sample_box, small_conv_net

METHODS = ["ibp", "crown-ibp", "crown", "alpha-crown"]
TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def trained_ish(seed: int = 1) -> nn.Sequential:
    """small_conv_net after 40 Adam steps on a teacher's labels (fewer unstable, larger margins)."""
    net = small_conv_net(seed)
    teacher = small_conv_net(seed + 100)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(64, 1, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = teacher(x).argmax(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net


NETS = {
    "random": lambda: small_conv_net(0),
    "random_pool": lambda: small_conv_net(2, pool=True),
    "bn_eval": lambda: small_conv_net(3, bn=True),
    "trained": trained_ish,
}


def _check_inside(net, xl, xu, lo, up, C=None, tol=1e-9, seed=0):
    pts = sample_box(xl, xu, 12, seed=seed)
    with torch.no_grad():
        out = net(pts.flatten(0, 1)).view(pts.shape[0], xl.shape[0], -1)
        if C is not None:
            out = torch.einsum("bsk,nbk->nbs", C.to(out.dtype), out)
    assert bool((out >= lo - tol).all()), f"sampled point below lower bound by {float((lo - out).max()):.3g}"
    assert bool((out <= up + tol).all()), f"sampled point above upper bound by {float((out - up).max()):.3g}"

    def f(z):
        o = net(z)
        return o if C is None else torch.einsum("bsk,bk->bs", C.to(o.dtype), o)

    assert bool((pgd(f, xl, xu, maximize=True) <= up + tol).all()), "PGD point above the upper bound"
    assert bool((pgd(f, xl, xu, maximize=False) >= lo - tol).all()), "PGD point below the lower bound"


@pytest.mark.parametrize("net_name", list(NETS))
@pytest.mark.parametrize("method", METHODS)
def test_sound_logits_and_margins(net_name: str, method: str) -> None:
    net = NETS[net_name]()
    x, xl, xu = random_box(4, (1, 8, 8), seed=1, scale=0.15, zero_frac=0.3)
    kw = {"alpha_steps": 5} if method == "alpha-crown" else {}
    lo, up = compute_bounds(net, xl, xu, method, **kw)
    assert lo.shape == (4, 5) and lo.dtype == torch.float64
    assert bool((lo <= up + 1e-12).all())
    _check_inside(net, xl, xu, lo, up)
    y = torch.tensor([0, 3, 4, 1])
    C = margin_spec(y, 5, dtype=torch.float64)
    lo, up = compute_bounds(net, xl, xu, method, C=C, **kw)
    assert lo.shape == (4, 4)
    _check_inside(net, xl, xu, lo, up, C=C)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
@pytest.mark.parametrize("name", ["dm-small", "dm-small-px"])
def test_sound_float32_dm_small(method: str, name: str) -> None:
    torch.manual_seed(0)
    net = get_model(name, (1, 28, 28), 10)
    x, xl, xu = random_box(3, (1, 28, 28), seed=2, dtype=torch.float32, scale=0.05)
    C = margin_spec(torch.tensor([1, 2, 3]), 10)
    lo, up = compute_bounds(net, xl, xu, method, C=C)
    assert lo.dtype == torch.float32
    _check_inside(net, xl, xu, lo, up, C=C, tol=1e-4)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_monotone_in_the_box(method: str) -> None:
    net = small_conv_net(4)
    x, xl, xu = random_box(4, (1, 8, 8), seed=3, scale=0.2)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(xl.shape, generator=g, dtype=xl.dtype) * 0.5
    b = torch.rand(xl.shape, generator=g, dtype=xl.dtype) * 0.5
    xl2, xu2 = xl + a * (xu - xl), xu - b * (xu - xl)
    for C in (None, margin_spec(torch.tensor([0, 1, 2, 3]), 5, dtype=torch.float64)):
        lo, up = compute_bounds(net, xl, xu, method, C=C)
        lo2, up2 = compute_bounds(net, xl2, xu2, method, C=C)
        assert bool((lo2 >= lo - 1e-10).all()) and bool((up2 <= up + 1e-10).all())


def test_alpha_crown_never_looser_than_crown() -> None:
    net = small_conv_net(5)
    x, xl, xu = random_box(4, (1, 8, 8), seed=4, scale=0.2)
    C = margin_spec(torch.tensor([4, 1, 2, 0]), 5, dtype=torch.float64)
    lo, up = compute_bounds(net, xl, xu, "crown", C=C)
    alo, aup = compute_bounds(net, xl, xu, "alpha-crown", C=C, alpha_steps=10)
    assert bool((alo >= lo - 1e-12).all()) and bool((aup <= up + 1e-12).all())
    assert float((alo - lo).max().detach()) > 0  # the optimisation helps somewhere
    ilo, _ = compute_bounds(net, xl, xu, "alpha-crown", C=C, alpha_steps=5, alpha_intermediate="ibp")
    clo, _ = compute_bounds(net, xl, xu, "crown-ibp", C=C)
    assert bool((ilo >= clo - 1e-12).all())


@pytest.mark.parametrize("method", METHODS)
def test_zero_width_dimensions(method: str) -> None:
    net = small_conv_net(6)
    x, xl, xu = random_box(3, (1, 8, 8), seed=5, scale=0.1, zero_frac=0.8)
    lo, up = compute_bounds(net, xl, xu, method)
    _check_inside(net, xl, xu, lo, up)
    # an all-zero box: bounds equal the forward value
    lo, up = compute_bounds(net, x, x.clone(), method)
    with torch.no_grad():
        f = net(x)
    assert torch.allclose(lo, f, atol=1e-10) and torch.allclose(up, f, atol=1e-10)
    C = margin_spec(torch.tensor([0, 1, 2]), 5, dtype=torch.float64)
    lo, up = compute_bounds(net, x, x, method, C=C)
    m = torch.einsum("bsk,bk->bs", C, f)
    assert torch.allclose(lo, m, atol=1e-10) and torch.allclose(up, m, atol=1e-10)


def test_batchnorm_train_mode_uses_clean_batch_stats() -> None:
    net = small_conv_net(7, bn=True).train()
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    before = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in bns]
    x, xl, xu = random_box(6, (1, 8, 8), seed=6, scale=0.05)
    for method in ("ibp", "crown-ibp", "crown"):
        lo, up = compute_bounds(net, xl, xu, method, x=x)
        # reference: the same network with BN statistics frozen at the clean batch's statistics
        frozen = _freeze_bn_at(net, x)
        _check_inside(frozen, xl, xu, lo, up)
        compute_bounds(net, xl, xu, method)  # x=None: box centre
    for m, (rm, rv, n) in zip(bns, before):
        assert torch.equal(m.running_mean, rm) and torch.equal(m.running_var, rv)
        assert int(m.num_batches_tracked) == n
    assert net.training


def _freeze_bn_at(net: nn.Sequential, x: torch.Tensor) -> nn.Sequential:
    import copy

    frozen = copy.deepcopy(net)
    h = x
    for m in frozen:
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            dims = [0] + list(range(2, h.dim()))
            m.running_mean.copy_(h.mean(dims).detach())
            m.running_var.copy_(h.var(dims, unbiased=False).detach())
            m.eval()
        with torch.no_grad():
            h = m(h)
    return frozen.eval()
