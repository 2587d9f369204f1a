"""α-CROWN on wide layers: the relaxation gaps, the ranking of neurons, and soundness of the bounds
re-optimised for the selected neurons (sampled points and PGD; never looser than CROWN)."""
from __future__ import annotations

import pytest
import torch

import ctxbudget.bounds.alpha as alpha_mod
from ctxbudget.bounds import Bounder, compute_bounds, margin_spec
from ctxbudget.bounds.crown import backward_rows, relaxations
from ctxbudget.bounds.intermediate import intersect_rows
from ctxbudget.bounds.relu import relaxation_gaps, relu_relaxation

from .conftest import random_box, sample_box, small_conv_net
from .test_intermediate import _pre_activations
from .test_soundness import NETS, _check_inside


def test_relaxation_gaps_are_the_largest_gaps_on_the_interval() -> None:
    g = torch.Generator().manual_seed(0)
    l = torch.randn(500, generator=g, dtype=torch.float64)
    u = l + torch.rand(500, generator=g, dtype=torch.float64) * 3
    gl, gu = relaxation_gaps(l, u)
    d_low, d_up, b_up = relu_relaxation(l, u)
    t = torch.linspace(0, 1, 2001, dtype=torch.float64).unsqueeze(1)
    z = l + t * (u - l)                                   # 2001×500 points of [l, u]
    brute_low = (torch.relu(z) - d_low * z).max(0).values
    brute_up = (d_up * z + b_up - torch.relu(z)).max(0).values
    assert torch.allclose(gl, brute_low, atol=1e-12) and torch.allclose(gu, brute_up, atol=1e-3 * float((u - l).max()))
    assert bool((gu >= brute_up - 1e-12).all())           # the chord's height at 0 is the largest gap
    stable = (l >= 0) | (u <= 0)
    assert bool((gl[stable] == 0).all()) and bool((gu[stable] == 0).all())


def test_ranked_rows_pick_the_costliest_unstable_neurons() -> None:
    net = small_conv_net(1)
    x, xl, xu = random_box(3, (1, 8, 8), seed=5, scale=0.2)
    bd = Bounder(net, xl, xu)
    pre = bd.crown_pre()
    A = bd.spec(margin_spec(torch.tensor([0, 1, 2]), 5, dtype=torch.float64))
    relax = relaxations(pre)
    i = sorted(pre)[1]
    l, u = (t.flatten(1) for t in pre[i])
    idx, count = alpha_mod.ranked_rows(bd.ops, i, A, relax, l, u, 7)
    unstable = (l < 0) & (u > 0)
    assert count.tolist() == unstable.sum(1).clamp(max=7).tolist() and idx.shape == (3, 7)
    with torch.no_grad():
        a = backward_rows(bd.ops, len(bd.ops), A, relax, start=i + 1)[0].flatten(2)
        gl, gu = relaxation_gaps(l, u)
        score = (a.clamp(min=0) * gl.unsqueeze(1) - a.clamp(max=0) * gu.unsqueeze(1)).sum(1)
    for b in range(3):
        k = int(count[b])
        chosen = idx[b, :k]
        assert bool(unstable[b, chosen].all()) and len(set(chosen.tolist())) == k
        rest = unstable[b].clone()
        rest[chosen] = False
        if bool(rest.any()):   # every chosen neuron scores at least as much as every one left out
            assert float(score[b, chosen].min()) >= float(score[b, rest].max())
    again = alpha_mod.ranked_rows(bd.ops, i, A, relax, l, u, 7)
    assert torch.equal(again[0], idx)


