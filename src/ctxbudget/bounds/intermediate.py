"""Full-CROWN intermediate bounds: one backward pass per neuron that the cheaper bounds leave unstable.

Full CROWN bounds the pre-activation of every ReLU with backward (CROWN) passes before the final
specification. Only *unstable* neurons (l < 0 < u) need them: the relaxation of a stable neuron
is (1, 0, 0) or (0, 0, 0) whatever its exact bounds. So, layer by layer:

1. reference bounds: IBP from the (already tightened) output of the previous ReLU, intersected
   with the plain IBP bounds of the layer — both are true bounds, so is their intersection;
2. per sample, the flat indices of the neurons unstable under the reference are listed first
   (``unstable_rows``; the list is padded to the batch's largest count with other neurons, whose
   results are discarded so that a sample's bounds do not depend on the rest of the batch);
3. those rows (lower and upper) are pushed back through the network in chunks of at most
   ``CHUNK_ELEMENTS`` elements per A matrix (memory grows with the work, not with the layer);
   with autograd on, each chunk is checkpointed (recomputed in the backward pass), so only its
   B×m results stay alive;
4. the result is intersected with the reference: the bounds are never looser than IBP.

Shapes: c, r (box centre / radius) are B×in_shape; pre-activation bounds are B×shape(ReLU input).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .ibp import ibp_forward
from .layers import AvgPoolOp, ConvOp, LinearOp, Op, ReluOp
from .relu import relu_interval, relu_relaxation

Relax = dict[int, tuple[Tensor, Tensor, Tensor]]
PreBounds = dict[int, tuple[Tensor, Tensor]]
#: ``bound_fn(end, rows) -> B×rows`` lower bound of ``rows · (output of ops[end−1])``, given the
#: relaxations of the ReLUs before ``end`` (see :func:`intermediate_bounds`).
BoundFn = Callable[[int, Tensor], Tensor]

#: maximal number of elements of one A matrix (B × rows × widest layer) in an intermediate pass;
#: larger sets of rows are processed in chunks (1 << 25 floats = 128 MiB).
CHUNK_ELEMENTS = 1 << 25


def ibp_is_exact(ops: Sequence[Op]) -> bool:
    """IBP is exact for a chain with at most one non-diagonal affine op and no ReLU."""
    n = 0
    for o in ops:
        if isinstance(o, ReluOp):
            return False
        if isinstance(o, (LinearOp, ConvOp, AvgPoolOp)):
            n += 1
    return n <= 1


def unstable_rows(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample flat indices of the neurons with l < 0 < u, first (ascending), padded with the
    other neurons to the largest count in the batch.

    l, u: B×n. Returns ``(idx, count)``: idx B×S int64 (S = max count, S ≥ 0), count B int64.
    The order is deterministic (stable sort on the unstable flag).
    """
    mask = (l < 0) & (u > 0)
    count = mask.sum(1)
    S = int(count.max()) if count.numel() else 0
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
    return order[:, :S], count


def unit_rows(op: Op, sel: Tensor) -> Optional[tuple[Tensor, Optional[Tensor]]]:
    """Coefficients on the input of ``op`` of the unit rows ``e_n`` (n in ``sel``, flat indices of
    its output, any shape) and their constant terms, built directly from the weights
    (sel.shape × in_shape, sel.shape), or None if ``op`` is not a Linear/Conv layer. Saves the
    transposed convolution of one-hot rows."""
    if isinstance(op, LinearOp):
        return op.weight[sel], (op.bias[sel] if op.bias is not None else None)
    if not isinstance(op, ConvOp):
        return None
    Co, Ho, Wo = op.out_shape
    Ci, Hi, Wi = op.in_shape
    kh, kw = op.weight.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = op.stride, op.padding, op.dilation
    Hp, Wp = Hi + 2 * ph, Wi + 2 * pw
    flat = sel.reshape(-1)
    dev = flat.device
    co, h, w = flat // (Ho * Wo), (flat // Wo) % Ho, flat % Wo
    ci = torch.arange(Ci, device=dev).view(Ci, 1, 1)
    ki = torch.arange(kh, device=dev).view(1, kh, 1)
    kj = torch.arange(kw, device=dev).view(1, 1, kw)
    base = (ci * Hp * Wp + ki * dh * Wp + kj * dw).reshape(1, -1)  # 1×(Ci·kh·kw)
    index = base + (h * sh * Wp + w * sw).unsqueeze(1)
    src = op.weight[co].reshape(flat.numel(), -1)
    canvas = torch.zeros(flat.numel(), Ci * Hp * Wp, dtype=src.dtype, device=src.device).scatter(1, index, src)
    P = canvas.view(-1, Ci, Hp, Wp)[:, :, ph: ph + Hi, pw: pw + Wi]
    return P.reshape(*sel.shape, Ci, Hi, Wi), (op.bias[co].view(sel.shape) if op.bias is not None else None)


