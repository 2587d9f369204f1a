"""The budget-generator network g_θ: the paper's dense head and two heads that follow the image.

``BudgetGenerator(input_shape, head=...)`` maps an image batch B×C×H×W in [0, 1] to scores
g ∈ (0, 1)^{B×C×H×W}; turning g into budgets (range and volume) is ``ctxbudget.budgets``' job.

* ``head="dense"`` (the paper, Appendix A): Conv(C→4, 3) → ReLU → Conv(4→8, 3) → ReLU → Flatten →
  Linear(8·H·W → C·H·W) → Sigmoid (padding 1 keeps the size; the paper does not state it). It sees
  the whole image, but its 4.9 M-weight Linear layer can also store one budget map for every image in
  its bias, and trained jointly with a stride-2 classifier it does: a position-fixed parity mask
  (see ``results/README.md``).
* ``head="conv"`` (local): the same two convolutions, then Conv(8→C, 3) → Sigmoid. Each budget
  depends on the 7×7 neighbourhood of its pixel; it cannot store a position-fixed map, but it cannot
  see a distant cue either.
* ``head="mix"`` (:class:`MixedHead`): the knob between the two: logits ``(1 − w)·context + w·dense``
  with ``w = mix`` in [0, 1] (``budget.generator_mix``); w = 0 computes exactly the context head,
  w = 1 exactly the dense head. ``mix_range = R`` (``budget.generator_mix_range``) bounds the dense
  part to ``R·tanh(dense/R)`` logits, so the position-fixed map can shift the context head's logits
  by at most ``w·R`` and cannot saturate the sigmoid on its own.
* ``head="context"`` (the default; see :class:`ContextHead`): local convolutions (9×9 receptive field)
  whose channels are modulated by a summary of the whole image, plus a coarse (about 7×7-pixel
  cells) map chosen from that summary, bounded to ±1 logit, and a learned ink prior. Budgets follow
  the local content, a distant cue (the border of the Doubled data sets) can move budget between
  image regions, and no fine position-fixed mask (such as a parity checkerboard) can be stored;
  ``padding="zeros"`` (``budget.generator_padding``) lets pixels near the border know it;
  ``resolution="half"`` (``budget.generator_resolution``) runs most of its local path on 2×2-pooled
  features (about half the generator's cost) with a full-resolution skip for detail; ``"low"`` runs
  all of it on the 2×2-pooled image.
"""
from __future__ import annotations

import math
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("context", "dense", "conv", "mix")
PADDINGS = ("replicate", "zeros")        # padding of the context head's convolutions
RESOLUTIONS = ("full", "half", "low")    # resolution of the context head's local path
DEFAULT_HEAD = "context"


#: largest magnitude (logits) of the context head's coarse map: enough to move budget between image
#: regions as a distant cue says (±1 logit ≈ ×4 in ε where u/l = 20), too little to be the whole map
#: (unbounded, it learned one fixed disc for every image on the quick start: share 0.6 %)
COARSE_RANGE = 1.0


#: the context head's ink prior: ``ink_weight · tanh(maxpool(x) / INK_SCALE)`` is added to its logits, with
#: ``ink_weight`` learned and started at ``INK_INIT`` — every lit pixel (x ≳ 0.1, a faint watermark
#: included) starts with a smaller budget than the blank background. Without it, the budgets start
#: uniform, and on Watermarked MNIST (``cpu`` schedule) the classifier lost the 30 %-opacity
#: watermark in the first ramp epochs and never relearned it (52 % clean error at ε0 = 0.09).
INK_SCALE = 0.1
INK_INIT = -2.0
#: the prior reads the brightest pixel of the 5×5 neighbourhood (stride 1): the dark pixels between
#: and around faint strokes (inside the 8×8 watermark) start protected too; with the pixel alone the
#: classifier still lost the watermark (54 % clean error at ε0 = 0.12)
INK_POOL = 5


def max_pool_same(x: torch.Tensor, k: int) -> torch.Tensor:
    """k×k max pool, stride 1, output the size of ``x`` (B×C×H×W, k odd), as maxima of shifted views.

    Equal to ``F.max_pool2d(x, k, stride=1, padding=k // 2)`` value for value (a maximum is exact), about
    30× faster on the CPU (torch's stride-1 max pool: 15.6 vs 0.5 ms on 256 MNIST images, one thread)."""
    p = k // 2
    padded = F.pad(x, (p, p, p, p), value=float("-inf"))

    def along(v: torch.Tensor, dim: int) -> torch.Tensor:
        n = v.shape[dim] - 2 * p
        out = v.narrow(dim, 0, n)
        for i in range(1, k):
            out = torch.maximum(out, v.narrow(dim, i, n))
        return out

    return along(along(padded, 3), 2)


def pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a 1×1 convolution (groups 1, stride 1, no padding) as a sum of per-channel
    products: x B×Ci×H×W → B×Co×H×W, in ``x``'s dtype (as ``conv`` gives under bf16 autocast; the
    products and sums are float32 or better). Same values up to summation order; on the CPU about
    1.6–1.9× faster than oneDNN's 1×1 convolution for the few channels of the heads (16→1 at 28×28,
    batch 256, forward + backward, one thread: ``benchmarks/bench_kernels.py``)."""
    w = conv.weight[:, :, 0, 0]                                           # Co×Ci
    x32 = x if x.dtype in (torch.float32, torch.float64) else x.float()
    outs = [(x32 * w[o].to(x32.dtype).view(1, -1, 1, 1)).sum(1) for o in range(w.shape[0])]
    out = torch.stack(outs, 1)
    if conv.bias is not None:
        out = out + conv.bias.to(out.dtype).view(1, -1, 1, 1)
    return out.to(x.dtype)


def _interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """n_out×n_in weights of 1-D linear interpolation (``align_corners=False``), read off
    ``F.interpolate`` itself (in ``dtype``) so that both use the same rule."""
    eye = torch.eye(n_in, dtype=dtype, device=device).view(n_in, 1, n_in)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False).view(n_in, n_out).t().contiguous()


_interpolation_cache: dict[tuple[int, int, torch.dtype, str], torch.Tensor] = {}


def upsample_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` (B×C×h×w → B×C×H×W, in x's
    dtype) as two matrix products (float32, or float64 for float64 input) with the separable
    interpolation weights. Same values up to summation order; on the CPU 1.8–3.9× faster forward +
    backward than the bilinear kernel for the heads' one-channel maps (``benchmarks/bench_kernels.py``)."""
    (h, w), (H, W) = x.shape[2:], size
    with torch.autocast(x.device.type, enabled=False):
        x32 = x if x.dtype in (torch.float32, torch.float64) else x.float()
        mats = []
        for n_in, n_out in ((h, H), (w, W)):
            key = (n_in, n_out, x32.dtype, str(x.device))
            if key not in _interpolation_cache:
                _interpolation_cache[key] = _interpolation_matrix(n_in, n_out, x32.dtype, x.device)
            mats.append(_interpolation_cache[key])
        out = torch.matmul(torch.matmul(mats[0], x32), mats[1].t())
    return out.to(x.dtype)


def coarse_grid(h: int, w: int, cell: int = 7) -> tuple[int, int]:
    """Cells of the context head's coarse map: about ``cell`` pixels per cell, at least 1."""
    return max(1, round(h / cell)), max(1, round(w / cell))


