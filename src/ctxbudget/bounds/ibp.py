"""Interval bound propagation in centre/radius form.

A box is a pair ``(c, r)`` of tensors of shape B×shape (centre and non-negative radius); affine
ops map it to ``(W c + b, |W| r)``, ReLU to the centre/radius of ``[relu(c − r), relu(c + r)]``.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor

from .layers import Op, ReluOp
from .relu import relu_interval

Box = tuple[Tensor, Tensor]


def ibp_forward(ops: Sequence[Op], c: Tensor, r: Tensor, stop: Optional[int] = None,
                pre: Optional[dict[int, tuple[Tensor, Tensor]]] = None) -> Box:
    """Propagate the box ``(c, r)`` (B×in_shape) through ``ops[:stop]``.

    If ``pre`` is a dict, the pre-activation bounds ``(l, u)`` (B×shape) of every ReLU passed are
    stored in it under the ReLU's op index. Returns the box (c, r) of the output of ``ops[stop−1]``.
    """
    stop = len(ops) if stop is None else stop
    for i in range(stop):
        o = ops[i]
        if isinstance(o, ReluOp) and pre is not None:
            pre[i] = (c - r, c + r)
            c, r = relu_interval(*pre[i])
        else:
            c, r = o.ibp(c, r)
    return c, r


def last_relu_index(ops: Sequence[Op]) -> int:
    """Index of the last ReLU in ``ops`` (−1 if there is none)."""
    idx = -1
    for i, o in enumerate(ops):
        if isinstance(o, ReluOp):
            idx = i
    return idx
