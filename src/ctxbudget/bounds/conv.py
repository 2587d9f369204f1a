"""Convolution kernels of the bound engine for layers with few input channels (the input layer).

A CROWN pass pushes its rows back through a convolution with ``conv_transpose2d``, and autograd
takes a convolution's input gradient the same way. For a layer with one or three input channels
(the first layer of an MNIST or CIFAR-10 network) oneDNN runs that transposed convolution 2–5×
slower than one matrix product followed by ``fold`` (col2im), which computes the same sums
(one thread, DM-small's first layer, batch 256: 4.0 vs 0.8 ms on MNIST, 2.5 vs 1.4 ms on CIFAR-10;
``benchmarks/README.md``). For wider layers oneDNN is faster, so the product-and-fold path is used
only on the CPU and up to :data:`FOLD_MAX_IN_CHANNELS` input channels. Both paths give the same
values up to float summation order.

- :func:`conv_transpose`: the transposed convolution (rows pushed back), either path.
- :func:`conv2d`: ``F.conv2d`` whose input gradient takes the same fold path.
- :func:`fold_forward`: a model's forward pass with those convolutions through :func:`conv2d` (the
  attacks' gradients with respect to the image).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Pair = tuple[int, int]

#: convolutions with at most this many input channels use the matrix-product-and-fold path on the CPU
FOLD_MAX_IN_CHANNELS = 4


def use_fold(weight: Tensor) -> bool:
    """Whether a convolution with this weight (Co×Ci×kh×kw) takes the product-and-fold path."""
    return weight.device.type == "cpu" and weight.shape[1] <= FOLD_MAX_IN_CHANNELS


def _fold_product(A: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair, in_hw: Pair) -> Tensor:
    N, Co, Ho, Wo = A.shape
    kh, kw = weight.shape[2:]
    cols = torch.matmul(weight.reshape(Co, -1).t(), A.reshape(N, Co, Ho * Wo))  # N×(Ci·kh·kw)×(Ho·Wo)
    return F.fold(cols, in_hw, (kh, kw), dilation=dilation, padding=padding, stride=stride)


class _FoldTranspose(torch.autograd.Function):
    """:func:`fold_transpose` whose backward is the adjoint's: the gradient for A is the convolution
    of the output gradient (PyTorch's forward convolution: fast, and in the standard memory layout,
    where autograd through the product would hand back a channels-last gradient), the weight gradient
    PyTorch's weight gradient of that convolution. Once differentiable, as :class:`_FoldGradConv`."""

    @staticmethod
    def forward(ctx, A: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair,  # type: ignore[override]
                in_hw: Pair) -> Tensor:
        ctx.save_for_backward(A, weight)
        ctx.conf = (stride, padding, dilation)
        return _fold_product(A, weight, stride, padding, dilation, in_hw)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        A, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        g = g.contiguous()
        gA = gw = None
        if ctx.needs_input_grad[0]:
            gA = F.conv2d(g, weight, None, stride, padding, dilation)
        if ctx.needs_input_grad[1]:
            gw = torch.ops.aten.convolution_backward(A.contiguous(), g, weight, None, stride, padding, dilation, False,
                                                     (0, 0), 1, (False, True, False))[1]
        return gA, gw, None, None, None, None


def fold_transpose(A: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair,
                   in_hw: Pair) -> Tensor:
    """``conv_transpose2d`` back to an input of size ``in_hw`` as one matrix product and ``fold``.

    A: N×Co×Ho×Wo; weight: Co×Ci×kh×kw. Returns N×Ci×H×W (H, W = ``in_hw``; input positions no
    output reads are 0, as with ``conv_transpose2d``'s ``output_padding``). Differentiable in A and
    the weight (:class:`_FoldTranspose`)."""
    if torch.is_grad_enabled() and (A.requires_grad or weight.requires_grad):
        return _FoldTranspose.apply(A, weight, stride, padding, dilation, in_hw)
    return _fold_product(A, weight, stride, padding, dilation, in_hw)


def conv_transpose(A: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair,
                   in_hw: Pair) -> Tensor:
    """The adjoint of ``conv2d(·, weight, stride, padding, dilation)`` on inputs of size ``in_hw``:
    N×Co×Ho×Wo → N×Ci×H×W, through :func:`fold_transpose` where :func:`use_fold` says so."""
    if use_fold(weight):
        return fold_transpose(A, weight, stride, padding, dilation, in_hw)
    Ho, Wo = A.shape[2:]
    out_pad = []
    for d, size in enumerate(in_hw):
        k = weight.shape[2 + d]
        full = ((Ho, Wo)[d] - 1) * stride[d] - 2 * padding[d] + dilation[d] * (k - 1) + 1
        out_pad.append(size - full)
    return F.conv_transpose2d(A, weight, None, stride, padding, (out_pad[0], out_pad[1]), 1, dilation)


class _FoldGradConv(torch.autograd.Function):
    """``F.conv2d`` whose input gradient is :func:`fold_transpose` (weight and bias gradients as
    PyTorch computes them). Once differentiable: nothing in the engine differentiates twice."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Pair, padding: Pair,  # type: ignore[override]
                dilation: Pair) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        g = g.contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = fold_transpose(g, weight, stride, padding, dilation, (x.shape[2], x.shape[3]))
        if ctx.needs_input_grad[1]:
            gw = torch.ops.aten.convolution_backward(g, x, weight, None, stride, padding, dilation, False,
                                                     (0, 0), 1, (False, True, False))[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb, None, None, None


def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Pair, padding: Pair,
           dilation: Pair) -> Tensor:
    """``F.conv2d`` (groups 1); where ``x`` needs a gradient, :func:`use_fold` holds and no autocast
    is on, its input gradient goes through :func:`fold_transpose`. x: B×Ci×H×W → B×Co×Ho×Wo."""
    if (x.requires_grad and torch.is_grad_enabled() and use_fold(weight)
            and not torch.is_autocast_enabled(x.device.type)):  # bf16 autocast: PyTorch's own path
        return _FoldGradConv.apply(x, weight, bias, stride, padding, dilation)
    return F.conv2d(x, weight, bias, stride, padding, dilation)


def _foldable(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str) and use_fold(m.weight))


def fold_forward(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """``model``'s forward pass with the input gradient of its few-channel convolutions through
    :func:`conv2d` (an attack's gradient with respect to the image). For an ``nn.Sequential`` with such
    a layer at its top level: the layers called in turn, those convolutions by :func:`conv2d` (same
    values; hooks on them are not called); any other model is returned as it is."""
    if not isinstance(model, nn.Sequential) or not any(_foldable(m) for m in model):
        return model
    layers = list(model)

    def forward(x: Tensor) -> Tensor:
        for m in layers:
            if _foldable(m):
                c = cast(nn.Conv2d, m)
                x = conv2d(x, c.weight, c.bias, _pair(c.stride), _pair(c.padding), _pair(c.dilation))
            else:
                x = m(x)
        return x

    return forward


def _pair(v: Any) -> Pair:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))
