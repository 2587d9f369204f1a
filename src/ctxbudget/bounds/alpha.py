"""α-CROWN: optimised lower slopes of the unstable ReLUs, for the final rows and the intermediate bounds.

CROWN relaxes an unstable ReLU (l < 0 < u) from below by ``α·z`` with a fixed α ∈ {0, 1}; any
α ∈ [0, 1] gives a true bound, so α can be tuned per bound. Here every *start* — the final
specification rows, and (``optimize_intermediate``) the lower and upper rows of the neurons that
full CROWN leaves unstable in an intermediate layer — gets its own slopes for every earlier ReLU:
a tensor B×R×shape(ReLU) per (start, ReLU) pair, R the start's rows (per neuron, per row of the
start, as auto_LiRPA's α-CROWN). In a layer with at most ``MAX_INTERMEDIATE_ROWS`` unstable
neurons per sample every one of them is a start; in a wider one only the ``wide_neurons`` per
sample whose CROWN relaxation costs the final rows most (:func:`ranked_rows`), the others keep
their full-CROWN bounds. One iteration recomputes the intermediate bounds layer by layer with
their slopes (each intersected with the full-CROWN bounds, so never looser than CROWN or IBP),
relaxes with them (:func:`ctxbudget.bounds.relu.relu_relaxation`), bounds the final rows, and
takes an Adam step on all slopes to raise the sum of the final bounds plus ``Σ (l − u)`` over the
re-optimised intermediate neurons (each start's slopes also tighten their own bounds directly: the
final rows alone reach them only through the chords, a weak signal); slopes are clamped to [0, 1]
after each step. At the first iterate the re-optimised bounds equal the CROWN bounds they are
intersected with, so the intersection passes the gradient on ties (``ties_to_new``; without it the
intermediate slopes never moved). The result is the element-wise best final bound over the CROWN
start and every iterate, so it is never looser than CROWN, and the whole procedure is
deterministic (fixed initialisation, no sampling).

Samples are independent (Adam is element-wise and the objective a sum over samples), so the batch
is processed in chunks of samples to cap the memory of the slopes and their Adam state
(``SLOPE_ELEMENTS``); the result does not depend on the chunking.

Shapes: A is B×S×out_shape; c, r (box centre/radius) B×in_shape; pre-activation bounds B×shape.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .crown import backward_bound, backward_rows
from .intermediate import PreBounds, Relax, ibp_is_exact, intersect_rows, rows_bounds, unstable_rows, valid_rows
from .layers import Op
from .relu import relaxation_gaps, relu_relaxation

#: slope elements (B_chunk × rows × neurons, summed over (start, ReLU) pairs) per chunk of
#: samples: 1 << 24 floats = 64 MiB of slopes, ×4 with gradient and Adam state.
SLOPE_ELEMENTS = 1 << 24
#: every unstable neuron of an intermediate layer is re-optimised only if no sample has more
#: unstable neurons than this: every iteration recomputes its bounds with 2 rows per neuron, which
#: for wide convolutional layers (DM-small's second conv: 550–750 unstable neurons) costs far more
#: than the final rows. In such a *wide* layer only the ``wide_neurons`` unstable neurons per
#: sample whose relaxation loosens the final bound most are re-optimised (:func:`ranked_rows`);
#: the others keep their full-CROWN bounds.
MAX_INTERMEDIATE_ROWS = 256
#: default of ``wide_neurons``: unstable neurons per sample re-optimised in a wide layer. 0 (off):
#: on DM-small (``make demo``'s learned run, 200 images) 32 or 64 of them cost 35–65 % more CPU
#: time for +0.0002 mean smallest margin bound and no further verified image (benchmarks/README.md).
WIDE_NEURONS = 0


def alpha_crown(ops: Sequence[Op], A: Tensor, pre: PreBounds, c: Tensor, r: Tensor, steps: int = 20,
                lr: float = 0.1, optimize_intermediate: bool = True, wide_neurons: int = WIDE_NEURONS) -> Tensor:
    """α-CROWN lower bound (B×S, detached) of the rows ``A`` (B×S×out_shape).

    ``pre``: starting pre-activation bounds of every ReLU (full CROWN, or IBP); they are also the
    bounds every re-optimised intermediate bound is intersected with. ``steps`` Adam steps with
    learning rate ``lr`` (×0.98 per step). ``optimize_intermediate=False`` keeps ``pre`` fixed and
    optimises only the slopes of the final rows. ``wide_neurons``: per sample, how many unstable
    neurons of a layer with more than ``MAX_INTERMEDIATE_ROWS`` of them are re-optimised (the
    ones that loosen the CROWN bound of ``A`` most; 0: such layers keep ``pre``).
    """
    if wide_neurons < 0:
        raise ValueError(f"wide_neurons must be ≥ 0, got {wide_neurons}")
    A, c, r = A.detach(), c.detach(), r.detach()
    pre = {i: (l.detach(), u.detach()) for i, (l, u) in pre.items()}
    B = A.shape[0]
    per_sample = _slope_elements(ops, A, pre, optimize_intermediate, wide_neurons)
    chunk = max(1, SLOPE_ELEMENTS // max(1, per_sample))
    out = []
    for b0 in range(0, B, chunk):
        sl = slice(b0, b0 + chunk)
        out.append(_alpha_chunk(ops, A[sl], {i: (l[sl], u[sl]) for i, (l, u) in pre.items()}, c[sl], r[sl],
                                steps, lr, optimize_intermediate, wide_neurons))
    return torch.cat(out, 0)


def ranked_rows(ops: Sequence[Op], i: int, A: Tensor, relax: Relax, l: Tensor, u: Tensor, k: int
                ) -> tuple[Tensor, Tensor]:
    """The (at most) ``k`` unstable neurons per sample of ReLU ``ops[i]`` whose relaxation loosens
    the CROWN bound of the rows A most, as ``(idx B×k', count B)`` like
    :func:`ctxbudget.bounds.intermediate.unstable_rows` (k' = min(k, neurons); the first
    ``count[b]`` entries of row b are unstable, the rest padding).

    A neuron's score is ``Σ_s a⁺_s·lower gap + a⁻_s·upper gap`` (:func:`ctxbudget.bounds.relu.relaxation_gaps`),
    a the coefficients of the rows on the ReLU's output under the relaxations ``relax``: how much
    its relaxation can cost the rows' bound (the sum over rows, as α-CROWN's objective). Ties keep
    the lower index (stable sort), so the choice is deterministic and per sample. l, u: B×n.
    """
    with torch.no_grad():
        a, _ = backward_rows(ops, len(ops), A, relax, start=i + 1)
        a = a.flatten(2)
        gap_low, gap_up = relaxation_gaps(l, u)
        score = a.clamp(min=0.0).sum(1).mul_(gap_low).addcmul_(a.clamp(max=0.0).sum(1).neg_(), gap_up)
        unstable = (l < 0) & (u > 0)
        score = torch.where(unstable, score, torch.full_like(score, -1.0))  # scores ≥ 0: unstable first
        k = min(k, score.shape[1])
        order = torch.sort(score, dim=1, descending=True, stable=True).indices
        return order[:, :k], unstable.sum(1).clamp(max=k)


def _starts(ops: Sequence[Op], pre: PreBounds, optimize_intermediate: bool, wide_neurons: int,
            A: Optional[Tensor] = None, relax: Optional[Relax] = None) -> dict[int, tuple[Tensor, Tensor]]:
    """Intermediate ReLUs whose bounds are re-optimised → (indices B×S_i of the neurons, counts B;
    see :func:`ctxbudget.bounds.intermediate.unstable_rows`): every unstable neuron in a layer with
    at most ``MAX_INTERMEDIATE_ROWS`` of them per sample, else the ``wide_neurons`` that
    :func:`ranked_rows` ranks first for the rows A under ``relax`` (without A: the row counts only)."""
    out: dict[int, tuple[Tensor, Tensor]] = {}
    if not optimize_intermediate:
        return out
    for i, (l, u) in pre.items():
        if ibp_is_exact(ops[:i]):
            continue
        lf, uf = l.flatten(1), u.flatten(1)
        idx, count = unstable_rows(lf, uf)
        if idx.shape[1] == 0:
            continue
        if idx.shape[1] <= MAX_INTERMEDIATE_ROWS:
            out[i] = (idx, count)
        elif wide_neurons > 0:
            if A is None or relax is None:
                out[i] = (idx[:, :wide_neurons], count.clamp(max=wide_neurons))
            else:
                out[i] = ranked_rows(ops, i, A, relax, lf, uf, wide_neurons)
    return out


def _slope_elements(ops: Sequence[Op], A: Tensor, pre: PreBounds, optimize_intermediate: bool,
                    wide_neurons: int) -> int:
    """Slope elements per sample (the largest over the batch's padded row counts)."""
    starts = _starts(ops, pre, optimize_intermediate, wide_neurons)
    total = 0
    for t, rows in [(t, 2 * idx.shape[1]) for t, (idx, _) in starts.items()] + [(len(ops), A.shape[1])]:
        total += rows * sum(math.prod(ops[j].in_shape) for j in pre if j < t)
    return total


def _alpha_chunk(ops: Sequence[Op], A: Tensor, pre: PreBounds, c: Tensor, r: Tensor, steps: int, lr: float,
                 optimize_intermediate: bool, wide_neurons: int) -> Tensor:
    n = len(ops)
    relus = sorted(pre)
    relax0: Relax = {i: relu_relaxation(l, u) for i, (l, u) in pre.items()}
    with torch.no_grad():
        best = backward_bound(ops, n, A, relax0, c, r)
    if steps <= 0 or not relus:
        return best
    starts = _starts(ops, pre, optimize_intermediate, wide_neurons, A, relax0)
    rows = {t: 2 * idx.shape[1] for t, (idx, _) in starts.items()}
    rows[n] = A.shape[1]
    B = A.shape[0]
    alphas: dict[tuple[int, int], Tensor] = {}
    for t, R in rows.items():
        for j in relus:
            l, u = pre[j]
            if j < t and bool(((l < 0) & (u > 0)).any()):
                d_low = relax0[j][0]
                alphas[(t, j)] = d_low.unsqueeze(1).expand(B, R, *d_low.shape[1:]).clone().requires_grad_(True)
    if not alphas:
        return best
    opt = torch.optim.Adam(list(alphas.values()), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.98)
    for it in range(steps + 1):
        params = list(alphas.values())
        with torch.enable_grad() if it < steps else torch.no_grad():
            lb, inter = _bound(ops, A, pre, relax0, starts, alphas, c, r)
            # gradients w.r.t. the slopes only (the graph may share weight-derived tensors)
            grads = torch.autograd.grad(-(lb.sum() + inter), params) if it < steps else ()
        best = torch.maximum(best, lb.detach())
        if it == steps:
            break
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        sched.step()
        with torch.no_grad():
            for p in alphas.values():
                p.clamp_(0.0, 1.0)
    return best


def _relax_for(t: int, cur: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]],
               alphas: dict[tuple[int, int], Tensor]) -> Relax:
    """Relaxations of the ReLUs before start t: lower slope α on unstable neurons, else CROWN's."""
    out: Relax = {}
    for j, (d_low, d_up, b_up, unst) in cur.items():
        if j >= t:
            continue
        a = alphas.get((t, j))
        if a is None:
            out[j] = (d_low, d_up, b_up)
        else:  # d_low + mask·(α − d_low), float arithmetic (no boolean selection)
            dl = d_low.unsqueeze(1)
            out[j] = (dl + unst.unsqueeze(1) * (a - dl), d_up, b_up)
    return out


