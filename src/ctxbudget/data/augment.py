"""Batched CIFAR-style augmentation: random crop with zero padding + random horizontal flip."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def augment_crop_flip(x: torch.Tensor, pad: int = 4, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Randomly crop and flip a batch.

    Each image of ``x`` (``N×C×H×W``, any float dtype/device) is zero-padded by ``pad`` pixels on
    every side, an ``H×W`` window at a uniformly random offset in ``{0..2·pad}²`` is taken, and
    the result is mirrored left-right with probability 1/2. Implemented with a single gather
    (advanced indexing) over the batch; no per-image Python loop. Deterministic for a given
    ``generator`` state (random numbers are drawn on the generator's device, then moved).

    Returns a new tensor of the same shape, dtype and device as ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"augment_crop_flip expects N×C×H×W, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if n == 0:
        return x.clone()
    gen_device = generator.device if generator is not None else torch.device("cpu")
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_device).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_device).to(x.device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=gen_device).to(x.device).bool()
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    rows = oy[:, None] + torch.arange(h, device=x.device)  # N×H
    cols = ox[:, None] + torch.arange(w, device=x.device)  # N×W
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bidx = torch.arange(n, device=x.device)[:, None, None, None]
    cidx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bidx, cidx, rows[:, None, :, None], cols[:, None, None, :]]