def rows_bounds(ops: Sequence[Op], i: int, idx: Tensor, bound_fn: BoundFn, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Lower and upper bounds (B×m each) of the neurons ``idx`` (B×m flat indices into the input of
    ``ops[i]``) in one pass of 2m rows per sample, through ``bound_fn``."""
    B, m = idx.shape
    first = unit_rows(ops[i - 1], idx) if i >= 1 else None
    if first is None:  # generic: one-hot rows on the input of ops[i]
        n = math.prod(ops[i].in_shape)
        eye = torch.zeros(B, m, n, dtype=dtype, device=idx.device).scatter_(2, idx.unsqueeze(2), 1.0)
        rows = torch.cat([eye, -eye], 1).view(B, 2 * m, *ops[i].in_shape)
        res = bound_fn(i, rows)
    else:  # rows already pushed through ops[i−1] (a conv or linear layer)
        P, b = first
        res = bound_fn(i - 1, torch.cat([P, -P], 1))
        if b is not None:
            res = res + torch.cat([b, -b], 1)
    return res[:, :m], -res[:, m:]


def valid_rows(idx: Tensor, count: Tensor) -> Tensor:
    """B×S bool: entry s of row b is one of the ``count[b]`` neurons of :func:`unstable_rows`'s
    ``idx`` (True) or padding (False)."""
    return torch.arange(idx.shape[1], device=idx.device).unsqueeze(0) < count.unsqueeze(1)


def intersect_rows(l: Tensor, u: Tensor, idx: Tensor, count: Tensor, lc: Tensor, uc: Tensor,
                   ties_to_new: bool = False) -> tuple[Tensor, Tensor]:
    """Bounds l, u (B×n) tightened by new bounds lc, uc (B×S) of the neurons idx (B×S, from
    :func:`unstable_rows`); only the first ``count[b]`` entries of row b (the unstable neurons) are
    used, so the result of a sample does not depend on the padding, i.e. on the rest of the batch.

    The gradient reaches lc (uc) where it is strictly tighter than l (u); with ``ties_to_new`` also
    where the two are equal (α-CROWN: its slopes start at CROWN's, so every re-optimised bound
    starts equal to the CROWN bound it is intersected with, and a tie without gradient would keep
    the slopes from ever moving). Same values either way."""
    lg, ug = l.gather(1, idx), u.gather(1, idx)
    if ties_to_new:
        valid_b = valid_rows(idx, count)
        l = l.scatter(1, idx, torch.where(valid_b & (lc >= lg), lc, lg))
        u = u.scatter(1, idx, torch.where(valid_b & (uc <= ug), uc, ug))
        return l, u
    valid = valid_rows(idx, count).to(l.dtype)
    l = l.scatter(1, idx, lg + valid * torch.relu(lc - lg))  # max(lc, lg) on valid entries
    u = u.scatter(1, idx, ug - valid * torch.relu(ug - uc))  # min(uc, ug) on valid entries
    return l, u


def chunk_size(ops: Sequence[Op], i: int, B: int) -> int:
    """Rows per sample of one chunk for layer i: 2·m·B·widest ≤ ``CHUNK_ELEMENTS``."""
    widest = max([math.prod(p.out_shape) for p in ops[:i]] + [math.prod(ops[0].in_shape)])
    return max(1, CHUNK_ELEMENTS // max(1, 2 * B * widest))


def reference_bounds(ops: Sequence[Op], i: int, prev: int, pre: PreBounds, ibp_pre: PreBounds,
                     c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """Cheap true bounds of the input of ReLU ``ops[i]``: plain IBP intersected with IBP from the
    tightened bounds of the previous ReLU ``ops[prev]`` (prev < 0: from the input box)."""
    l0, u0 = ibp_pre[i]
    if prev < 0:
        return l0, u0
    cc, rr = relu_interval(*pre[prev])
    cc, rr = ibp_forward(ops[prev + 1: i], cc, rr)
    return torch.maximum(l0, cc - rr), torch.minimum(u0, cc + rr)


def intermediate_bounds(ops: Sequence[Op], c: Tensor, r: Tensor, ibp_pre: PreBounds,
                        backward: Callable[[Sequence[Op], int, Tensor, Relax, Tensor, Tensor], Tensor]
                        ) -> PreBounds:
    """Full-CROWN pre-activation bounds of every ReLU (B×shape each), never looser than IBP.

    ``ibp_pre``: plain IBP pre-activation bounds of every ReLU; ``backward(ops, end, A, relax, c, r)``
    the backward bound (:func:`ctxbudget.bounds.crown.backward_bound`). Differentiable when autograd
    is on (chunks are checkpointed; see the module docstring).
    """
    B = c.shape[0]
    pre: PreBounds = {}
    relax: Relax = {}
    grad = torch.is_grad_enabled()
    prev = -1
    for i, o in enumerate(ops):
        if not isinstance(o, ReluOp):
            continue
        if ibp_is_exact(ops[:i]):
            l, u = ibp_pre[i]
        else:
            shape = o.in_shape
            lr, ur = reference_bounds(ops, i, prev, pre, ibp_pre, c, r)
            lr, ur = lr.reshape(B, -1), ur.reshape(B, -1)
            with torch.no_grad():
                idx, count = unstable_rows(lr, ur)
            S = idx.shape[1]
            l, u = lr, ur
            if S:
                frozen = dict(relax)

                def one(sel: Tensor, i: int = i, frozen: Relax = frozen) -> tuple[Tensor, Tensor]:
                    return rows_bounds(ops, i, sel, lambda end, A: backward(ops, end, A, frozen, c, r), c.dtype)

                m = chunk_size(ops, i, B)
                lows, ups = [], []
                for s0 in range(0, S, m):
                    sel = idx[:, s0: s0 + m]
                    lo, up = checkpoint(one, sel, use_reentrant=False) if grad else one(sel)
                    lows.append(lo)
                    ups.append(up)
                l, u = intersect_rows(lr, ur, idx, count, torch.cat(lows, 1), torch.cat(ups, 1))
            l, u = l.view(B, *shape), u.view(B, *shape)
        pre[i] = (l, u)
        relax[i] = relu_relaxation(l, u)
        prev = i
    return pre
