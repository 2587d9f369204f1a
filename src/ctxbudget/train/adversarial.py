"""The adversarial term of MTL-IBP (De Palma et al., ICLR 2024) on a per-pixel box.

MTL-IBP trains on ``α·L_bound + (1 − α)·CE(f(x_adv), y)``. Here the box is the clipped per-pixel
box ``[clip(x − ε(x)), clip(x + ε(x))]`` of :func:`ctxbudget.budgets.input_box`, and the adversarial
point is written relative to the budgets::

    x_adv = clip(x + ε(x) ⊙ t),   t ∈ [−1, 1]^n

PGD searches t without gradients to the weights or the generator (:func:`pgd_offsets`); the loss
then recomputes ``x_adv`` from the budgets with gradient, so ``∂CE(f(x_adv))/∂ε_i = t_i·∂CE/∂x_i``
(where x_adv is not clipped) reaches the generator. For every t in [−1, 1] the point lies in the
box exactly, also in floating point (rounding is monotone and ``ε·1 = ε``).

PGD (sign steps, as in the authors' code): t starts uniform in [−1, 1]; each step
``t ← clamp(t + s·sign(∂CE/∂x_adv), −1, 1)`` moves pixel i by s·ε_i (``loss.attack_step_size`` = s;
the authors step by s times the clipped box's half-width); the iterate with the highest loss per
example is returned (with one step, the stepped point, as theirs).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..budgets import clip01


def adversarial_point(x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """``clip(x + ε ⊙ t)`` (B×C×H×W, pixel units); inside ``input_box(x, ε)`` for t ∈ [−1, 1]."""
    return clip01(x + eps * t)


def pgd_offsets(forward: Callable[[Tensor], Tensor], x: Tensor, eps: Tensor, y: Tensor, steps: int = 1,
                step_size: float = 10.0) -> Tensor:
    """Offsets t ∈ [−1, 1] (shape of x, detached) of a PGD attack on the cross-entropy of
    ``forward`` (B×C×H×W → B×K logits) inside ``input_box(x, eps)``; labels y (B).

    Only the attack's own input receives gradients (``torch.autograd.grad``): parameter ``.grad``
    fields are not touched. The random start is drawn from torch's global CPU generator (saved in checkpoints, so a
    resumed run draws the same starts on any device).
    """
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    x, eps = x.detach(), eps.detach()
    t = torch.rand(x.shape, dtype=x.dtype).to(x.device).mul_(2).sub_(1)
    best_t, best_loss = t, torch.full((len(x),), -torch.inf, dtype=x.dtype, device=x.device)
    view = (-1,) + (1,) * (x.dim() - 1)
    with torch.enable_grad():
        for i in range(steps + 1):
            if i == steps and steps == 1:
                return t
            xa = adversarial_point(x, eps, t).requires_grad_(True)
            loss = F.cross_entropy(forward(xa), y, reduction="none")
            better = loss.detach() >= best_loss
            best_t = torch.where(better.view(view), t, best_t)
            best_loss = torch.where(better, loss.detach(), best_loss)
            if i == steps:
                break
            (g,) = torch.autograd.grad(loss.sum(), xa)
            t = (t + step_size * g.sign()).clamp_(-1.0, 1.0)
    return best_t
