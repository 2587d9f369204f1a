"""Classifiers of the DeepMind / CROWN-IBP family as plain ``nn.Sequential``.

Every model is built from the layer set the bound engine supports: ``Normalize`` (first layer,
per-channel affine in pixel space [0, 1]), ``Conv2d``, ``ReLU``, ``Flatten``, ``Linear`` and, in the
``-bn`` variants, ``BatchNorm2d/1d``. Architectures are the DM-small/medium/large family of Gowal et
al. (2018) as used by CROWN-IBP (Zhang et al., 2020); ``dm-small-bn`` and ``dm-medium-bn`` add a
BatchNorm after every convolution and hidden linear layer (before its ReLU; not after the last
layer), as Shi et al. (2021, "Fast Certified Robust Training with Short Warmup") do for IBP
training. ``dm-small-px`` (and ``-px-bn``) put a pixel stem in front of DM-small: a 1×1
convolution to 8 channels and a ReLU, with which the network can threshold single pixels (not in
the paper; for large learned volumes, see docs/method.md). The flatten size is computed from the
input shape, so any (C, H, W) and class count works. Custom architectures are added with
:func:`register_model`. :func:`ibp_init_` is Shi et al.'s IBP initialisation.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

Shape = tuple[int, int, int]


class Normalize(nn.Module):
    """Per-channel affine ``(x - mean) / std`` on a B×C×H×W (or B×C) tensor.

    ``mean`` and ``std`` are buffers of shape (C,); they move with ``.to()`` and are saved in the
    state dict. With mean 0 and std 1 it is the identity (used for MNIST).
    """

    if TYPE_CHECKING:  # buffer types for type checkers; not class annotations TorchScript would read
        mean: torch.Tensor
        std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.shape != std_t.shape or mean_t.dim() != 1:
            raise ValueError(f"mean and std must be 1-D of equal length, got {tuple(mean_t.shape)} and {tuple(std_t.shape)}")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``t`` (C,) as 1×C×1×…×1 to broadcast against ``x`` (written so TorchScript can compile it)."""
        shape = [1] * x.dim()
        shape[1] = -1
        return t.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._view(self.mean, x)) / self._view(self.std, x)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _conv_stack(input_shape: Shape, convs: Sequence[tuple[int, int, int, int]],
                bn: bool = False) -> tuple[list[nn.Module], int]:
    """Conv(+BatchNorm2d)+ReLU layers for ``convs`` = [(out, k, stride, pad), ...]; returns layers and flat size."""
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out, k, s, p in convs:
        layers += [nn.Conv2d(c, out, k, stride=s, padding=p), *([nn.BatchNorm2d(out)] if bn else []), nn.ReLU()]
        c, h, w = out, _conv_out(h, k, s, p), _conv_out(w, k, s, p)
        if h <= 0 or w <= 0:
            raise ValueError(f"input shape {input_shape} is too small for this architecture")
    return layers, c * h * w


