"""Where is the classifier blind, and do the budgets follow the image or park there?

A learned budget map can be large on a pixel for two reasons: the pixel carries no information
for *this image* (contextual, the paper's claim), or the classifier has stopped looking at that
pixel for *every image* (a position-fixed mask: the generator parks volume where the first layer
has zeroed its weights). These statistics tell the two apart:

* ``first_layer_mass`` (C×H×W): for every input dimension the total absolute weight of the
  classifier's first Conv2d/Linear layer that reads it (for a conv, the adjoint of the convolution
  with |W| applied to ones, by autograd; a Linear layer's column sums, after Flatten). Small = blind.
* ``input_gradient`` (N×C×H×W): |∂ logit_y / ∂x_i| per image (the classifier's local sensitivity).
* :func:`blindness_stats` correlates them with log ε(x) (Pearson, over dimensions):
  ``mass_corr`` — the mean log-budget map vs log first-layer mass (strongly negative: budgets
  parked where the classifier is blind); ``gradient_corr`` — the same against the mean log
  sensitivity; ``per_image_gradient_corr`` — per image, log ε(x) vs log |∂f/∂x|(x) with the
  per-dimension means removed from both (how far the *input-dependent* part of the budgets follows
  the *input-dependent* part of the classifier's attention); ``blind_share`` — the share of input
  dimensions whose first-layer mass is below 10 % of the mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import module_device

BLIND_FRACTION = 0.1       # mass < 10 % of the mean mass: a blind input dimension


def first_layer_mass(classifier: nn.Sequential, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """Absolute first-layer weight reading each input dimension, C×H×W (weights' units).

    The first ``Conv2d`` or ``Linear`` layer of ``classifier`` (layers before it — Normalize,
    Flatten, Identity — are skipped); ``ValueError`` if there is none."""
    c, h, w = input_shape
    for layer in classifier:
        if isinstance(layer, nn.Conv2d):
            weight = layer.weight.detach().abs().float()
            probe = torch.zeros(1, c, h, w, requires_grad=True)
            with torch.enable_grad():          # Σ over outputs of |W| · input = the adjoint applied to ones
                out = F.conv2d(probe, weight, stride=layer.stride, padding=layer.padding,
                               dilation=layer.dilation, groups=layer.groups)
                mass, = torch.autograd.grad(out.sum(), probe)
            return mass[0]
        if isinstance(layer, nn.Linear):
            if layer.in_features != c * h * w:
                raise ValueError(f"first Linear layer reads {layer.in_features} inputs, the images have {c * h * w}")
            return layer.weight.detach().abs().float().sum(0).view(c, h, w)
    raise ValueError("the classifier has no Conv2d or Linear layer")


def input_gradient(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|∂ logit_y / ∂x| for a batch: x B×C×H×W in [0, 1], y B labels → B×C×H×W on x's device
    (computed on the classifier's)."""
    dev = module_device(classifier)
    xd = x.detach().to(dev).clone().requires_grad_(True)
    with torch.enable_grad():
        logits = classifier(xd)
        picked = logits.gather(1, y.to(dev).view(-1, 1)).sum()
        grad, = torch.autograd.grad(picked, xd)
    return grad.abs().to(x.device)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else None


def blindness_stats(classifier: nn.Sequential, eps: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                    *, batch_size: int = 256) -> dict:
    """The statistics of the module docstring for budgets ``eps`` (N×C×H×W, pixel units) of
    ``images`` (N×C×H×W in [0, 1]) with labels ``labels`` (N); JSON-safe dict."""
    if eps.shape != images.shape or images.shape[0] < 2:
        raise ValueError(f"need ≥ 2 images and budgets of their shape, got {tuple(eps.shape)} and {tuple(images.shape)}")
    shape = tuple(int(s) for s in images.shape[1:])
    mass = first_layer_mass(classifier, shape).to(images.device)  # type: ignore[arg-type]
    grads = torch.cat([input_gradient(classifier, images[i:i + batch_size], labels[i:i + batch_size])
                       for i in range(0, len(images), batch_size)])
    log_eps = eps.double().clamp_min(1e-300).log()
    log_grad = grads.double().clamp_min(1e-12).log()
    mean_log_eps = log_eps.mean(0)
    eps_dev = log_eps - mean_log_eps
    grad_dev = log_grad - log_grad.mean(0)
    per_image = [_pearson(eps_dev[i], grad_dev[i]) for i in range(len(images))]
    valid = [r for r in per_image if r is not None]
    mean_mass = float(mass.mean())
    return {
        "mass_corr": _pearson(mean_log_eps, mass.double().clamp_min(1e-12).log()),
        "gradient_corr": _pearson(mean_log_eps, log_grad.mean(0)),
        "per_image_gradient_corr": sum(valid) / len(valid) if valid else None,
        "blind_share": float((mass < BLIND_FRACTION * mean_mass).double().mean()) if mean_mass > 0 else None,
        "mass_min_over_mean": float(mass.min()) / mean_mass if mean_mass > 0 else None,
        "n": int(images.shape[0]),
    }