def _rows_bound(ops: Sequence[Op], rel: Relax, c: Tensor, r: Tensor, end: int, A: Tensor) -> Tensor:
    """``backward_bound`` with this pass's slopes bound in (the ``bound_fn`` of ``rows_bounds``)."""
    return backward_bound(ops, end, A, rel, c, r)


def _bound(ops: Sequence[Op], A: Tensor, pre: PreBounds, relax0: Relax, starts: dict[int, tuple[Tensor, Tensor]],
           alphas: dict[tuple[int, int], Tensor], c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """One α-CROWN pass: intermediate bounds with their slopes, then the final rows.

    Returns the final bounds (B×S) and ``Σ (l − u)`` over the re-optimised intermediate neurons
    (a scalar, the negated total width of their own bounds before the intersection; part of the
    objective, see :func:`_alpha_chunk`)."""
    B = A.shape[0]
    inter = A.new_zeros(())
    cur: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
    for j in sorted(pre):
        l0, u0 = pre[j]
        if j in starts:
            idx, count = starts[j]
            rel = _relax_for(j, cur, alphas)
            lc, uc = rows_bounds(ops, j, idx, functools.partial(_rows_bound, ops, rel, c, r), c.dtype)
            valid = valid_rows(idx, count).to(lc.dtype)
            inter = inter + (valid * (lc - uc)).sum()
            l, u = intersect_rows(l0.reshape(B, -1), u0.reshape(B, -1), idx, count, lc, uc, ties_to_new=True)
            l, u = l.view_as(l0), u.view_as(u0)
            d_low, d_up, b_up = relu_relaxation(l, u)
            unst = ((l < 0) & (u > 0)).to(l.dtype)
        else:
            d_low, d_up, b_up = relax0[j]
            unst = ((l0 < 0) & (u0 > 0)).to(l0.dtype)
        cur[j] = (d_low, d_up, b_up, unst)
    return backward_bound(ops, len(ops), A, _relax_for(len(ops), cur, alphas), c, r), inter
