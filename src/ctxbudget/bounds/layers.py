"""Per-layer rules of the bound engine: IBP (centre/radius) and backward (A-matrix) propagation.

A model (``nn.Sequential``) is parsed into a flat list of *ops*. Every op knows, for one sample
shape, how to

- ``forward(x)``: the clean forward pass (x: B×in_shape → B×out_shape);
- ``ibp(c, r)``: map a box in centre/radius form (B×in_shape each) to the box of its output;
- ``backward(A)`` (affine ops only): given linear coefficients ``A`` of shape B×S×out_shape on the
  op's output, return the coefficients on its input (B×S×in_shape) and the constant term the op
  contributes, shape B×S (or ``None``).

ReLU is the only non-linear op; its rules (interval image, linear relaxation with chord upper line
and adaptive lower slope, backward substitution) live in :mod:`ctxbudget.bounds.relu`.

Supported modules: ``Normalize`` (any module with buffers ``mean``/``std`` of shape (C,)),
``Conv2d`` (groups=1, zero padding), ``Linear``, ``ReLU``, ``Flatten``, ``BatchNorm1d/2d``,
``AvgPool2d`` (count_include_pad=True, no ceil_mode, no divisor_override), ``Identity`` and
``Dropout`` (eval mode or p = 0: the identity; in training mode a ValueError). BatchNorm in eval
mode needs running statistics (``track_running_stats=False`` is a ValueError: PyTorch would use
each batch's statistics); in training mode it uses the clean batch ``x`` given to the engine. Nested
``nn.Sequential`` containers are flattened. Anything else raises ``TypeError`` naming the layer.
"""
from __future__ import annotations

from typing import Optional, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import conv
from .relu import ibp_relu

Shape = tuple[int, ...]


