"""The one rule that decides "verified": margin lower bounds that are safe against float rounding.

Every place that decides "verified" calls :func:`certify`. The rule and the soundness invariant
are stated, with their reasons and measurements, in docs/method.md ("Verification rule and
soundness invariant"). In short: example b is verified iff it is classified correctly and, for
every j ≠ y, ``m̲_j(b) > τ_j(b)`` with ``τ_j = RTOL_FACTOR · eps(dtype) · M_j``, ``M_j`` the
magnitude of margin j's trailing affine chain over the box (:func:`margin_magnitude`);
working-precision bounds with ``m̲_j ≤ 2τ_j`` are recomputed in float64 (``recheck=True``), and
without that recomputation the rule is ``m̲_j > 2τ_j``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .engine import Bounder, compute_bounds, normalize_method
from .layers import AvgPoolOp, ChannelAffineOp, ConvOp, FlattenOp, LinearOp, Op
from .loss import margin_spec, other_classes

#: τ = RTOL_FACTOR · finfo(dtype).eps · M (see the module docstring).
RTOL_FACTOR = 32.0

#: ``bound_fn(classifier, lo, hi, y, method) -> B×(K−1)`` margin lower bounds (logit units).
BoundFn = Callable[[nn.Module, Tensor, Tensor, Tensor, str], Tensor]


def _abs_affine(o: Op, m: Tensor) -> Tensor:
    """|op|(m): the op applied with absolute weights and biases to magnitudes m ≥ 0."""
    if isinstance(o, LinearOp):
        return F.linear(m, o.weight.abs(), None if o.bias is None else o.bias.abs())
    if isinstance(o, ConvOp):
        return F.conv2d(m, o.weight.abs(), None if o.bias is None else o.bias.abs(), o.stride, o.padding, o.dilation)
    if isinstance(o, ChannelAffineOp):
        view = (-1,) + (1,) * (m.dim() - 2)
        return m * o.scale.abs().view(view) + o.shift.abs().view(view)
    if isinstance(o, FlattenOp):
        return m.flatten(1)
    if isinstance(o, AvgPoolOp):
        return o.forward(m)
    raise TypeError(f"no magnitude rule for {o!r}")  # pragma: no cover - parse_model admits no other op


@torch.no_grad()
def margin_magnitude(model: nn.Module, x_lower: Tensor, x_upper: Tensor, y: Tensor, *,
                     x: Optional[Tensor] = None, bounder: Optional[Bounder] = None) -> Tensor:
    """M (B×(K−1), float64, logit units): Σ of |terms| of each margin ``f_y − f_j`` over the box.

    The input of the trailing affine chain (after the last ReLU, or the network input) is bounded
    by IBP as ``|h| ≤ max(|l|, |u|)``; the chain is applied with absolute weights and biases, and
    margin j gets ``M_y + M_j`` (the float computation forms f_y and f_j separately).

    ``bounder``: a :class:`Bounder` already built on this model, this box and this clean batch
    (e.g. the one a training step's loss used): its cached IBP pass is reused instead of a second
    one (the same arithmetic, so the same values; read detached).
    """
    bd = bounder if bounder is not None else Bounder(model, x_lower.detach(), x_upper.detach(),
                                                      None if x is None else x.detach())
    if bd.t > 0:
        _, (c, r) = bd.ibp_state()
    else:
        c, r = bd.c, bd.r
    c, r = c.detach(), r.detach()
    m = c.abs() + r
    for o in bd.ops[bd.t:]:
        m = _abs_affine(o, m)
    m = m.reshape(bd.B, -1).double()
    idx = other_classes(y.to(m.device), m.shape[1])
    return m.gather(1, y.to(m.device).view(-1, 1)) + m.gather(1, idx)


def tolerance(magnitude: Tensor, dtype: torch.dtype) -> Tensor:
    """τ = RTOL_FACTOR · finfo(dtype).eps · M (same shape as ``magnitude``, float64)."""
    return magnitude.double() * (RTOL_FACTOR * torch.finfo(dtype).eps)


def rule(lower: Tensor, tol: Tensor) -> Tensor:
    """The comparison itself: every margin lower bound above its tolerance (B×S → B, bool)."""
    return (lower.double() > tol).all(dim=1)


@dataclass
class Verdict:
    """Outcome of :func:`certify` for a batch of B examples with S = K−1 margins each.

    ``lower``: margin lower bounds B×S (float64; the float64 recomputation where it was done);
    ``tol``: τ B×S (float64); ``verified``: B bool (correct and every ``lower > tol``);
    ``rechecked``: B bool (recomputed in float64)."""

    lower: Tensor
    tol: Tensor
    verified: Tensor
    rechecked: Tensor

    @property
    def min_lower(self) -> Tensor:
        """Smallest margin lower bound per example (B, float64)."""
        return self.lower.min(dim=1).values


def _float64_copy(model: nn.Module) -> nn.Module:
    twin = copy.deepcopy(model)
    return twin.double()


def certify(model: nn.Module, x_lower: Tensor, x_upper: Tensor, y: Tensor, method: str, *,
            lower: Optional[Tensor] = None, correct: Optional[Tensor] = None,
            bound_fn: Optional[BoundFn] = None, recheck: bool = True, x: Optional[Tensor] = None,
            bounder: Optional[Bounder] = None) -> Verdict:
    """Apply the verification rule to a batch (see the module docstring).

    Args:
        model: the classifier (``nn.Sequential``, eval mode), working dtype = its parameters'.
        x_lower, x_upper: the box, B×C×H×W (pixel units).
        y: labels (B,). method: bound method name, passed to ``bound_fn``.
        lower: margin lower bounds B×(K−1) already computed in working precision (else computed).
        correct: B bool, the clean prediction is y (else computed from ``x``, or from the box
            midpoint when ``x`` is None).
        bound_fn: ``bound_fn(model, lo, hi, y, method)`` (default: :func:`margin_lower_bounds`).
        recheck: recompute near-zero bounds in float64 (False: conservative ``lower > 2τ``).
        x: clean batch (for BatchNorm in training mode and the clean prediction).
        bounder: a :class:`Bounder` already built on ``model``, this box and ``x`` (the one that
            computed ``lower``): the magnitude M reuses its IBP pass (:func:`margin_magnitude`).
    """
    bound_fn = bound_fn or margin_lower_bounds
    with torch.no_grad():
        if lower is None:
            lower = bound_fn(model, x_lower, x_upper, y, method)
        lower = lower.detach()
        if correct is None:
            clean = x if x is not None else (x_lower + x_upper) / 2
            correct = model(clean).argmax(1) == y
        dtype = x_lower.dtype
        tol = tolerance(margin_magnitude(model, x_lower, x_upper, y, x=x, bounder=bounder), dtype)
        low64 = lower.double()
        correct = correct.to(low64.device)
        near = correct & (low64 > 0).all(1) & ~(low64 > 2 * tol).all(1)
        rechecked = torch.zeros_like(near)
        if recheck and dtype != torch.float64:
            if bool(near.any()):
                idx = near.nonzero().flatten()
                low64 = low64.clone()
                low64[idx] = bound_fn(_float64_copy(model), x_lower[idx].double(), x_upper[idx].double(), y[idx],
                                      method).double()
                rechecked = near
            verified = correct & rule(low64, tol)
        else:                                  # no float64 recomputation: the conservative 2τ
            verified = correct & rule(low64, 2 * tol)
    return Verdict(lower=low64, tol=tol, verified=verified, rechecked=rechecked)


def margin_lower_bounds(model: nn.Module, lo: Tensor, hi: Tensor, y: Tensor, method: str, *,
                        bounder: Optional[Bounder] = None) -> Tensor:
    """Certified lower bounds of ``f_y − f_j`` (j ≠ y) over the box [lo, hi] by ``compute_bounds``
    (B×(K−1), logit units; the default :data:`BoundFn`). Differentiable w.r.t. ``lo`` and ``hi``
    for the methods of ``DIFFERENTIABLE_METHODS``.

    ``bounder``: a :class:`Bounder` already built on ``model`` and this box: the bounds are computed
    on it (the same values), so that :func:`certify` given the same ``bounder`` reuses its IBP pass."""
    if bounder is not None:
        C = margin_spec(y, bounder.K, lo.dtype, lo.device)
        return bounder.lower_rows(bounder.spec(C), normalize_method(method))
    k = _num_outputs(model, lo)
    lower = compute_bounds(model, lo, hi, method, C=margin_spec(y, k, lo.dtype, lo.device), bound_upper=False)[0]
    assert lower is not None
    return lower


def _num_outputs(model: nn.Module, x: Tensor) -> int:
    for layer in reversed(list(model.modules())):
        if isinstance(layer, nn.Linear):
            return layer.out_features
    with torch.no_grad():
        return int(model(x[:1]).shape[1])
