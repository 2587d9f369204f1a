"""PGD inside a non-uniform, clipped box (the empirical side of the soundness check).

All tensors are in pixel units: images ``x`` B×C×H×W in [0, 1], budgets ``eps`` of the same shape.
The attack searches the box ``[max(x − ε, 0), min(x + ε, 1)]`` (``ctxbudget.budgets.input_box``),
so dimensions whose box has zero width (ε_i = 0, or x_i at the domain edge on the clipped side) are
never moved. The step is per pixel, proportional to that pixel's budget: ``step_i = step_factor ·
ε_i / steps`` (default 2.5·ε_i/steps, as in Madry et al.), signed gradient, then projection
(element-wise clamp) back onto the box.

An example is *broken* when some margin ``f_y − f_j`` (j ≠ y) is < 0 at a point of the box; the
clean point is always among the points tried, so misclassified examples count as broken.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..bounds.loss import other_classes
from ..budgets import input_box


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Margins ``f_y − f_j`` for every j ≠ y, shape B×(K−1) (j ascending, y left out)."""
    true = logits.gather(1, y.view(-1, 1))
    return (true - logits).gather(1, other_classes(y, logits.shape[1]))


def min_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smallest margin ``f_y − max_{j≠y} f_j`` per example (B); < 0 means misclassified."""
    return margins(logits, y).min(dim=1).values


@dataclass
class AttackResult:
    """``min_margin``: lowest margin found per example (B, logit units); ``x_adv``: the point (B×C×H×W)
    where it was found; ``broken``: ``min_margin < 0`` (B, bool)."""

    min_margin: torch.Tensor
    x_adv: torch.Tensor

    @property
    def broken(self) -> torch.Tensor:
        return self.min_margin < 0


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, *,
               steps: int = 50, restarts: int = 1, step_factor: float = 2.5, loss: str = "margin",
               generator: torch.Generator | None = None) -> AttackResult:
    """Minimise the margin of ``model`` over the clipped box around ``x`` with per-pixel budgets.

    Args:
        model: classifier, B×C×H×W → B×K logits (used as is; put it in eval mode yourself).
        x: clean images B×C×H×W in [0, 1]; y: labels (B, int64).
        eps: budgets B×C×H×W ≥ 0 (pixel units).
        steps: PGD steps per restart (0 evaluates the clean point only).
        restarts: number of random starts (uniform in the box); the best of all is kept.
        step_factor: step size per pixel is ``step_factor · eps / steps``.
        loss: ``"margin"`` (maximise ``max_{j≠y} f_j − f_y``) or ``"ce"`` (cross-entropy).
        generator: torch RNG for the random starts (reproducibility).

    Returns:
        AttackResult with the smallest margin seen over the clean point and every iterate.
    """
    if loss not in ("margin", "ce"):
        raise ValueError(f"loss must be 'margin' or 'ce', got {loss!r}")
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got {steps}, {restarts}")
    x = x.detach()
    eps = eps.detach().to(x.dtype)
    lo, hi = input_box(x, eps)
    step = step_factor * eps / max(steps, 1)
    with torch.no_grad():
        best = min_margin(model(x), y)
    best_x = x.clone()

    def record(point: torch.Tensor, m: torch.Tensor) -> None:
        nonlocal best
        better = m < best
        if bool(better.any()):
            best = torch.where(better, m, best)
            best_x[better] = point[better]

    for _ in range(restarts if steps > 0 else 0):
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        point = lo + u * (hi - lo)
        for _ in range(steps):
            point.requires_grad_(True)
            logits = model(point)
            m = min_margin(logits, y)
            objective = -m.sum() if loss == "margin" else nn.functional.cross_entropy(logits, y, reduction="sum")
            grad, = torch.autograd.grad(objective, point)
            with torch.no_grad():
                record(point.detach(), m.detach())
                point = torch.max(torch.min(point.detach() + step * grad.sign(), hi), lo)
        with torch.no_grad():
            record(point, min_margin(model(point), y))
    return AttackResult(min_margin=best.detach(), x_adv=best_x)
