"""One rule for "the exported model computes the same logits": :func:`check_logits`."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import UserError

#: Allowed |exported − PyTorch| per logit, relative to max(1, max |logit|) (float32 reassociation).
RTOL = 1e-4


def probe_inputs(input_shape: tuple[int, int, int], n: int = 8, seed: int = 0) -> torch.Tensor:
    """``n`` reproducible inputs in [0, 1] of shape n×C×H×W (the end points 0 and 1 included)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *input_shape), generator=g)
    x[0] = 0.0
    if n > 1:
        x[1] = 1.0
    return x


def check_logits(reference: nn.Module, x: torch.Tensor, exported: np.ndarray, what: str) -> float:
    """Max |exported − reference(x)|; ``UserError`` if it exceeds ``RTOL·max(1, max|logit|)``."""
    with torch.no_grad():
        ref = reference(x).detach().cpu().numpy().astype(np.float64)
    got = np.asarray(exported, dtype=np.float64)
    if got.shape != ref.shape:
        raise UserError(f"{what}: exported model returns shape {got.shape}, PyTorch {ref.shape}")
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    if not np.isfinite(diff) or diff > RTOL * scale:
        raise UserError(f"{what}: exported logits differ from PyTorch by {diff:.3g} (allowed {RTOL * scale:.3g})")
    return diff