class Op:
    """Base class of a parsed layer. ``name`` identifies the module (index and class)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.in_shape: Shape = ()
        self.out_shape: Shape = ()

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def ibp(self, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, A: Tensor) -> tuple[Tensor, Optional[Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


# ----------------------------------------------------------------------------------------------
# Affine ops
# ----------------------------------------------------------------------------------------------
class LinearOp(Op):
    """``y = x Wᵀ + b`` on B×in (in_shape must be 1-D)."""

    def __init__(self, name: str, m: nn.Linear) -> None:
        super().__init__(name)
        self.weight: Tensor = m.weight
        self.bias: Optional[Tensor] = m.bias

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def ibp(self, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        return F.linear(c, self.weight, self.bias), F.linear(r, self.weight.abs())

    def backward(self, A: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        # A: B×S×out → B×S×in; bias: B×S
        bias = A.matmul(self.bias) if self.bias is not None else None
        return A.matmul(self.weight), bias


class ConvOp(Op):
    """``Conv2d`` with groups=1 and zero padding; any stride, padding, dilation."""

    def __init__(self, name: str, m: nn.Conv2d) -> None:
        super().__init__(name)
        if m.groups != 1:
            raise ValueError(f"layer {name}: Conv2d with groups={m.groups} is not supported (groups must be 1)")
        if m.padding_mode != "zeros":
            raise ValueError(f"layer {name}: Conv2d padding_mode={m.padding_mode!r} is not supported (use 'zeros')")
        if isinstance(m.padding, str):
            raise ValueError(f"layer {name}: Conv2d padding={m.padding!r} is not supported (give integers)")
        self.weight: Tensor = m.weight
        self.bias: Optional[Tensor] = m.bias
        self.stride: tuple[int, int] = (int(m.stride[0]), int(m.stride[1]))
        self.padding: tuple[int, int] = (int(m.padding[0]), int(m.padding[1]))
        self.dilation: tuple[int, int] = (int(m.dilation[0]), int(m.dilation[1]))

    def forward(self, x: Tensor) -> Tensor:
        return conv.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def ibp(self, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        c2 = conv.conv2d(c, self.weight, self.bias, self.stride, self.padding, self.dilation)
        r2 = conv.conv2d(r, self.weight.abs(), None, self.stride, self.padding, self.dilation)
        return c2, r2

    def backward(self, A: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        # A: B×S×Co×Ho×Wo → B×S×Ci×Hi×Wi via the transposed convolution (:mod:`.conv`).
        B, S = A.shape[:2]
        flat = A.reshape(B * S, *self.out_shape)
        prev = conv.conv_transpose(flat, self.weight, self.stride, self.padding, self.dilation,
                                   (self.in_shape[1], self.in_shape[2]))
        bias = A.sum((-2, -1)).matmul(self.bias) if self.bias is not None else None
        return prev.view(B, S, *self.in_shape), bias


class ChannelAffineOp(Op):
    """Per-channel affine ``y = x·scale[c] + shift[c]`` (Normalize, BatchNorm with fixed statistics).

    ``scale``/``shift`` have shape (C,); inputs are B×C×H×W or B×C.
    """

    def __init__(self, name: str, scale: Tensor, shift: Tensor) -> None:
        super().__init__(name)
        self.scale = scale
        self.shift = shift

    def _view(self, t: Tensor, ndim: int) -> Tensor:
        return t.view(-1, *([1] * (ndim - 1)))

    def forward(self, x: Tensor) -> Tensor:
        n = x.dim() - 1
        return x * self._view(self.scale, n) + self._view(self.shift, n)

    def ibp(self, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        n = c.dim() - 1
        return c * self._view(self.scale, n) + self._view(self.shift, n), r * self._view(self.scale.abs(), n)

    def backward(self, A: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        n = len(self.in_shape)
        red = A.sum(tuple(range(3, A.dim()))) if A.dim() > 3 else A
        return A * self._view(self.scale, n), red.matmul(self.shift)


class BatchNormOp(ChannelAffineOp):
    """BatchNorm1d/2d: running statistics in eval mode; in training mode the statistics of the clean
    batch, set by :meth:`set_batch_stats` (a pre-pass; running statistics are never updated)."""

    def __init__(self, name: str, m: nn.modules.batchnorm._BatchNorm) -> None:
        self.module = m
        self.use_batch_stats = m.training or m.running_mean is None
        dummy = m.weight if m.weight is not None else m.running_mean
        super().__init__(name, dummy, dummy)  # replaced below / by set_batch_stats
        if not self.use_batch_stats:
            assert m.running_mean is not None and m.running_var is not None
            self._set(m.running_mean, m.running_var)

    def _set(self, mean: Tensor, var: Tensor) -> None:
        m = self.module
        inv = torch.rsqrt(var + m.eps)
        scale = inv if m.weight is None else m.weight * inv
        shift = -mean * scale if m.bias is None else m.bias - mean * scale
        self.scale, self.shift = scale, shift

    def set_batch_stats(self, x: Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        self._set(mean, var)


class FlattenOp(Op):
    """``nn.Flatten`` (from dimension 1 on)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def ibp(self, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        return c.flatten(1), r.flatten(1)

    def backward(self, A: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        return A.reshape(*A.shape[:2], *self.in_shape), None


class AvgPoolOp(Op):
    """``AvgPool2d`` as a depthwise convolution with a uniform kernel."""

    def __init__(self, name: str, m: nn.AvgPool2d) -> None:
        super().__init__(name)
        if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
            raise ValueError(f"layer {name}: AvgPool2d needs ceil_mode=False, count_include_pad=True, divisor_override=None")

        def pair(v) -> tuple[int, int]:
            return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))

        self.kernel = pair(m.kernel_size)
        self.stride = pair(m.stride if m.stride is not None else m.kernel_size)
        self.padding = pair(m.padding)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding)

    def ibp(self, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward(c), self.forward(r)

    def backward(self, A: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        B, S = A.shape[:2]
        ch = self.in_shape[0]
        w = torch.full((ch, 1, *self.kernel), 1.0 / (self.kernel[0] * self.kernel[1]), dtype=A.dtype, device=A.device)
        op = []
        for d in range(2):
            full = (self.out_shape[1 + d] - 1) * self.stride[d] - 2 * self.padding[d] + self.kernel[d]
            op.append(self.in_shape[1 + d] - full)
        prev = F.conv_transpose2d(A.reshape(B * S, *self.out_shape), w, None, self.stride, self.padding,
                                  tuple(op), ch)
        return prev.view(B, S, *self.in_shape), None


# ----------------------------------------------------------------------------------------------
# ReLU
# ----------------------------------------------------------------------------------------------
class ReluOp(Op):
    """ReLU; its bounds rules are in :mod:`ctxbudget.bounds.relu`."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def ibp(self, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        return ibp_relu(c, r)


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------
def _flatten_modules(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for name, m in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(m, nn.Sequential):
            out += _flatten_modules(m, full + ".")
        else:
            out.append((full, m))
    return out


def parse_model(model: nn.Module) -> list[Op]:
    """Turn an ``nn.Sequential`` into a list of ops; raise ``TypeError`` for unsupported layers."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"compute_bounds needs a torch.nn.Sequential model, got {type(model).__name__}")
    ops: list[Op] = []
    for name, m in _flatten_modules(model):
        label = f"{name} ({type(m).__name__})"
        if isinstance(m, nn.Linear):
            ops.append(LinearOp(label, m))
        elif isinstance(m, nn.Conv2d):
            ops.append(ConvOp(label, m))
        elif isinstance(m, nn.ReLU):
            ops.append(ReluOp(label))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"layer {label}: only Flatten(start_dim=1, end_dim=-1) is supported")
            ops.append(FlattenOp(label))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not m.training and m.running_mean is None:
                raise ValueError(f"layer {label}: BatchNorm with track_running_stats=False normalises with the "
                                 "statistics of each batch even in eval mode, so its outputs depend on the other "
                                 "examples of the batch and no per-example bound holds; use track_running_stats=True")
            ops.append(BatchNormOp(label, m))
        elif isinstance(m, nn.AvgPool2d):
            ops.append(AvgPoolOp(label, m))
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            if isinstance(m, nn.Dropout) and m.training and m.p > 0:
                raise ValueError(f"layer {label}: Dropout in training mode makes the network random, so no bound "
                                 "holds for its outputs; call model.eval() (the eval-mode network is bounded)")
            continue
        elif isinstance(getattr(m, "mean", None), Tensor) and isinstance(getattr(m, "std", None), Tensor) \
                and type(m).__name__ == "Normalize":
            mean, std = cast(Tensor, m.mean), cast(Tensor, m.std)
            inv = 1.0 / std
            ops.append(ChannelAffineOp(label, inv, -mean * inv))
        else:
            raise TypeError(f"unsupported layer {label}: the bound engine supports Normalize, Conv2d, Linear, "
                            "ReLU, Flatten, BatchNorm1d/2d, AvgPool2d, Identity and Dropout")
    if not ops:
        raise ValueError("the model has no layers to bound")
    return ops


def prepare(ops: Sequence[Op], x: Tensor) -> None:
    """Record per-sample shapes of every op by a shape pass on ``x`` (B×in_shape); set training-mode
    BatchNorm statistics from ``x`` (the clean batch) on the way. Running statistics are untouched."""
    need_stats = any(isinstance(o, BatchNormOp) and o.use_batch_stats for o in ops)
    if not need_stats:  # an empty batch checks and records the shapes at no arithmetic cost
        with torch.no_grad():
            _shape_pass(ops, x[:0].detach(), False)
    else:
        _shape_pass(ops, x, True)


def _shape_pass(ops: Sequence[Op], h: Tensor, need_stats: bool) -> None:
    for o in ops:
        o.in_shape = tuple(h.shape[1:])
        if need_stats and isinstance(o, BatchNormOp) and o.use_batch_stats:
            if h.shape[0] < 2:
                raise ValueError(f"layer {o.name}: BatchNorm in training mode needs a batch of at least 2")
            o.set_batch_stats(h)
        try:
            h = o.forward(h)
        except RuntimeError as e:
            raise ValueError(f"layer {o.name}: cannot apply to input of shape {tuple(h.shape)}: {e}") from e
        o.out_shape = tuple(h.shape[1:])