def _build(input_shape: Shape, num_classes: int, convs, hidden: Sequence[int],
           mean: Sequence[float] | None, std: Sequence[float] | None, bn: bool = False) -> nn.Sequential:
    input_shape = tuple(int(v) for v in input_shape)  # type: ignore[assignment]
    if len(input_shape) != 3 or min(input_shape) <= 0:
        raise ValueError(f"input_shape must be (C, H, W) with positive entries, got {input_shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    channels = input_shape[0]
    mean = [0.0] * channels if mean is None else list(mean)
    std = [1.0] * channels if std is None else list(std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std need {channels} entries (one per channel), got {len(mean)}/{len(std)}")
    layers, flat = _conv_stack(input_shape, convs, bn)
    body: list[nn.Module] = [Normalize(mean, std), *layers, nn.Flatten()]
    width = flat
    for h in hidden:
        body += [nn.Linear(width, h), *([nn.BatchNorm1d(h)] if bn else []), nn.ReLU()]
        width = h
    body.append(nn.Linear(width, num_classes))
    return nn.Sequential(*body)


_SMALL = ([(16, 4, 2, 0), (32, 4, 1, 0)], [100])
_PIXEL_STEM = [(8, 1, 1, 0)]
_MEDIUM = ([(32, 3, 1, 0), (32, 4, 2, 0), (64, 3, 1, 0), (64, 4, 2, 0)], [512, 512])


def dm_small(input_shape: Shape, num_classes: int, mean=None, std=None) -> nn.Sequential:
    """DM-small: Conv(16,4,2,0) → Conv(32,4,1,0) → Linear(100) → Linear(classes)."""
    return _build(input_shape, num_classes, *_SMALL, mean, std)


def dm_small_bn(input_shape: Shape, num_classes: int, mean=None, std=None) -> nn.Sequential:
    """DM-small with BatchNorm: Conv(16,4,2,0) → BN → Conv(32,4,1,0) → BN → Linear(100) → BN → Linear(classes)."""
    return _build(input_shape, num_classes, *_SMALL, mean, std, bn=True)


def dm_small_px(input_shape: Shape, num_classes: int, mean=None, std=None) -> nn.Sequential:
    """DM-small behind a pixel stem: Conv(8,1,1,0) → Conv(16,4,2,0) → Conv(32,4,1,0) → Linear(100) →
    Linear(classes). The 1×1 convolution and its ReLU let the first layer threshold each pixel
    (relu(w·x + b)); interval bounds through it are exact per pixel."""
    return _build(input_shape, num_classes, _PIXEL_STEM + _SMALL[0], _SMALL[1], mean, std)


def dm_small_px_bn(input_shape: Shape, num_classes: int, mean=None, std=None) -> nn.Sequential:
    """``dm-small-px`` with a BatchNorm after every convolution and the hidden linear layer."""
    return _build(input_shape, num_classes, _PIXEL_STEM + _SMALL[0], _SMALL[1], mean, std, bn=True)


def dm_medium(input_shape: Shape, num_classes: int, mean=None, std=None) -> nn.Sequential:
    """DM-medium: Conv(32,3,1,0) → Conv(32,4,2,0) → Conv(64,3,1,0) → Conv(64,4,2,0) → 512 → 512 → classes."""
    return _build(input_shape, num_classes, *_MEDIUM, mean, std)


def dm_medium_bn(input_shape: Shape, num_classes: int, mean=None, std=None) -> nn.Sequential:
    """DM-medium with a BatchNorm after each of its four convolutions and two hidden linear layers."""
    return _build(input_shape, num_classes, *_MEDIUM, mean, std, bn=True)


def dm_large(input_shape: Shape, num_classes: int, mean=None, std=None) -> nn.Sequential:
    """DM-large (CROWN-IBP ``IBP_large``): 5 convs (64,64,128s2,128,128; k=3, pad 1) → 512 → classes."""
    return _build(input_shape, num_classes,
                  [(64, 3, 1, 1), (64, 3, 1, 1), (128, 3, 2, 1), (128, 3, 1, 1), (128, 3, 1, 1)],
                  [512], mean, std)


MODELS: dict[str, Callable[..., nn.Sequential]] = {
    "dm-small": dm_small,
    "dm-medium": dm_medium,
    "dm-large": dm_large,
    "dm-small-bn": dm_small_bn,
    "dm-medium-bn": dm_medium_bn,
    "dm-small-px": dm_small_px,
    "dm-small-px-bn": dm_small_px_bn,
}

INITS = ("default", "ibp")


def ibp_init_(model: nn.Module) -> None:
    """Shi et al. (2021) IBP initialisation, in place: every Conv2d/Linear weight but the last
    layer's is drawn from N(0, σ²) with σ = √(2π)/fan_in (fan_in = in_channels·k_h·k_w for a
    convolution, in_features for a linear layer), which keeps the expected IBP bound width of a
    layer equal to its input's at initialisation. Biases, BatchNorm parameters and the last layer
    keep PyTorch's default initialisation (as in the authors' code)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for m in layers[:-1]:
            fan_in = m.weight[0].numel()
            m.weight.normal_(0.0, math.sqrt(2 * math.pi) / fan_in)


def initialize_(model: nn.Module, init: str) -> None:
    """Apply the config's ``model.init`` (one of :data:`INITS`; "default" leaves PyTorch's)."""
    if init == "ibp":
        ibp_init_(model)
    elif init != "default":
        raise ValueError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")


def _model_key(name: str) -> str:
    return name.lower().replace("_", "-")


def register_model(name: str, builder: Callable[..., nn.Sequential]) -> None:
    """Make ``builder`` available as ``model.name: NAME`` in configs (replaces an existing entry).

    ``builder(input_shape, num_classes, mean=…, std=…)`` must return an ``nn.Sequential`` of layers
    the bound engine supports (``ctxbudget.bounds.compute_bounds``); ``input_shape`` is (C, H, W),
    ``mean``/``std`` the data set's per-channel statistics (pixel units) for a leading
    ``Normalize``. Registration lives in the Python process: register again before ``load_run``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise TypeError(f"builder must be callable (input_shape, num_classes, mean=, std=), got {type(builder).__name__}")
    MODELS[_model_key(name)] = builder


def get_model(name: str, input_shape: Shape, num_classes: int, mean=None, std=None) -> nn.Sequential:
    """Build a registered classifier by name (``dm-small``, ``dm-medium``, ``dm-large``,
    ``dm-small-bn``, ``dm-medium-bn``, or one added with :func:`register_model`).

    ``mean``/``std`` (per channel, pixel units) configure the leading ``Normalize`` layer; the
    default is the identity.
    """
    key = _model_key(name)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)} (or register_model)")
    model = MODELS[key](input_shape, num_classes, mean=mean, std=std)
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model {name!r} must be built as an nn.Sequential, got {type(model).__name__}")
    return model