class ContextHead(nn.Module):
    """Local features modulated by global context: B×C×H×W images → B×C×H×W logits.

    * local path: Conv(C→8, 3) → ReLU → Conv(8→16, 3) → ReLU → Conv(16→16, 3, dilation 2) → ReLU
      (9×9 receptive field), replicate padding: translation-equivariant, and blank pixels at the
      border look like blank pixels anywhere (with zero padding the head learned a fixed frame of
      large budgets along the border: 8 % share on the quick start);
    * context vector z (32): the local features averaged over the image (16) and the image
      average-pooled to 4×4 cells (C·16), through Linear → ReLU;
    * FiLM: per-channel scale and shift of the local features from z (Linear(32 → 2·16));
    * coarse map: ``COARSE_RANGE · tanh(Linear(32 → C·gh·gw))``, bilinearly upsampled to H×W and
      added to the logits (gh×gw from :func:`coarse_grid`, 4×4 on MNIST): it can move budget between
      regions of an image as the context says, but has no resolution for a pixel-level mask and,
      bounded to ±1 logit, cannot replace the local map by one fixed coarse map;
    * ink prior: ``w · tanh(maxpool5×5(x) / 0.1)``, one learned weight w started at −2 (lit pixels and
      their 5×5 neighbourhood start with smaller budgets than the background; see :data:`INK_INIT`);
    * output: Conv(16→C, 1) + coarse map + ink prior.

    ``resolution="half"``: the first convolution runs at full resolution; its features are average-pooled
    2×2 (⌈H/2⌉×⌈W/2⌉) and the rest of the local path (the third convolution without dilation), FiLM and
    the output convolution run there; their logits plus the coarse map are bilinearly upsampled to
    H×W, and a full-resolution skip, Conv(8→C, 1) of the first convolution's features (``skip``,
    started at zero), adds pixel-level detail; the ink prior stays at full resolution. Receptive field
    about 12×12 pixels (with the dilation kept, 20×20, the quick start learned one blob over each digit
    instead of its strokes: input-dependent share 10 % instead of 27 %). Nothing in it can store a fine
    position-fixed map either: the upsampled logits are smooth, the skip and the prior are
    translation-equivariant.

    ``resolution="low"``: as ``half``, but the first convolution too runs on the 2×2-average-pooled image,
    and the full-resolution skip is Conv(C→C, 1) of the image itself: no multi-channel tensor at full
    resolution is left (the generator step about 1.6× cheaper than ``half``, ``benchmarks/README.md``);
    pixel-level detail comes from the skip and the ink prior. Receptive field about 14×14 pixels.

    The FiLM and coarse layers start at zero, so training starts from the local head and the prior.
    """

    def __init__(self, input_shape: tuple[int, int, int], width: int = 16, context: int = 32,
                 padding: str = "replicate", resolution: str = "full") -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
        c, h, w = input_shape
        self.size = (h, w)
        self.resolution = resolution
        self.half_resolution = resolution in ("half", "low")
        self.local_size = ((h + 1) // 2, (w + 1) // 2) if self.half_resolution else (h, w)
        self.grid = coarse_grid(h, w)
        # replicate padding: zero padding tells pixels within a few pixels of the border where they are
        mode: Literal["replicate", "zeros"] = "replicate" if padding == "replicate" else "zeros"
        self.local = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1, padding_mode=mode), nn.ReLU(),
                                   nn.Conv2d(8, width, 3, padding=1, padding_mode=mode), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1 if self.half_resolution else 2,
                                             dilation=1 if self.half_resolution else 2, padding_mode=mode),
                                   nn.ReLU())
        self.summary = nn.Sequential(nn.Linear(width + c * 16, context), nn.ReLU())
        self.film = nn.Linear(context, 2 * width)
        self.coarse = nn.Linear(context, c * self.grid[0] * self.grid[1])
        for layer in (self.film, self.coarse):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.out = nn.Conv2d(width, c, 1)
        self.skip: nn.Module | None = None
        if self.half_resolution:
            skip = nn.Conv2d(c if resolution == "low" else 8, c, 1)
            nn.init.zeros_(skip.weight)
            nn.init.zeros_(cast(torch.Tensor, skip.bias))
            self.skip = skip
        self.ink_weight = nn.Parameter(torch.tensor(INK_INIT))
        self.channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.skip is None:
            feats = self.local(x)                                              # B×width×H×W
        elif self.resolution == "low":
            first = x                                                          # the skip reads the pixels
            feats = self.local(F.avg_pool2d(x, 2, ceil_mode=True))             # B×width×⌈H/2⌉×⌈W/2⌉
        else:
            first = self.local[1](self.local[0](x))                            # B×8×H×W
            feats = self.local[2:](F.avg_pool2d(first, 2, ceil_mode=True))     # B×width×⌈H/2⌉×⌈W/2⌉
        pooled = torch.cat([feats.mean(dim=(2, 3)), F.adaptive_avg_pool2d(x, 4).flatten(1)], dim=1)
        z = self.summary(pooled)                                               # B×context
        scale, shift = self.film(z).chunk(2, dim=1)
        feats = feats * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        coarse = COARSE_RANGE * torch.tanh(self.coarse(z)).view(b, self.channels, *self.grid)
        coarse = upsample_bilinear(coarse, self.local_size)
        logits = pointwise_conv(self.out, feats) + coarse                      # B×C×h×w
        if self.skip is not None:
            logits = upsample_bilinear(logits, self.size) + pointwise_conv(cast(nn.Conv2d, self.skip), first)
        ink = max_pool_same(x, INK_POOL)
        return logits + self.ink_weight * torch.tanh(ink / INK_SCALE)


