"""Backward (CROWN) bound propagation: CROWN-IBP and full CROWN (α-CROWN: :mod:`.alpha`).

Notation: a *specification* is a tensor ``A0`` of shape B×S×out_shape (S rows of linear
coefficients per sample on the network output). :func:`backward_bound` returns a lower bound of
``A0 · f(x)`` (shape B×S) over the input box, given a linear relaxation of every ReLU on the way.
Upper bounds are lower bounds of ``−A0``. The rows are pushed back layer by layer as A matrices of
shape B×S×shape (convolutions through ``conv_transpose2d``), never as dense Jacobians, and the
input layer is concretised as ``Λ·x̂ − |Λ|·ρ + bias`` with the box centre x̂ and radius ρ.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .intermediate import PreBounds, Relax, intermediate_bounds
from .layers import Op, ReluOp
from .relu import relu_backward, relu_relaxation


def relaxations(pre: PreBounds) -> Relax:
    """ReLU relaxations ``(d_low, d_up, b_up)`` for every ReLU with pre-activation bounds in ``pre``."""
    return {i: relu_relaxation(l, u) for i, (l, u) in pre.items()}


def backward_bound(ops: Sequence[Op], end: int, A: Tensor, relax: Relax, c: Tensor, r: Tensor,
                   start: int = 0) -> Tensor:
    """Lower bound of ``A · (output of ops[end−1])`` for inputs of ``ops[start]`` in the box (c, r).

    A: B×S×out_shape(ops[end−1]); c, r: B×in_shape(ops[start]); ``relax`` must hold every ReLU in
    ``ops[start:end]``. Returns B×S.
    """
    B, S = A.shape[:2]
    A, bias = backward_rows(ops, end, A, relax, start)
    Af = A.reshape(B, S, -1)
    lower = torch.bmm(Af, c.reshape(B, -1, 1)).squeeze(-1) - torch.bmm(Af.abs(), r.reshape(B, -1, 1)).squeeze(-1)
    return lower if bias is None else lower + bias


def backward_rows(ops: Sequence[Op], end: int, A: Tensor, relax: Relax, start: int = 0
                  ) -> tuple[Tensor, Optional[Tensor]]:
    """Push the rows A (B×S×out_shape(ops[end−1])) back to the input of ``ops[start]``: returns the
    coefficients there (B×S×in_shape(ops[start])) and the accumulated constant term (B×S, or None),
    so that ``A·(output of ops[end−1]) ≥ A'·(input of ops[start]) + bias``."""
    bias: Optional[Tensor] = None
    b: Optional[Tensor]
    for i in range(end - 1, start - 1, -1):
        o = ops[i]
        if isinstance(o, ReluOp):
            A, b = relu_backward(A, *relax[i])
        else:
            A, b = o.backward(A)
        if b is not None:
            bias = b if bias is None else bias + b
    return A, bias


def crown_intermediate(ops: Sequence[Op], c: Tensor, r: Tensor, ibp_pre: PreBounds) -> PreBounds:
    """Full-CROWN pre-activation bounds of every ReLU (B×shape each): a backward pass for each
    neuron left unstable by IBP, intersected with IBP (:mod:`ctxbudget.bounds.intermediate`).

    ``ibp_pre``: the IBP pre-activation bounds of every ReLU (``Bounder.ibp_state()[0]``).
    Differentiable in the weights and the box when autograd is on.
    """
    grad = torch.is_grad_enabled() and (c.requires_grad or r.requires_grad
                                        or any(t.requires_grad for o in ops for t in _op_tensors(o)))
    with torch.set_grad_enabled(grad):
        return intermediate_bounds(ops, c, r, ibp_pre, backward_bound)


def _op_tensors(o: Op) -> list[Tensor]:
    return [t for t in (getattr(o, k, None) for k in ("weight", "bias", "scale", "shift")) if isinstance(t, Tensor)]
