"""Synthetic data sets built on the fly from a base set (the paper's Tables 3 and 4). Both are deterministic
for a given ``seed`` and fully vectorised with torch.

Watermarked MNIST (1×28×28, 20 classes) — :func:`watermark`
    For each base image x with digit d:
    1. draw b ∈ {0, 1} uniformly; draw a uniformly random image of digit b from the *pool*
       (by default the base split itself);
    2. scale that image 28×28 → 12×12 with area interpolation
       (``F.interpolate(mode="area")``, i.e. adaptive average pooling), and crop 2 pixels from
       each border → the inner 8×8 ``mark`` (values in [0, 1]);
    3. draw the side (left margin = columns 0..7, right margin = columns 20..27) uniformly and the
       top row s ∈ {0..20} uniformly; the mark covers rows s..s+7 of that margin;
    4. composite with 30 % opacity as ``out = max(x, 0.3·mark)`` inside the 8×8 box (x is
       unchanged elsewhere, so out stays in [0, 1] and the mark shows as a dim digit on the
       dark margin);
    5. label = d + 10·b  (classes ``"d/w0"`` for 0..9 and ``"d/w1"`` for 10..19).
    ``regions`` marks the 8×8 watermark box.

Doubled CIFAR-10 (3×36×64, 10 classes) — :func:`doubled`
    For each base image i: draw a partner j ≠ i uniformly (j = i only if N = 1); the base image
    goes on the left (columns 0..31), the partner on the right (columns 32..63), both in rows
    4..35; rows 0..3 are a border coloured red (1,0,0) or green (0,1,0), drawn uniformly.
    Label = label of the left image if red, of the right image if green. ``regions`` marks the
    whole 4×64 border plus the attended 32×32 half.

Random numbers come from a ``torch.Generator`` seeded with ``seed``, drawn in a fixed order, so
equal inputs and seeds give equal outputs.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

MARK_SCALE = 12
MARK_CROP = 2
MARK_SIZE = MARK_SCALE - 2 * MARK_CROP  # 8
OPACITY = 0.3
BORDER = 4
RED = (1.0, 0.0, 0.0)
GREEN = (0.0, 1.0, 0.0)


def make_marks(images: torch.Tensor) -> torch.Tensor:
    """``M×1×28×28`` in [0,1] → 8×8 marks ``M×1×8×8`` (area-scaled to 12×12, 2-pixel border cropped)."""
    small = F.interpolate(images.to(torch.float32), size=(MARK_SCALE, MARK_SCALE), mode="area")
    return small[:, :, MARK_CROP:MARK_CROP + MARK_SIZE, MARK_CROP:MARK_CROP + MARK_SIZE]


def watermark(
    images: torch.Tensor,
    labels: torch.Tensor,
    seed: int = 0,
    pool_images: Optional[torch.Tensor] = None,
    pool_labels: Optional[torch.Tensor] = None,
    opacity: float = OPACITY,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build watermarked MNIST from ``images`` (``N×1×28×28`` float in [0,1]) and ``labels`` (``N``).

    The marks are MNIST images of digit 0 or 1 taken from ``pool_images``/``pool_labels``
    (default: the base set). Returns ``(images N×1×28×28 float32, labels N int64 in 0..19,
    regions N×1×28×28 bool)``; see the module docstring for the construction.
    """
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"watermark expects N×1×28×28 images, got {tuple(images.shape)}")
    if pool_images is None:
        pool_images, pool_labels = images, labels
    assert pool_labels is not None
    n = images.shape[0]
    g = torch.Generator().manual_seed(int(seed))
    bits = torch.randint(0, 2, (n,), generator=g)
    side = torch.randint(0, 2, (n,), generator=g)
    top = torch.randint(0, 28 - MARK_SIZE + 1, (n,), generator=g)
    pools = []
    for digit in (0, 1):
        idx = torch.nonzero(pool_labels == digit).flatten()
        if idx.numel() == 0:
            raise ValueError(f"the watermark pool holds no image of digit {digit}")
        pools.append(idx)
    pick0 = pools[0][torch.randint(0, pools[0].numel(), (n,), generator=g)]
    pick1 = pools[1][torch.randint(0, pools[1].numel(), (n,), generator=g)]
    pick = torch.where(bits == 1, pick1, pick0)

    # Scale only the pool images that are used (each at most once).
    used, inverse = torch.unique(pick, return_inverse=True)
    marks = make_marks(pool_images[used])[inverse]  # N×1×8×8

    canvas = torch.zeros(n, 1, 28, 28, dtype=torch.float32)
    regions = torch.zeros(n, 1, 28, 28, dtype=torch.bool)
    rows = top[:, None] + torch.arange(MARK_SIZE)  # N×8
    cols = side[:, None] * (28 - MARK_SIZE) + torch.arange(MARK_SIZE)  # N×8
    bidx = torch.arange(n)[:, None, None]
    canvas[bidx, 0, rows[:, :, None], cols[:, None, :]] = marks[:, 0]
    regions[bidx, 0, rows[:, :, None], cols[:, None, :]] = True
    out = torch.maximum(images.to(torch.float32), opacity * canvas)
    new_labels = labels.to(torch.int64) + 10 * bits
    return out, new_labels, regions


def doubled(
    images: torch.Tensor, labels: torch.Tensor, seed: int = 0, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build doubled CIFAR-10 from ``images`` (``N×3×32×32`` float in [0,1]) and ``labels`` (``N``).

    Returns ``(images N×3×36×64 float32, labels N int64, regions N×1×36×64 bool)``; see the module
    docstring. The output is filled in chunks of ``chunk`` images to bound temporary memory.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"doubled expects N×3×H×W images, got {tuple(images.shape)}")
    n, c, h, w = images.shape
    g = torch.Generator().manual_seed(int(seed))
    if n > 1:
        partner = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n
    else:
        partner = torch.zeros(n, dtype=torch.int64)
    green = torch.randint(0, 2, (n,), generator=g).bool()
    out = torch.empty(n, c, h + BORDER, 2 * w, dtype=torch.float32)
    colours = torch.where(green[:, None], torch.tensor(GREEN), torch.tensor(RED))  # N×3
    out[:, :, :BORDER, :] = colours[:, :, None, None]
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        out[s:e, :, BORDER:, :w] = images[s:e]
        out[s:e, :, BORDER:, w:] = images[partner[s:e]]
    labels = labels.to(torch.int64)
    new_labels = torch.where(green, labels[partner], labels)
    regions = torch.zeros(n, 1, h + BORDER, 2 * w, dtype=torch.bool)
    regions[:, :, :BORDER, :] = True
    regions[~green, :, BORDER:, :w] = True
    regions[green, :, BORDER:, w:] = True
    return out, new_labels, regions