def _two_convs(channels: int, hidden_channels: tuple[int, int]) -> list[nn.Module]:
    """The paper's feature stack, shared by the dense and conv heads: Conv(C→c1, 3) → ReLU → Conv(c1→c2, 3)
    → ReLU, padding 1 (the size is kept)."""
    c1, c2 = hidden_channels
    return [nn.Conv2d(channels, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU()]


def dense_logits(input_shape: tuple[int, int, int], hidden_channels: tuple[int, int] = (4, 8)
                 ) -> tuple[nn.Sequential, nn.Linear]:
    """The paper's dense head before its Sigmoid: (features, Linear), B×C×H×W → B×(C·H·W) logits."""
    c, h, w = input_shape
    features = nn.Sequential(*_two_convs(c, hidden_channels), nn.Flatten())
    return features, nn.Linear(hidden_channels[1] * h * w, c * h * w)


class MixedHead(nn.Module):
    """Logits ``(1 − mix)·context(x) + mix·dense(x)`` (B×C×H×W): the knob between the default head,
    which cannot store a position-fixed map, and the paper's, which can (and does: a parity mask).

    ``context`` is a :class:`ContextHead`, ``dense_features`` / ``dense`` the dense head's layers
    (:func:`dense_logits`). A side whose weight is 0 is not computed, so ``mix = 0`` is the context
    head and ``mix = 1`` the dense head, value for value, given their weights. ``mix_range`` (logits,
    > 0, or None: unbounded) replaces the dense logits d by ``mix_range·tanh(d / mix_range)``.
    """

    def __init__(self, input_shape: tuple[int, int, int], mix: float, hidden_channels: tuple[int, int] = (4, 8),
                 padding: str = "replicate", resolution: str = "full", mix_range: float | None = None) -> None:
        super().__init__()
        mix = float(mix)
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"mix must lie in [0, 1], got {mix}")
        if mix_range is not None and not (math.isfinite(float(mix_range)) and float(mix_range) > 0):
            raise ValueError(f"mix_range must be a positive number (logits) or None, got {mix_range}")
        self.mix = mix
        self.mix_range = None if mix_range is None else float(mix_range)
        self.context = ContextHead(input_shape, padding=padding, resolution=resolution)
        self.dense_features, self.dense = dense_logits(input_shape, hidden_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mix == 0.0:
            return self.context(x)
        dense = self.dense(self.dense_features(x)).view_as(x)
        if self.mix_range is not None:
            dense = self.mix_range * torch.tanh(dense / self.mix_range)
        if self.mix == 1.0:
            return dense
        return (1.0 - self.mix) * self.context(x) + self.mix * dense


class BudgetGenerator(nn.Module):
    """g_θ: B×C×H×W images → B×C×H×W scores in (0, 1); ``head`` one of :data:`HEADS`."""

    def __init__(self, input_shape: tuple[int, int, int], hidden_channels: tuple[int, int] = (4, 8),
                 head: str = DEFAULT_HEAD, padding: str = "replicate", resolution: str = "full",
                 mix: float = 0.5, mix_range: float | None = None) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"generator head must be one of {', '.join(HEADS)}, got {head!r}")
        c, h, w = (int(v) for v in input_shape)
        self.input_shape = (c, h, w)
        self.head_kind = head
        self.features: nn.Module
        self.head: nn.Module
        if head == "context":
            self.features = nn.Identity()
            self.head = ContextHead(self.input_shape, padding=padding, resolution=resolution)
            return
        if head == "mix":
            self.features = nn.Identity()
            self.head = MixedHead(self.input_shape, mix, hidden_channels, padding=padding, resolution=resolution,
                                  mix_range=mix_range)
            return
        if head == "dense":
            self.features, self.head = dense_logits(self.input_shape, hidden_channels)
        else:
            self.features = nn.Sequential(*_two_convs(c, hidden_channels))
            self.head = nn.Conv2d(hidden_channels[1], c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"BudgetGenerator expects B×{'×'.join(map(str, self.input_shape))} input, got {tuple(x.shape)}")
        return torch.sigmoid(self.head(self.features(x))).view_as(x)


def num_weights(module: nn.Module) -> int:
    """Number of trainable scalars of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["COARSE_RANGE", "INK_INIT", "INK_POOL", "INK_SCALE", "BudgetGenerator", "ContextHead", "DEFAULT_HEAD",
           "MixedHead", "dense_logits",
           "HEADS", "PADDINGS", "RESOLUTIONS", "coarse_grid", "max_pool_same", "num_weights"]
