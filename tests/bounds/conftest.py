"""Shared helpers for the bound-engine tests: reference data, small networks, sampling, PGD."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
from torch import nn

from ctxbudget.models.classifiers import Normalize


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small networks: one thread (the root conftest's ``one_thread``)."""


REFERENCE_DIR = Path(__file__).resolve().parent / "reference"


def reference_dir() -> Optional[Path]:
    """The golden bound values (``*.pt``, computed with auto_LiRPA): ``$CTXBUDGET_REFERENCE`` (a folder
    holding the ``*.pt`` files or a ``bounds/`` folder of them) when set, else ``tests/bounds/reference``,
    which ships with the repository."""
    env = os.environ.get("CTXBUDGET_REFERENCE")
    cands = [Path(env) / "bounds", Path(env)] if env else [REFERENCE_DIR]
    for c in cands:
        if c.is_dir() and any(c.glob("*.pt")):
            return c.resolve()
    return None


def build_from_spec(spec) -> nn.Sequential:
    if isinstance(spec, str):
        spec = json.loads(spec)
    layers: list[nn.Module] = []
    for s in spec:
        if s[0] == "conv":
            layers.append(nn.Conv2d(s[1], s[2], s[3], stride=s[4], padding=s[5]))
        elif s[0] == "linear":
            layers.append(nn.Linear(s[1], s[2]))
        elif s[0] == "relu":
            layers.append(nn.ReLU())
        elif s[0] == "flatten":
            layers.append(nn.Flatten())
        else:
            raise ValueError(s)
    return nn.Sequential(*layers)


def small_conv_net(seed: int = 0, dtype=torch.float64, bn: bool = False, pool: bool = False,
                   num_classes: int = 5) -> nn.Sequential:
    """1×8×8 → a conv net exercising Normalize, stride/padding/dilation, (BN, AvgPool), Linear."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [Normalize([0.3], [0.7]), nn.Conv2d(1, 4, 3, stride=1, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1), nn.ReLU()]
    if pool:
        layers.append(nn.AvgPool2d(2))
        flat = 6 * 2 * 2
    else:
        layers.append(nn.Conv2d(6, 6, 2, stride=1, padding=1, dilation=2))  # 4×4 → 4×4
        layers.append(nn.ReLU())
        flat = 6 * 4 * 4
    layers += [nn.Flatten(), nn.Linear(flat, 16)]
    if bn:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.ReLU(), nn.Dropout(0.0), nn.Identity(), nn.Linear(16, num_classes)]
    net = nn.Sequential(*layers).to(dtype)
    if bn:
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def random_box(B: int, shape, seed: int = 0, dtype=torch.float64, scale: float = 0.1,
               zero_frac: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean x in [0,1], non-uniform eps (some zero), box clipped to [0,1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, *shape, generator=g, dtype=dtype)
    eps = scale * torch.rand(B, *shape, generator=g, dtype=dtype)
    if zero_frac:
        eps = eps * (torch.rand(B, *shape, generator=g, dtype=dtype) >= zero_frac)
    return x, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def sample_box(xl: torch.Tensor, xu: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n points per sample in the box (half of them corners): n×B×shape."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, *xl.shape, generator=g, dtype=xl.dtype)
    t[: n // 2] = t[: n // 2].round()
    return xl + t * (xu - xl)


def pgd(fn: Callable[[torch.Tensor], torch.Tensor], xl: torch.Tensor, xu: torch.Tensor, steps: int = 20,
        maximize: bool = True, seed: int = 0) -> torch.Tensor:
    """Projected sign-gradient ascent (or descent) of fn(x) (B×S, each entry separately via sum)
    inside the box; returns the per-entry best value found (B×S)."""
    g = torch.Generator().manual_seed(seed)
    x = (xl + torch.rand(xl.shape, generator=g, dtype=xl.dtype) * (xu - xl)).detach()
    step = (xu - xl) / 4
    sign = 1.0 if maximize else -1.0
    best = None
    for _ in range(steps):
        x.requires_grad_(True)
        v = fn(x)
        (gx,) = torch.autograd.grad(sign * v.sum(), x)
        with torch.no_grad():
            vd = v.detach()
            best = vd if best is None else (torch.maximum(best, vd) if maximize else torch.minimum(best, vd))
            x = torch.minimum(torch.maximum(x + step * gx.sign(), xl), xu)
            step = step * 0.85
    with torch.no_grad():
        v = fn(x)
        best = torch.maximum(best, v) if maximize else torch.minimum(best, v)
    return best


@pytest.fixture(scope="session")
def refdir() -> Path:
    """The reference folder; it ships in tests/bounds/reference, so a missing one is an error, not a skip."""
    d = reference_dir()
    env = os.environ.get("CTXBUDGET_REFERENCE")
    assert d is not None, (f"reference bounds not found in CTXBUDGET_REFERENCE={env}" if env
                           else f"reference bounds missing from {REFERENCE_DIR}")
    return d
