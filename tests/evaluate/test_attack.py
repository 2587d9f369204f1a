"""PGD on a non-uniform clipped box."""
import pytest
import torch
from torch import nn

from ctxbudget.budgets import input_box
from ctxbudget.evaluate import margins, min_margin, pgd_attack
from ctxbudget.evaluate.attack import example_seeds
from eval_helpers import make_images, tiny_conv


class Recorder(nn.Module):
    """Wraps a model and keeps every input it is called with."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


def linear_model() -> nn.Module:
    """f_0 = Σ x − 0.5·n/4 … margin f_0 − f_1 = Σ_i x_i − 0.5 on 4 pixels."""
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]))
        lin.bias.copy_(torch.tensor([-0.5, 0.0]))
    return nn.Sequential(nn.Flatten(), lin)


def test_margins_layout():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    y = torch.tensor([0, 2])
    assert torch.equal(margins(logits, y), torch.tensor([[2.0, 1.0], [1.0, -4.0]]))
    assert torch.equal(min_margin(logits, y), torch.tensor([1.0, -4.0]))


def test_finds_adversarial_examples_where_they_exist():
    model = linear_model()
    x = torch.full((2, 1, 2, 2), 0.2)                 # clean margin 0.8 − 0.5 = 0.3 > 0
    y = torch.zeros(2, dtype=torch.long)
    eps = torch.stack([torch.full((1, 2, 2), 0.15), torch.full((1, 2, 2), 0.01)])
    res = pgd_attack(model, x, y, eps, steps=20, generator=torch.Generator().manual_seed(0))
    # example 0: true minimum 4·0.05 − 0.5 = −0.3 (breakable); example 1: 4·0.19 − 0.5 = 0.26
    assert res.broken.tolist() == [True, False]
    assert abs(res.min_margin[0].item() + 0.3) < 1e-4 and abs(res.min_margin[1].item() - 0.26) < 1e-4
    assert torch.allclose(model(res.x_adv).argmax(1), torch.tensor([1, 0]))


def test_misclassified_clean_point_counts_as_broken():
    model = linear_model()
    x = torch.full((1, 1, 2, 2), 0.05)                # margin −0.3 already
    res = pgd_attack(model, x, torch.zeros(1, dtype=torch.long), torch.zeros_like(x), steps=5)
    assert res.broken.item()


def test_stays_in_clipped_box_with_zero_width_and_per_pixel_budgets():
    x = make_images(8)
    eps = torch.rand_like(x) * 0.3
    eps[:, :, 2, :] = 0.0                             # zero budget: those pixels never move
    model = Recorder(tiny_conv(3))
    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(0))
    res = pgd_attack(model, x, y, eps, steps=15, restarts=2, loss="ce", generator=torch.Generator().manual_seed(1))
    lo, hi = input_box(x, eps)
    fixed = hi == lo                                   # zero budget, or clipped at 0 / 1 with ε … width 0
    assert bool(fixed[:, :, 2, :].all())
    for point in model.seen[:1 + 2 * 15] + [res.x_adv]:    # the clean point, then the untargeted runs: whole batch
        assert bool((point >= lo).all()) and bool((point <= hi).all())
        assert torch.equal(point[fixed], x[fixed])
        assert bool(((point - x).abs() <= eps + 1e-6).all())
    for point in model.seen[1 + 2 * 15:]:                 # targeted runs: the examples not broken yet
        for row in point:
            inside = ((row >= lo) & (row <= hi)).flatten(1).all(1) & (row == x).logical_or(~fixed).flatten(1).all(1)
            assert bool(inside.any())                     # in the box of some example, its fixed pixels kept
    assert len(model.seen) >= 2 * 15


def test_large_budget_breaks_random_model():
    x = make_images(16)
    model = tiny_conv(4)
    y = model(x).argmax(1)
    res = pgd_attack(model, x, y, torch.full_like(x, 1.0), steps=30)
    small = pgd_attack(model, x, y, torch.full_like(x, 1e-4), steps=30)
    assert res.broken.float().mean() > 0.5 and not bool(small.broken.any())


def single_run_pgd(model, x, y, eps, *, steps, generator):
    """The attack of earlier versions (one untargeted run, uniform random start, step 2.5·ε/steps),
    kept here as the reference the current attack must never be weaker than."""
    lo, hi = input_box(x, eps)
    step = 2.5 * eps / steps
    with torch.no_grad():
        best = min_margin(model(x), y)
    point = lo + torch.rand(x.shape, generator=generator, dtype=x.dtype) * (hi - lo)
    for _ in range(steps):
        point.requires_grad_(True)
        m = min_margin(model(point), y)
        grad, = torch.autograd.grad(-m.sum(), point)
        with torch.no_grad():
            best = torch.minimum(best, m.detach())
            point = torch.max(torch.min(point.detach() + step * grad.sign(), hi), lo)
    with torch.no_grad():
        return torch.minimum(best, min_margin(model(point), y))


def test_never_weaker_than_the_single_run_attack_over_batches_sharing_a_generator():
    """The untargeted run draws exactly what the earlier attack drew, batch after batch (the targeted
    runs use a side generator), so every example's margin is <= the earlier attack's."""
    model = tiny_conv(5, classes=4)
    x = make_images(48)
    y = model(x).argmax(1)
    eps = torch.rand_like(x) * 0.4
    g_old, g_new = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    old, new = [], []
    for s in range(0, 48, 16):                               # three batches, one generator each (as evaluate does)
        old.append(single_run_pgd(model, x[s:s + 16], y[s:s + 16], eps[s:s + 16], steps=10, generator=g_old))
        new.append(pgd_attack(model, x[s:s + 16], y[s:s + 16], eps[s:s + 16], steps=10, generator=g_new).min_margin)
    old_m, new_m = torch.cat(old), torch.cat(new)
    assert bool((new_m <= old_m).all())
    assert 0 < int((old_m >= 0).sum()) and bool((new_m < old_m).any())   # a non-trivial case: it does more
    assert torch.equal(g_old.get_state(), g_new.get_state())              # the caller's generator advanced alike


def decoy_model(n: int = 64) -> nn.Module:
    """Label 0 on x = 0.5; the margin to class 1 is 0.3 − 0.2·(x_0 − 0.5) ∈ [0.2, 0.4] (never broken);
    the margin to class 2 is 2 + (x_0 − 0.5) − 0.15·Σ_{i≥1}(x_i − 0.5), ≥ 0.5 near 0.5 but −3.225 at
    the corner x_0 = 0, x_i = 1. Untargeted PGD follows class 1 (always the closest), moves only x_0
    and never sees class 2's corner."""
    lin = nn.Linear(n, 3)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1, 0] = 0.2
        lin.weight[2, 0], lin.weight[2, 1:] = -1.0, 0.15
        lin.bias.copy_(torch.tensor([0.0, -0.3 - 0.1, -2.0 + 0.5 - 0.15 * 0.5 * (n - 1)]))
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_targeted_runs_break_what_untargeted_pgd_misses():
    """α,β-CROWN broke an example that single-run PGD did not; on this decoy the earlier
    attack fails with any seed and even with 20 restarts, the current default breaks it."""
    model = decoy_model()
    x = torch.full((4, 1, 8, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    eps = torch.full_like(x, 0.5)
    corner = x.clone().fill_(1.0)
    corner[:, 0, 0, 0] = 0.0
    with torch.no_grad():                                                         # the construction
        assert float(min_margin(model(x), y)[0]) == pytest.approx(0.3)
        assert float(margins(model(corner), y)[0, 1]) == pytest.approx(-3.225, abs=1e-5)
    for seed in range(5):
        assert not bool(single_run_pgd(model, x, y, eps, steps=50, generator=torch.Generator().manual_seed(seed))
                        .lt(0).any())
    assert not bool(pgd_attack(model, x, y, eps, restarts=20, targets=0, generator=torch.Generator()).broken.any())
    res = pgd_attack(model, x, y, eps, generator=torch.Generator().manual_seed(0))
    assert bool(res.broken.all())
    assert torch.allclose(res.min_margin, torch.full((4,), -3.225), atol=1e-5)  # the true minimum (a corner)
    assert bool(((res.x_adv >= 0) & (res.x_adv <= 1)).all()) and bool(model(res.x_adv).argmax(1).eq(2).all())


def test_attack_argument_errors():
    model, x = decoy_model(), torch.full((1, 1, 8, 8), 0.5)
    y, eps = torch.zeros(1, dtype=torch.long), torch.full((1, 1, 8, 8), 0.1)
    with pytest.raises(ValueError, match="targets"):
        pgd_attack(model, x, y, eps, targets=-1)
    with pytest.raises(ValueError, match="loss"):
        pgd_attack(model, x, y, eps, loss="hinge")


def test_stop_when_broken_breaks_the_same_examples_with_less_work():
    """An example leaves the attack once broken: the broken set is that of the full attack, the
    unbroken examples' margins are the same, and fewer example-forward passes are spent."""
    model = tiny_conv(5, classes=4)
    x = make_images(48)
    y = model(x).argmax(1)
    eps = torch.rand_like(x) * torch.linspace(0.05, 1.0, 48).view(-1, 1, 1, 1)   # some boxes too wide to hold
    rows = []

    class Counting(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            rows.append(len(t))
            return self.inner(t)

    seeds = example_seeds(0, "learned", range(48))
    full = pgd_attack(Counting(model), x, y, eps, steps=10, seeds=seeds)
    work_full, rows[:] = sum(rows), []
    early = pgd_attack(Counting(model), x, y, eps, steps=10, seeds=seeds, stop_when_broken=True)
    work_early = sum(rows)
    assert torch.equal(full.broken, early.broken) and 0 < int(full.broken.sum()) < 48
    assert torch.allclose(full.min_margin[~full.broken], early.min_margin[~early.broken])
    assert work_early < work_full


def rounding_decoy() -> nn.Module:
    """Label 0: ``f_0 = 256.5``, ``f_1 = 256.9·x_0``. In float32 the margin at x_0 = 1 is −0.4 (broken);
    in bf16 both numbers round to 256 and the margin reads 0 (not broken)."""
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1, 0] = 256.9
        lin.bias.copy_(torch.tensor([256.5, 0.0]))
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_bf16_attack_decides_broken_in_float32():
    """bf16 only steers the search: a point that bf16 rounding calls unbroken counts with its float32
    margin, and ``min_margin`` is the float32 margin at ``x_adv`` for every example."""
    model = rounding_decoy()
    x = torch.full((3, 1, 2, 2), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    eps = torch.full_like(x, 0.5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):               # the construction
        assert float(min_margin(model(torch.ones_like(x)).float(), y)[0]) == 0.0
    res = pgd_attack(model, x, y, eps, steps=5, generator=torch.Generator().manual_seed(0), precision="bfloat16")
    assert bool(res.broken.all())
    assert torch.allclose(res.min_margin, torch.full((3,), -0.4), atol=1e-4)
    with torch.no_grad():
        assert torch.equal(res.min_margin, min_margin(model(res.x_adv), y))


@pytest.mark.parametrize("stop", [False, True])
def test_bf16_attack_breaks_what_float32_breaks(stop):
    """Same seeds, bf16 vs float32 steps on a small CNN: the same examples broken, every margin the
    float32 margin at its point, every point in the box."""
    model = tiny_conv(5, classes=4)
    x = make_images(48)
    y = model(x).argmax(1)
    eps = torch.rand_like(x) * torch.linspace(0.05, 1.0, 48).view(-1, 1, 1, 1)
    seeds = example_seeds(0, "learned", range(48))
    full = pgd_attack(model, x, y, eps, steps=20, seeds=seeds, stop_when_broken=stop)
    low = pgd_attack(model, x, y, eps, steps=20, seeds=seeds, stop_when_broken=stop, precision="bfloat16")
    assert 0 < int(full.broken.sum()) < 48
    assert torch.equal(full.broken, low.broken)
    lo, hi = input_box(x, eps)
    assert bool(((low.x_adv >= lo) & (low.x_adv <= hi)).all())
    with torch.no_grad():
        assert torch.equal(low.min_margin, min_margin(model(low.x_adv), y))


def test_bf16_attack_breaks_the_targeted_decoy():
    model = decoy_model()
    x = torch.full((4, 1, 8, 8), 0.5)
    res = pgd_attack(model, x, torch.zeros(4, dtype=torch.long), torch.full_like(x, 0.5),
                     generator=torch.Generator().manual_seed(0), precision="bfloat16")
    assert bool(res.broken.all())
    assert torch.allclose(res.min_margin, torch.full((4,), -3.225), atol=1e-5)


def test_attack_precision_errors():
    model, x = decoy_model(), torch.full((1, 1, 8, 8), 0.5)
    with pytest.raises(ValueError, match="precision"):
        pgd_attack(model, x, torch.zeros(1, dtype=torch.long), torch.full_like(x, 0.1), precision="float16")
