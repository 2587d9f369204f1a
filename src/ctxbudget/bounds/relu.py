"""The ReLU rules of the bound engine: interval image, linear relaxation, backward substitution.

ReLU is the only non-linear op of the supported networks, and its element-wise rules are where a
bound pass spends most of its non-convolution time. They are written here as a few dense float
passes each, with hand-written backward passes, because masked selections (``torch.where``,
``masked_fill``, ``clamp``'s backward) over boolean masks run 10–25× slower than a float multiply
on current CPU builds of PyTorch. Every function is exact (no approximation of the rules); the
tests compare them with the plain masked formulas and run ``gradcheck`` on them.

- :func:`ibp_relu` / :func:`relu_interval`: centre/radius box of ``relu(z)`` for z in a box.
- :func:`relu_relaxation`: linear bounds ``d_low·z ≤ relu(z) ≤ d_up·z + b_up`` on [l, u].
- :func:`relu_backward`: push lower-bound coefficients A back through the relaxed ReLU.
- :func:`relaxation_gaps`: how far each line of :func:`relu_relaxation` strays from ``relu`` on [l, u].

Fused kernels (off by default; :func:`set_fused_relu`, config key ``fused_relu``): the same
arithmetic (the ``_*_rule`` functions below, the only place it is written) can run through
``torch.compile`` (inductor), which fuses each rule's passes into one loop. Compilation is lazy
(first use, once per shape; automatic dynamic shapes after a shape change); where it is unavailable
(no C++ compiler on the CPU, no Triton on CUDA, an unsupported platform) or fails, the eager rules
run instead and one warning is logged (``logging`` logger ``ctxbudget.bounds.relu``). Compiled and
eager rules agree to float rounding (same formulas, other summation order in the bias term);
the tests compare them.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def _interval_rule(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    lo, hi = torch.relu(l), torch.relu(u)
    return (hi + lo).mul_(0.5), (hi - lo).mul_(0.5)


def _interval_grad_rule(l: Tensor, u: Tensor, gc: Tensor, gr: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient of :func:`_interval_rule` (relu' = 1 on z > 0, else 0, as ``torch.relu``'s)."""
    half_c, half_r = gc * 0.5, gr * 0.5
    return (half_c - half_r) * (l > 0).to(l.dtype), (half_c + half_r) * (u > 0).to(u.dtype)


