"""Backward (CROWN) bound propagation: CROWN-IBP, full CROWN and α-CROWN.

Notation: a *specification* is a tensor ``A0`` of shape B×S×out_shape (S rows of linear
coefficients per sample on the network output). :func:`backward_bound` returns a lower bound of
``A0 · f(x)`` (shape B×S) over the input box, given a linear relaxation of every ReLU on the way.
Upper bounds are lower bounds of ``−A0``. The rows are pushed back layer by layer as A matrices of
shape B×S×shape (convolutions through ``conv_transpose2d``), never as dense Jacobians, and the
input layer is concretised as ``Λ·x̂ − |Λ|·ρ + bias`` with the box centre x̂ and radius ρ.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .ibp import ibp_forward
from .layers import AvgPoolOp, ConvOp, LinearOp, Op, ReluOp
from .relu import relu_backward, relu_relaxation

Relax = dict[int, tuple[Tensor, Tensor, Tensor]]
PreBounds = dict[int, tuple[Tensor, Tensor]]

#: maximal number of elements of one A matrix in full CROWN before the identity rows of an
#: intermediate layer are processed in chunks (memory cap for evaluation on large layers).
CROWN_CHUNK_ELEMENTS = 1 << 23


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
    Af = A.reshape(B, S, -1)
    lower = torch.bmm(Af, c.reshape(B, -1, 1)).squeeze(-1) - torch.bmm(Af.abs(), r.reshape(B, -1, 1)).squeeze(-1)
    return lower if bias is None else lower + bias


def _ibp_is_exact(ops: Sequence[Op]) -> bool:
    """IBP is exact for a chain with at most one non-diagonal affine op and no ReLU."""
    n = 0
    for o in ops:
        if isinstance(o, ReluOp):
            return False
        if isinstance(o, (LinearOp, ConvOp, AvgPoolOp)):
            n += 1
    return n <= 1


def _rows_bounds(ops: Sequence[Op], i: int, idx: Tensor, n: int, relax: Relax, c: Tensor, r: Tensor
                 ) -> tuple[Tensor, Tensor]:
    """CROWN lower/upper bounds (B×len(idx) each) of the neurons ``idx`` (flat indices into the
    input of ``ops[i]``, which has n neurons), in chunks of at most ``CROWN_CHUNK_ELEMENTS``."""
    B = c.shape[0]
    shape = ops[i].in_shape
    widest = max([math.prod(p.out_shape) for p in ops[:i]] + [math.prod(ops[0].in_shape)])
    chunk = max(1, CROWN_CHUNK_ELEMENTS // max(1, 2 * B * widest))
    lows, ups = [], []
    for lo in range(0, idx.numel(), chunk):
        sel = idx[lo: lo + chunk]
        m = sel.numel()
        first = _unit_rows(ops[i - 1], sel) if i >= 1 else None
        if first is None:  # generic: identity rows on the input of ops[i]
            eye = torch.zeros(m, n, dtype=c.dtype, device=c.device)
            eye[torch.arange(m, device=c.device), sel] = 1.0
            rows = torch.cat([eye, -eye], 0).unsqueeze(0).expand(B, -1, -1).reshape(B, 2 * m, *shape)
            res = backward_bound(ops, i, rows, relax, c, r)
        else:  # rows already pushed through ops[i−1] (a conv or linear layer)
            P, b = first
            rows = torch.cat([P, -P], 0).unsqueeze(0).expand(B, *([-1] * P.dim()))
            res = backward_bound(ops, i - 1, rows, relax, c, r)
            if b is not None:
                res = res + torch.cat([b, -b]).unsqueeze(0)
        lows.append(res[:, :m])
        ups.append(-res[:, m:])
    return torch.cat(lows, 1), torch.cat(ups, 1)


def _unit_rows(op: Op, sel: Tensor) -> Optional[tuple[Tensor, Optional[Tensor]]]:
    """Coefficients on the input of ``op`` of the unit rows ``e_n`` (n in ``sel``, flat indices of
    its output) and their constant terms, built directly from the weights (m×in_shape, m), or
    None if ``op`` is not a Linear/Conv layer. Saves the costly transposed convolution of one-hot
    rows in full CROWN."""
    if isinstance(op, LinearOp):
        return op.weight[sel], (op.bias[sel] if op.bias is not None else None)
    if not isinstance(op, ConvOp):
        return None
    Co, Ho, Wo = op.out_shape
    Ci, Hi, Wi = op.in_shape
    kh, kw = op.weight.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = op.stride, op.padding, op.dilation
    Hp, Wp = Hi + 2 * ph, Wi + 2 * pw
    dev = sel.device
    co, h, w = sel // (Ho * Wo), (sel // Wo) % Ho, sel % Wo
    ci = torch.arange(Ci, device=dev).view(Ci, 1, 1)
    ki = torch.arange(kh, device=dev).view(1, kh, 1)
    kj = torch.arange(kw, device=dev).view(1, 1, kw)
    base = (ci * Hp * Wp + ki * dh * Wp + kj * dw).reshape(1, -1)  # 1×(Ci·kh·kw)
    index = base + (h * sh * Wp + w * sw).unsqueeze(1)
    src = op.weight[co].reshape(sel.numel(), -1)
    canvas = torch.zeros(sel.numel(), Ci * Hp * Wp, dtype=src.dtype, device=src.device).scatter(1, index, src)
    P = canvas.view(-1, Ci, Hp, Wp)[:, :, ph: ph + Hi, pw: pw + Wi]
    return P, (op.bias[co] if op.bias is not None else None)


def crown_intermediate(ops: Sequence[Op], c: Tensor, r: Tensor) -> PreBounds:
    """Pre-activation bounds of every ReLU by its own backward (CROWN) pass (full CROWN).

    Each intermediate layer with N neurons is bounded with 2N identity rows per sample (lower and
    upper), in chunks when one A matrix would exceed ``CROWN_CHUNK_ELEMENTS`` elements (an
    evaluation-time memory cap). The values are computed without autograd; when gradients are
    needed, only the neurons that are unstable for some sample are recomputed with autograd (the
    relaxation of a stable neuron does not depend on its bounds, so the gradients are exact).
    The first layer uses IBP where IBP is exact.
    """
    B = c.shape[0]
    pre: PreBounds = {}
    relax: Relax = {}
    grad = torch.is_grad_enabled() and (c.requires_grad or r.requires_grad
                                        or any(t.requires_grad for o in ops for t in _op_tensors(o)))
    for i, o in enumerate(ops):
        if not isinstance(o, ReluOp):
            continue
        if _ibp_is_exact(ops[:i]):
            cc, rr = ibp_forward(ops, c, r, stop=i)
            l, u = cc - rr, cc + rr
        else:
            shape = o.in_shape
            n = math.prod(shape)
            with torch.no_grad():
                l, u = _rows_bounds(ops, i, torch.arange(n, device=c.device), n, relax, c, r)
            if grad:
                idx = ((l < 0) & (u > 0)).any(0).nonzero().flatten()
                if idx.numel():
                    lg, ug = _rows_bounds(ops, i, idx, n, relax, c, r)
                    l = l.index_copy(1, idx, lg)
                    u = u.index_copy(1, idx, ug)
            l, u = l.view(B, *shape), u.view(B, *shape)
        pre[i] = (l, u)
        relax[i] = relu_relaxation(l, u)
    return pre


def _op_tensors(o: Op) -> list[Tensor]:
    return [t for t in (getattr(o, k, None) for k in ("weight", "bias", "scale", "shift")) if isinstance(t, Tensor)]


def alpha_crown(ops: Sequence[Op], A: Tensor, pre: PreBounds, c: Tensor, r: Tensor,
                steps: int = 20, lr: float = 0.1) -> Tensor:
    """α-CROWN lower bound of the rows ``A`` (B×S×out_shape), returned detached (evaluation only).

    The lower slopes of unstable ReLUs become free parameters α ∈ [0, 1], one per row, sample and
    neuron, initialised with the adaptive CROWN slopes and improved by ``steps`` Adam steps of
    projected gradient ascent on the sum of the bounds; intermediate bounds ``pre`` stay fixed.
    The result is the element-wise best over the initial CROWN bound and every iterate, so it is
    never looser than CROWN.
    """
    A, c, r = A.detach(), c.detach(), r.detach()
    relax = {i: tuple(t.detach() for t in relu_relaxation(l.detach(), u.detach())) for i, (l, u) in pre.items()}
    B, S = A.shape[:2]
    with torch.no_grad():
        best = backward_bound(ops, len(ops), A, relax, c, r)  # type: ignore[arg-type]
    if steps <= 0 or not relax:
        return best
    unstable = {i: ((l < 0) & (u > 0)).unsqueeze(1) for i, (l, u) in pre.items()}
    alphas = {i: d_low.unsqueeze(1).expand(B, S, *d_low.shape[1:]).clone().requires_grad_(True)
              for i, (d_low, _, _) in relax.items()}
    opt = torch.optim.Adam(list(alphas.values()), lr=lr)
    for _ in range(steps):
        with torch.enable_grad():
            rel = {i: (torch.where(unstable[i], alphas[i], relax[i][0].unsqueeze(1)), relax[i][1], relax[i][2])
                   for i in relax}
            lb = backward_bound(ops, len(ops), A, rel, c, r)
            grads = torch.autograd.grad(-lb.sum(), list(alphas.values()))
        best = torch.maximum(best, lb.detach())
        for p, g in zip(alphas.values(), grads):
            p.grad = g
        opt.step()
        with torch.no_grad():
            for p in alphas.values():
                p.clamp_(0.0, 1.0)
    with torch.no_grad():
        rel = {i: (torch.where(unstable[i], alphas[i], relax[i][0].unsqueeze(1)), relax[i][1], relax[i][2])
               for i in relax}
        best = torch.maximum(best, backward_bound(ops, len(ops), A, rel, c, r))
    return best
