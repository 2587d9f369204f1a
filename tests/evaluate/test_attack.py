"""PGD on a non-uniform clipped box."""
import torch
from torch import nn

from ctxbudget.budgets import input_box
from ctxbudget.evaluate import margins, min_margin, pgd_attack
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
    for point in model.seen + [res.x_adv]:
        assert bool((point >= lo).all()) and bool((point <= hi).all())
        assert torch.equal(point[fixed], x[fixed])
        assert bool(((point - x).abs() <= eps + 1e-6).all())
    assert len(model.seen) >= 2 * 15


def test_large_budget_breaks_random_model():
    x = make_images(16)
    model = tiny_conv(4)
    y = model(x).argmax(1)
    res = pgd_attack(model, x, y, torch.full_like(x, 1.0), steps=30)
    small = pgd_attack(model, x, y, torch.full_like(x, 1e-4), steps=30)
    assert res.broken.float().mean() > 0.5 and not bool(small.broken.any())
