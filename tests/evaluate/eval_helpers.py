"""Shared fixtures of the evaluation tests: tiny models, a reference IBP bound function."""
from __future__ import annotations

import pytest
import torch
from torch import nn

SHAPE = (1, 6, 6)


def tiny_conv(seed: int = 0, classes: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, classes)).eval()


def ibp_margin_bounds(classifier, lo, hi, y, method):
    """Reference IBP (interval arithmetic per layer, last layer folded with e_y − e_j): sound,
    independent of ctxbudget.bounds. ``method`` is ignored."""
    c, r = (hi + lo) / 2, (hi - lo) / 2
    layers = list(classifier)
    for layer in layers[:-1]:
        if isinstance(layer, nn.Linear):
            c, r = layer(c), r @ layer.weight.abs().t()
        elif isinstance(layer, nn.Conv2d):
            c = layer(c)
            r = nn.functional.conv2d(r, layer.weight.abs(), None, layer.stride, layer.padding)
        elif isinstance(layer, nn.ReLU):
            l, u = (c - r).clamp_min(0), (c + r).clamp_min(0)
            c, r = (u + l) / 2, (u - l) / 2
        elif isinstance(layer, nn.Flatten):
            c, r = layer(c), layer(r)
        else:
            raise TypeError(layer)
    last = layers[-1]
    k = last.out_features
    eye = torch.eye(k, dtype=c.dtype)
    spec = eye[y].unsqueeze(1) - eye.unsqueeze(0)                         # B×K×K rows e_y − e_j
    keep = torch.ones(len(y), k, dtype=torch.bool)
    keep[torch.arange(len(y)), y] = False
    spec = spec[keep].view(len(y), k - 1, k)
    w = spec @ last.weight                                                # B×(K−1)×D
    b = spec @ last.bias
    return (w @ c.unsqueeze(-1)).squeeze(-1) + b - (w.abs() @ r.unsqueeze(-1)).squeeze(-1)


def engine_bound_fn():
    """The real engine (ctxbudget.bounds) if it is importable, else skip."""
    try:
        from ctxbudget.bounds import compute_bounds, margin_spec  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only while the engine is being written
        pytest.skip(f"ctxbudget.bounds not available: {exc}")
    from ctxbudget.evaluate import margin_lower_bounds
    return margin_lower_bounds


def make_images(n: int = 24, seed: int = 1) -> torch.Tensor:
    """n×1×6×6 images in [0, 1] with a black top row and a white bottom row (clipped boxes)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *SHAPE), generator=g)
    x[:, :, 0, :] = 0.0
    x[:, :, -1, :] = 1.0
    return x