class _Interval(torch.autograd.Function):
    """:func:`_interval_rule` with a hand-written backward (the fused path only)."""

    @staticmethod
    def forward(ctx, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        ctx.save_for_backward(l, u)
        return _run("interval", _interval_rule, l, u)

    @staticmethod
    def backward(ctx, gc: Optional[Tensor], gr: Optional[Tensor]):  # type: ignore[override]
        l, u = ctx.saved_tensors
        gc = torch.zeros_like(l) if gc is None else gc
        gr = torch.zeros_like(l) if gr is None else gr
        return _run("interval_grad", _interval_grad_rule, l, u, gc, gr)


def relu_interval(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Centre/radius (same shape as l, u) of ``[relu(l), relu(u)]``."""
    if _fused_for(l):
        return _Interval.apply(l, u)
    return _interval_rule(l, u)


def ibp_relu(c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """Centre/radius (same shape as c, r) of ``[relu(c − r), relu(c + r)]``."""
    return relu_interval(c - r, c + r)


def _lower_slope(l: Tensor, u: Tensor) -> Tensor:
    """1 where l ≥ 0 or u > −l, else 0: ``clamp(sign(u + l) + sign(l) + 1, 0, 1)`` (l ≤ u)."""
    return torch.add(u, l).sign_().add_(l.sign()).add_(1.0).clamp_(0.0, 1.0)


class _ChordRelaxation(torch.autograd.Function):
    """(l, u) ↦ (d_low, d_up, b_up); gradients flow through the chord of unstable neurons only.

    With l⁻ = min(l, 0) and u⁺ = max(u, 0): ``d_up = u⁺/(u⁺ − l⁻)`` (0/0 → 1, the case l = u = 0,
    which counts as active), ``b_up = −l⁻·d_up``. For an unstable neuron this is the chord
    ``u/(u − l)``, ``−l·u/(u − l)``; for a stable one it is (1, 0) or (0, 0).
    """

    @staticmethod
    def forward(ctx, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        d_low, d_up, b_up = _run("chord", _chord_rule, l, u)
        ctx.save_for_backward(l, u)
        ctx.mark_non_differentiable(d_low)
        return d_low, d_up, b_up

    @staticmethod
    def backward(ctx, _g_low: Optional[Tensor], g_up: Optional[Tensor], g_b: Optional[Tensor]):  # type: ignore[override]
        l, u = ctx.saved_tensors
        if g_up is None and g_b is None:
            return None, None
        g_up = torch.zeros_like(l) if g_up is None else g_up
        g_b = torch.zeros_like(l) if g_b is None else g_b
        return _run("chord_grad", _chord_grad_rule, l, u, g_up, g_b)


def _chord_rule(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(d_low, d_up, b_up) of :class:`_ChordRelaxation`."""
    lm, up = l.clamp(max=0.0), u.clamp(min=0.0)
    d_up = (up / (up - lm)).nan_to_num_(nan=1.0)
    b_up = torch.mul(lm, d_up).neg_()
    d_low = _lower_slope(l, u)
    return d_low, d_up, b_up


def _chord_grad_rule(l: Tensor, u: Tensor, g_up: Tensor, g_b: Tensor) -> tuple[Tensor, Tensor]:
    """(∂/∂l, ∂/∂u) of :func:`_chord_rule`'s d_up and b_up against their gradients g_up, g_b."""
    lm, up = l.clamp(max=0.0), u.clamp(min=0.0)
    # 1/(u − l)² on unstable neurons (l⁻ < 0 < u⁺), 0 elsewhere
    w = up.sign().mul_(lm.neg().sign_()).div_(torch.sub(up, lm).square_().clamp_min_(torch.finfo(l.dtype).tiny))
    # d d_up/du = −l/s², d b_up/du = l²/s²;  d d_up/dl = u/s², d b_up/dl = −u²/s²
    gu = torch.mul(lm, g_b).sub_(g_up).mul_(lm).mul_(w)
    gl = torch.mul(up, g_b).neg_().add_(g_up).mul_(up).mul_(w)
    return gl, gu


def relu_relaxation(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Linear relaxation of ReLU on pre-activation bounds ``l ≤ z ≤ u`` (any shape, element-wise).

    Returns ``(d_low, d_up, b_up)``: ``d_low·z ≤ relu(z) ≤ d_up·z + b_up`` on [l, u].
    Stable active (l ≥ 0): slopes 1, 0. Stable inactive (u ≤ 0, l < 0): slopes 0. Unstable: upper
    line is the chord ``u(z − l)/(u − l)``; lower slope is 1 if u > −l else 0 (auto_LiRPA
    "adaptive"). Differentiable in l and u (through the chord; d_low is piecewise constant), with
    no NaN for l = u.
    """
    return _ChordRelaxation.apply(l, u)


def relaxation_gaps(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Largest gaps (same shape as l, u) between ``relu`` and the lines of :func:`relu_relaxation`
    on [l, u]: ``(max relu(z) − d_low·z, max d_up·z + b_up − relu(z))``.

    Both are 0 on stable neurons. On an unstable one the upper gap is the chord's height at z = 0,
    ``b_up = −l·u/(u − l)``, and the lower gap is ``−l`` (slope 1) or ``u`` (slope 0), the larger of
    ``−d_low·l`` and ``(1 − d_low)·u`` (the gap is convex in z, largest at an end). A coefficient
    ``a`` on the ReLU's output loosens a backward bound by at most ``a⁺·lower gap + a⁻·upper gap``
    (a⁻ = max(−a, 0)): the ranking α-CROWN uses to pick which intermediate bounds to re-optimise.
    """
    with torch.no_grad():
        d_low, _, b_up = relu_relaxation(l, u)
        lm, up = l.clamp(max=0.0), u.clamp(min=0.0)
        return torch.maximum(d_low * lm.neg(), (1.0 - d_low) * up), b_up


class _ReluBackward(torch.autograd.Function):
    """``A ↦ A⁺·d_low + A⁻·d_up`` and the constant ``Σ A⁻·b_up`` (A⁺ = max(A, 0), A⁻ = min(A, 0))
    as one autograd node that saves only A; the sign masks are recomputed in backward as floats.

    Shapes: A is B×S×shape; dl is B×1×shape or B×S×shape (α-CROWN: one slope per row); du, bu are
    B×1×shape. Outputs: new A (B×S×shape) and the constant term (B×S).
    """

    @staticmethod
    def forward(ctx, A: Tensor, dl: Tensor, du: Tensor, bu: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        ctx.save_for_backward(A, dl, du, bu)
        return _run("subst", _subst_rule, A, dl, du, bu)

    @staticmethod
    def backward(ctx, g: Optional[Tensor], gb: Optional[Tensor]):  # type: ignore[override]
        A, dl, du, bu = ctx.saved_tensors
        if g is None:
            g = torch.zeros_like(A)
        need = tuple(bool(n) for n in ctx.needs_input_grad)
        return _run("subst_grad", _subst_grad_rule, A, dl, du, bu, g, gb, need)


def _subst_rule(A: Tensor, dl: Tensor, du: Tensor, bu: Tensor) -> tuple[Tensor, Tensor]:
    """(new A, constant) of :class:`_ReluBackward`."""
    B, S = A.shape[:2]
    neg = A.clamp(max=0.0)
    new_A = torch.mul(A.clamp(min=0.0), dl).addcmul_(neg, du)
    bias = torch.bmm(neg.reshape(B, S, -1), bu.reshape(B, -1, 1)).squeeze(-1)
    return new_A, bias


def _subst_grad_rule(A: Tensor, dl: Tensor, du: Tensor, bu: Tensor, g: Tensor, gb: Optional[Tensor],
                     need: tuple[bool, ...]) -> tuple[Optional[Tensor], ...]:
    """Gradients (A, dl, du, bu) of :func:`_subst_rule` for output gradients g, gb (``need``: which)."""
    B, S = A.shape[:2]
    gbv = None if gb is None else gb.reshape(B, S, *([1] * (A.dim() - 2)))
    neg = A.clamp(max=0.0)
    gA = gdl = gdu = gbu = None
    if need[0]:
        is_neg = neg.neg().sign_()             # 1 where A < 0, else 0
        is_pos = torch.rsub(is_neg, 1.0)       # 1 where A ≥ 0
        g_neg = torch.mul(g, du)
        if gbv is not None:
            g_neg.addcmul_(bu, gbv)
        gA = torch.mul(g, dl).mul_(is_pos).addcmul_(g_neg, is_neg)
    if need[1]:
        gdl = torch.mul(g, A.clamp(min=0.0))
        if dl.shape[1] == 1:
            gdl = gdl.sum(1, keepdim=True)
    if need[2]:
        gdu = torch.mul(g, neg).sum(1, keepdim=True)
    if need[3] and gb is not None:
        gbu = torch.bmm(gb.reshape(B, 1, S), neg.reshape(B, S, -1)).view(B, 1, *A.shape[2:])
    return gA, gdl, gdu, gbu


def relu_backward(A: Tensor, d_low: Tensor, d_up: Tensor, b_up: Tensor) -> tuple[Tensor, Tensor]:
    """Push lower-bound coefficients A (B×S×shape) back through a relaxed ReLU.

    ``d_low`` is B×shape or B×S×shape (α-CROWN: one slope per row); ``d_up``/``b_up`` are B×shape.
    Positive coefficients take the lower line, negative ones the upper line. Returns the new A
    (B×S×shape) and the constant term (B×S).
    """
    dl = d_low if d_low.dim() == A.dim() else d_low.unsqueeze(1)
    return _ReluBackward.apply(A, dl, d_up.unsqueeze(1), b_up.unsqueeze(1))


# ----------------------------------------------------------------------------------------------
# Fused kernels: the rules above through torch.compile (off by default)
# ----------------------------------------------------------------------------------------------
#: the switch (:func:`set_fused_relu`); ``CTXBUDGET_FUSED_RELU=1`` turns it on at import
_fused = os.environ.get("CTXBUDGET_FUSED_RELU", "0") == "1"
#: rule name → its compiled version (made on first use)
_compiled: dict[str, Callable[..., Any]] = {}
#: device type → why the fused rules are off there (found once, logged once)
_unavailable: dict[str, str] = {}
#: rule name → wall seconds of its first compiled call (compilation included), for the benchmarks
first_call_seconds: dict[str, float] = {}


def set_fused_relu(enabled: bool) -> None:
    """Run the ReLU rules through ``torch.compile`` (True) or eagerly (False, the default).

    Process-wide. Compilation happens lazily, on a rule's first call per shape; where it is
    unavailable or fails, the eager rules run and one warning is logged (see the module docstring).
    """
    global _fused
    _fused = bool(enabled)


def fused_relu() -> bool:
    """Whether the fused (compiled) rules are switched on (they may still fall back to eager)."""
    return _fused


def fused_relu_unavailable() -> dict[str, str]:
    """Device type → the reason the fused rules fell back to eager there (empty: no fallback)."""
    return dict(_unavailable)


def _fused_for(t: Tensor) -> bool:
    return _fused and t.device.type not in _unavailable


def _why_unavailable(device_type: str) -> Optional[str]:
    """Why ``torch.compile`` cannot fuse the rules on ``device_type`` (None: it can), found without
    compiling anything, so that a missing compiler costs no failed compilation."""
    try:
        import torch._dynamo
        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile is not supported on this platform or Python version"
    except Exception as exc:  # any import problem means: not available
        return f"torch.compile is not available ({type(exc).__name__}: {exc})"
    if device_type == "cpu":
        try:
            from torch._inductor import cpp_builder
            cpp_builder.get_cpp_compiler()
        except Exception as exc:
            return f"no C++ compiler for inductor's CPU kernels ({type(exc).__name__}: {exc})"
    elif device_type == "cuda":
        try:
            from torch.utils._triton import has_triton
            if not has_triton():
                return "Triton is not installed (inductor's CUDA kernels need it)"
        except Exception as exc:
            return f"Triton is not available ({type(exc).__name__}: {exc})"
    else:
        return f"device type {device_type!r} is not supported by the fused rules"
    return None


def _fall_back(device_type: str, reason: str) -> None:
    _unavailable[device_type] = reason
    log.warning("fused ReLU rules off on %s, running the eager rules instead: %s", device_type, reason)


def _compiler() -> Callable[..., Any]:
    """``torch.compile`` (a separate function so that tests can replace it)."""
    return torch.compile


def _run(name: str, rule: Callable[..., Any], *args: Any) -> Any:
    """``rule(*args)``, through its compiled version when the fused rules are on for the device of
    ``args[0]``; the eager rule (and a fallback for the rest of the process) if compiling fails."""
    if not _fused_for(args[0]):
        return rule(*args)
    dev = args[0].device.type
    fn = _compiled.get(name)
    if fn is None:
        reason = _why_unavailable(dev)
        if reason is not None:
            _fall_back(dev, reason)
            return rule(*args)
        try:
            fn = _compiled[name] = _compiler()(rule, dynamic=None, fullgraph=True)
        except Exception as exc:  # whatever the compiler raises: run eagerly
            _fall_back(dev, f"torch.compile of the {name!r} rule failed ({type(exc).__name__}: {exc})")
            return rule(*args)
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as exc:
        _fall_back(dev, f"compiling the {name!r} rule failed ({type(exc).__name__}: {str(exc)[:300]})")
        return rule(*args)
    if name not in first_call_seconds:
        first_call_seconds[name] = time.perf_counter() - t0
        log.info("fused ReLU rule %r compiled in %.1f s", name, first_call_seconds[name])
    return out
