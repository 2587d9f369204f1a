"""Property tests of the budget projection (SPEC.md section 2) and the threat models."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxbudget.budgets import (
    LearnedBudget,
    UniformBudget,
    budget_limits,
    input_box,
    log_volume,
    project_budgets,
    validate_budget_params,
)
from ctxbudget.models import BudgetGenerator

SETTINGS = [(0.4, 0.5, 2.0), (0.6, 0.5, 2.0), (0.8, 0.5, 2.0), (8 / 255, 0.125, 2.0), (16 / 255, 0.0625, 1.5),
            (0.3, 0.125, 2.5), (1.0, 0.5, 2.0), (0.3, 1.0, 1.0), (1e-6, 0.5, 2.0)]


def _check(eps, g, eps0, a_lo, a_hi, tol=1e-9):
    n = g[0].numel()
    lo, hi = budget_limits(eps0, a_lo, a_hi)
    assert torch.isfinite(eps).all()
    assert (eps >= lo * (1 - 1e-12)).all() and (eps <= hi * (1 + 1e-12)).all()
    err = (log_volume(eps) - n * math.log(eps0)).abs().max().item()
    assert err <= tol * n * max(1.0, abs(math.log(eps0))), err


@pytest.mark.parametrize("eps0,a_lo,a_hi", SETTINGS)
def test_volume_and_range_float64(eps0, a_lo, a_hi):
    torch.manual_seed(0)
    for g in (torch.rand(16, 1, 28, 28, dtype=torch.float64),
              torch.rand(4, 3, 8, 8, dtype=torch.float64) ** 4,        # mostly small: grow branch
              1 - torch.rand(4, 3, 8, 8, dtype=torch.float64) ** 4):   # mostly large: shrink branch
        _check(project_budgets(g, eps0, a_lo, a_hi), g, eps0, a_lo, a_hi)


def test_float32_output_meets_volume_to_float_precision():
    g = torch.rand(8, 3, 32, 32)
    eps = project_budgets(g, 8 / 255, 0.125, 2.0)
    assert eps.dtype == torch.float32
    rel = ((log_volume(eps) - 3072 * math.log(8 / 255)) / (3072 * math.log(8 / 255))).abs().max()
    assert rel < 1e-6


@settings(max_examples=60, deadline=None)
@given(eps0=st.floats(1e-4, 1.0), a_lo=st.floats(0.01, 1.0), a_hi=st.floats(1.0, 20.0),
       seed=st.integers(0, 10_000), power=st.floats(0.1, 8.0))
def test_projection_properties(eps0, a_lo, a_hi, seed, power):
    gen = torch.Generator().manual_seed(seed)
    g = torch.rand(3, 2, 5, 5, generator=gen, dtype=torch.float64) ** power
    _check(project_budgets(g, eps0, a_lo, a_hi), g, eps0, a_lo, a_hi)


@pytest.mark.parametrize("fill", [0.0, 1.0, 0.5])
def test_degenerate_scores_give_finite_budgets(fill):
    g = torch.full((2, 1, 6, 6), fill, dtype=torch.float64, requires_grad=True)
    eps = project_budgets(g, 0.4, 0.5, 2.0)
    _check(eps, g, 0.4, 0.5, 2.0)
    eps.sum().backward()
    assert torch.isfinite(g.grad).all()


def test_equal_limits_give_uniform_eps0():
    g = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    assert torch.allclose(project_budgets(g, 0.3, 1.0, 1.0), torch.full_like(g, 0.3))


def test_upper_limit_clipped_at_one():
    g = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    eps = project_budgets(g, 0.8, 0.5, 2.0)
    assert eps.max() <= 1.0


def test_eps0_zero_means_no_perturbation():
    g = torch.rand(2, 1, 5, 5, requires_grad=True)
    eps = project_budgets(g, 0.0, 0.5, 2.0)
    assert (eps == 0).all()


def test_tiny_eps0_no_nan():
    g = torch.rand(2, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    eps = project_budgets(g, 1e-12, 0.5, 2.0)
    eps.sum().backward()
    assert torch.isfinite(eps).all() and torch.isfinite(g.grad).all()


def test_gradcheck():
    g = (0.05 + 0.9 * torch.rand(2, 1, 4, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: project_budgets(t, 0.4, 0.5, 2.0), (g,))
    h = (0.05 + 0.9 * torch.rand(2, 1, 4, 4, dtype=torch.float64) ** 6).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: project_budgets(t, 0.4, 0.5, 2.0), (h,))


@pytest.mark.parametrize("eps0,a_lo,a_hi,match", [
    (0.0, 0.5, 2.0, "eps0"), (1.5, 0.5, 2.0, "eps0"), (-0.1, 0.5, 2.0, "eps0"), (float("nan"), 0.5, 2.0, "eps0"),
    (0.4, 1.5, 2.0, "alpha_lo"), (0.4, 0.5, 0.9, "alpha_hi"), (0.4, 0.0, 2.0, "alpha_lo"),
])
def test_invalid_settings_rejected(eps0, a_lo, a_hi, match):
    with pytest.raises(ValueError, match=match):
        validate_budget_params(eps0, a_lo, a_hi)


def test_learned_budget_end_to_end_gradients_reach_generator():
    torch.manual_seed(0)
    threat = LearnedBudget(BudgetGenerator((1, 12, 12)), 0.4, 0.5, 2.0)
    x = torch.rand(5, 1, 12, 12)
    eps = threat(x)
    assert eps.shape == x.shape
    (eps * torch.randn_like(eps)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in threat.parameters())
    assert threat.limits() == pytest.approx((0.2, 0.8))


def test_uniform_budget_and_box():
    x = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    eps = UniformBudget(0.3)(x)
    lo, hi = input_box(x, eps)
    assert torch.allclose(lo, torch.tensor([[[[0.0, 0.2, 0.7]]]]))
    assert torch.allclose(hi, torch.tensor([[[[0.3, 0.8, 1.0]]]]))
    with pytest.raises(ValueError):
        input_box(x, eps[..., :2])


def test_clip01_matches_clamp_values_and_gradient():
    from ctxbudget.budgets import clip01

    v = torch.tensor([-1.5, -1e-9, 0.0, 1e-9, 0.3, 1.0 - 1e-9, 1.0, 1.0 + 1e-9, 2.0], dtype=torch.float64)
    a, b = v.clone().requires_grad_(), v.clone().requires_grad_()
    w = torch.arange(1.0, 10.0, dtype=torch.float64)
    (clip01(a) * w).sum().backward()
    (b.clamp(0, 1) * w).sum().backward()
    assert torch.equal(clip01(v), v.clamp(0, 1))
    assert torch.equal(a.grad, b.grad)  # including the end points 0 and 1, where clamp passes the gradient


def test_eps0_is_an_argument_not_state_the_schedule_sets():
    from ctxbudget.models.generator import BudgetGenerator
    from ctxbudget.train.objective import Objective

    threat = LearnedBudget(BudgetGenerator((1, 8, 8)), 0.4, 0.5, 2.0)
    x = torch.rand(3, 1, 8, 8)
    eps = threat(x, 0.1)
    assert torch.allclose(eps.double().log().sum((1, 2, 3)), torch.full((3,), 64 * math.log(0.1), dtype=torch.float64))
    assert threat.limits(0.1) == pytest.approx((0.05, 0.2)) and threat.limits() == pytest.approx((0.2, 0.8))
    assert torch.allclose(threat(x), threat(x, 0.4))                    # default: the model's own ε0
    assert torch.equal(UniformBudget(0.3)(x, 0.2), torch.full_like(x, 0.2))
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    Objective(clf, threat)(x, torch.tensor([0, 1, 2]), 0.05, 0.5, 1.0, "ibp")
    assert threat.eps0 == 0.4                                           # a training step leaves it alone
    with pytest.raises(ValueError, match="eps0"):
        threat(x, 1.5)