def test_intersect_ties_to_new_same_values_gradient_on_ties() -> None:
    l = torch.tensor([[-1.0, -2.0, -3.0]], dtype=torch.float64)
    u = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    idx = torch.tensor([[0, 1, 2]])
    count = torch.tensor([2])                               # entry 2 is padding
    lc = torch.tensor([[-1.0, -1.5, 0.0]], dtype=torch.float64, requires_grad=True)  # tie, tighter, padding
    uc = torch.tensor([[1.0, 2.5, 0.0]], dtype=torch.float64, requires_grad=True)    # tie, looser, padding
    a = intersect_rows(l, u, idx, count, lc, uc)
    b = intersect_rows(l, u, idx, count, lc, uc, ties_to_new=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert b[0].tolist() == [[-1.0, -1.5, -3.0]] and b[1].tolist() == [[1.0, 2.0, 3.0]]
    gl, gu = torch.autograd.grad(b[0].sum() + b[1].sum(), (lc, uc))
    assert gl.tolist() == [[1.0, 1.0, 0.0]] and gu.tolist() == [[1.0, 0.0, 0.0]]


def _spy_rows(monkeypatch) -> list:
    """Record (layer, idx, count, lc, uc) of every intermediate bound α-CROWN computes with its slopes."""
    seen: list = []
    orig = alpha_mod.rows_bounds

    def spy(ops, i, idx, bound_fn, dtype):
        lc, uc = orig(ops, i, idx, bound_fn, dtype)
        seen.append((i, idx, lc.detach(), uc.detach()))
        return lc, uc

    monkeypatch.setattr(alpha_mod, "rows_bounds", spy)
    return seen


@pytest.mark.parametrize("net_name", list(NETS))
@pytest.mark.parametrize("wide", [1, 3])
def test_wide_layers_sound_and_never_looser_than_crown(monkeypatch, net_name: str, wide: int) -> None:
    """Every layer with more than 2 unstable neurons counts as wide; the ``wide`` neurons picked per
    sample are re-optimised. Every intermediate bound computed with optimised slopes (all iterates)
    holds for sampled points, and the final bounds hold for sampled and PGD points and are never
    looser than CROWN's."""
    monkeypatch.setattr(alpha_mod, "MAX_INTERMEDIATE_ROWS", 2)
    seen = _spy_rows(monkeypatch)
    net = NETS[net_name]()
    x, xl, xu = random_box(4, (1, 8, 8), seed=1, scale=0.15, zero_frac=0.3)
    C = margin_spec(torch.tensor([0, 3, 4, 1]), 5, dtype=torch.float64)
    clo, cup = compute_bounds(net, xl, xu, "crown", C=C)
    lo, up = compute_bounds(net, xl, xu, "alpha-crown", C=C, alpha_steps=6, alpha_lr=0.3, alpha_wide_neurons=wide)
    assert bool((lo >= clo - 1e-12).all()) and bool((up <= cup + 1e-12).all())
    _check_inside(net, xl, xu, lo, up, C=C)
    assert seen and max(idx.shape[1] for _, idx, _, _ in seen) <= max(wide, 2)  # 2: a narrow layer's all
    bd = Bounder(net, xl, xu)
    z = _pre_activations(bd, sample_box(xl, xu, 64, seed=3))
    B = xl.shape[0]
    for i, idx, lc, uc in seen:
        zi = z[i].reshape(64, B, -1).gather(2, idx.unsqueeze(0).expand(64, -1, -1))
        assert bool((zi >= lc - 1e-9).all()) and bool((zi <= uc + 1e-9).all()), f"ReLU {i}: sample outside"


def test_wide_neurons_tighten_and_zero_keeps_wide_layers_fixed(monkeypatch) -> None:
    monkeypatch.setattr(alpha_mod, "MAX_INTERMEDIATE_ROWS", 2)
    net = small_conv_net(5)
    x, xl, xu = random_box(4, (1, 8, 8), seed=4, scale=0.2)
    C = margin_spec(torch.tensor([4, 1, 2, 0]), 5, dtype=torch.float64)
    kw = dict(C=C, bound_upper=False, alpha_steps=20)
    fixed, _ = compute_bounds(net, xl, xu, "alpha-crown", alpha_intermediate="crown", **kw)
    off, _ = compute_bounds(net, xl, xu, "alpha-crown", alpha_wide_neurons=0, **kw)
    on, _ = compute_bounds(net, xl, xu, "alpha-crown", alpha_wide_neurons=8, **kw)
    assert torch.equal(off, fixed)            # every layer is wide here: 0 re-optimises none of them
    assert float((on - fixed).min()) >= -1e-12 and float((on - fixed).sum()) > 0


def test_wide_neurons_must_not_be_negative() -> None:
    net = small_conv_net(0)
    x, xl, xu = random_box(2, (1, 8, 8), seed=0, scale=0.1)
    with pytest.raises(ValueError, match="wide_neurons"):
        compute_bounds(net, xl, xu, "alpha-crown", alpha_wide_neurons=-1)
