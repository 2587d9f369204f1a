"""Input validation, per-call state and :func:`compute_bounds`.

A :class:`Bounder` holds the parsed model and the input box of one call and caches what several
specifications share (the IBP pass and its ReLU relaxations, full-CROWN intermediate bounds), so
that e.g. the IBP and the CROWN-IBP margin bounds of a CROWN-IBP training step cost one IBP pass.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .alpha import WIDE_NEURONS, alpha_crown
from .crown import PreBounds, Relax, backward_bound, crown_intermediate, relaxations
from .ibp import Box, ibp_forward, last_relu_index
from .layers import parse_model, prepare

#: every bound method, in order of tightness and cost (the one list; everything else imports it)
METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")
#: the methods whose bounds are differentiable (α-CROWN's are detached: evaluation only)
DIFFERENTIABLE_METHODS = tuple(m for m in METHODS if m != "alpha-crown")


def or_list(items: tuple[str, ...]) -> str:
    """("a", "b", "c") → "a, b or c" (for messages)."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def normalize_method(method: str) -> str:
    """Canonical method name (case-insensitive, '_' = '-'); ValueError for unknown names."""
    if not isinstance(method, str):
        raise ValueError(f"method must be a string, one of {METHODS}; got {method!r}")
    key = method.lower().replace("_", "-").replace("α", "alpha")
    if key == "alphacrown":
        key = "alpha-crown"
    if key not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; choose one of {METHODS}")
    return key


def _check_tensor(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    with torch.no_grad():
        if math.isfinite(float(t.sum())):  # fast path: a sum of finite values is finite (barring overflow)
            return
        if bool(torch.isnan(t).any()):
            raise ValueError(f"{name} contains NaN")
        if bool(torch.isinf(t).any()):
            raise ValueError(f"{name} contains inf")


def validate_box(x_lower: Tensor, x_upper: Tensor, x: Optional[Tensor] = None) -> None:
    """Raise ValueError/TypeError for a malformed box: shapes, dtypes, NaN/inf, lower > upper."""
    _check_tensor("x_lower", x_lower)
    _check_tensor("x_upper", x_upper)
    if x_lower.shape != x_upper.shape:
        raise ValueError(f"x_lower and x_upper must have the same shape, got {tuple(x_lower.shape)} "
                         f"and {tuple(x_upper.shape)}")
    if x_lower.dim() < 2 or x_lower.shape[0] == 0:
        raise ValueError(f"the box must be batched (B×...), got shape {tuple(x_lower.shape)}")
    if x_lower.dtype != x_upper.dtype or x_lower.device != x_upper.device:
        raise ValueError("x_lower and x_upper must have the same dtype and device")
    with torch.no_grad():
        if bool((x_lower > x_upper).any()):
            worst = float((x_lower - x_upper).max())
            raise ValueError(f"x_lower > x_upper somewhere (by up to {worst:g}); the box is empty")
    if x is not None:
        _check_tensor("x", x)
        if x.shape != x_lower.shape:
            raise ValueError(f"the clean batch x must have the box's shape {tuple(x_lower.shape)}, got {tuple(x.shape)}")


def forbid_tf32(device: torch.device) -> None:
    """Turn TensorFloat-32 off for CUDA convolutions and matrix products (process-wide, idempotent).

    On Ampere and later GPUs cuDNN computes float32 convolutions in TF32 by default (10-bit
    mantissa, relative error ~1e-3). A bound computed that way is not the float32 bound the
    rounding-safe rule of :mod:`.verify` assumes (τ = 32·2⁻²³·M), so it may exceed a true margin:
    every :class:`Bounder` on a CUDA tensor calls this first. No effect on the CPU, and none on
    bf16 autocast regions (the budget generator), which never certify anything.
    """
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


class Bounder:
    """Parsed model + input box of one call; computes lower bounds of specification rows.

    Box: ``x_lower``/``x_upper`` of shape B×in_shape. ``x`` is the clean batch used for the
    statistics of BatchNorm layers in training mode (default: the box centre).
    """

    def __init__(self, model: nn.Module, x_lower: Tensor, x_upper: Tensor, x: Optional[Tensor] = None) -> None:
        validate_box(x_lower, x_upper, x)
        forbid_tf32(x_lower.device)
        self.ops = parse_model(model)
        self.c = (x_upper + x_lower) * 0.5
        self.r = (x_upper - x_lower) * 0.5
        prepare(self.ops, x if x is not None else self.c)
        self.B = x_lower.shape[0]
        self.out_shape = self.ops[-1].out_shape
        self.K = math.prod(self.out_shape)
        self.t = last_relu_index(self.ops) + 1  # first op of the trailing affine chain
        self._ibp: Optional[tuple[PreBounds, Box]] = None
        self._ibp_relax: Optional[Relax] = None
        self._crown_pre: Optional[PreBounds] = None

    # -- cached passes ------------------------------------------------------------------------
    def ibp_state(self) -> tuple[PreBounds, Box]:
        """IBP pre-activation bounds of every ReLU and the box after the last ReLU."""
        if self._ibp is None:
            pre: PreBounds = {}
            box = ibp_forward(self.ops, self.c, self.r, stop=self.t, pre=pre)
            self._ibp = (pre, box)
        return self._ibp

    def ibp_relax(self) -> Relax:
        if self._ibp_relax is None:
            self._ibp_relax = relaxations(self.ibp_state()[0])
        return self._ibp_relax

    def crown_pre(self) -> PreBounds:
        if self._crown_pre is None:
            self._crown_pre = crown_intermediate(self.ops, self.c, self.r, self.ibp_state()[0])
        return self._crown_pre

    # -- specifications -----------------------------------------------------------------------
    def spec(self, C: Optional[Tensor]) -> Tensor:
        """Specification rows B×S×out_shape from C (B×S×K or S×K; None = identity, S = K)."""
        if C is None:
            eye = torch.eye(self.K, dtype=self.c.dtype, device=self.c.device)
            return eye.unsqueeze(0).expand(self.B, -1, -1).reshape(self.B, self.K, *self.out_shape)
        _check_tensor("C", C)
        if C.dim() == 2:
            C = C.unsqueeze(0).expand(self.B, -1, -1)
        if C.dim() != 3 or C.shape[0] != self.B or C.shape[2] != self.K:
            raise ValueError(f"C must have shape B×S×K = {self.B}×S×{self.K} (or S×K), got {tuple(C.shape)}")
        C = C.to(dtype=self.c.dtype, device=self.c.device)
        return C.reshape(self.B, C.shape[1], *self.out_shape)

    def lower_rows(self, A: Tensor, method: str, alpha_steps: int = 20, alpha_lr: float = 0.1,
                   alpha_intermediate: str = "optimized", alpha_wide_neurons: int = WIDE_NEURONS) -> Tensor:
        """Lower bound (B×S) of ``A · f(x)`` over the box for rows A (B×S×out_shape)."""
        n = len(self.ops)
        if method == "ibp":
            _, (c, r) = self.ibp_state()
            return backward_bound(self.ops, n, A, {}, c, r, start=self.t)
        if method == "crown-ibp":
            return backward_bound(self.ops, n, A, self.ibp_relax(), self.c, self.r)
        if method == "crown":
            return backward_bound(self.ops, n, A, relaxations(self.crown_pre()), self.c, self.r)
        if method == "alpha-crown":
            with torch.no_grad():
                if alpha_intermediate in ("optimized", "crown"):
                    pre = self.crown_pre()
                elif alpha_intermediate == "ibp":
                    pre = self.ibp_state()[0]
                else:
                    raise ValueError("alpha_intermediate must be 'optimized', 'crown' or 'ibp', "
                                     f"got {alpha_intermediate!r}")
            return alpha_crown(self.ops, A, pre, self.c, self.r, steps=alpha_steps, lr=alpha_lr,
                               optimize_intermediate=alpha_intermediate == "optimized",
                               wide_neurons=alpha_wide_neurons)
        raise ValueError(f"unknown bound method {method!r}; choose one of {METHODS}")

    def forward(self, x: Tensor) -> Tensor:
        """The network the bounds are about, applied to ``x`` (B'×in_shape → B'×out_shape): the
        model's own forward pass, except that training-mode BatchNorm normalises with the statistics
        of the clean batch this Bounder was built with (fixed, not those of ``x``; running statistics
        untouched). Differentiable in ``x`` and the weights."""
        h = x
        for o in self.ops:
            h = o.forward(h)
        return h

    def ibp_output(self) -> tuple[Tensor, Tensor]:
        """Plain layer-wise IBP bounds of the raw outputs (B×K each)."""
        pre, (c, r) = self.ibp_state()
        c, r = ibp_forward(self.ops[self.t:], c, r)
        return (c - r).reshape(self.B, -1), (c + r).reshape(self.B, -1)


def compute_bounds(model: nn.Module, x_lower: Tensor, x_upper: Tensor, method: str = "crown-ibp",
                   C: Optional[Tensor] = None, *, x: Optional[Tensor] = None, bound_lower: bool = True,
                   bound_upper: bool = True, alpha_steps: int = 20, alpha_lr: float = 0.1,
                   alpha_intermediate: str = "optimized", alpha_wide_neurons: int = WIDE_NEURONS
                   ) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Bounds of ``C @ model(x')`` (or of ``model(x')`` if C is None) for all x' in the box.

    Args:
        model: ``nn.Sequential`` of supported layers (see :mod:`ctxbudget.bounds.layers`).
        x_lower, x_upper: B×C×H×W (any B×in_shape) per-element box, ``x_lower ≤ x_upper``.
        method: "ibp", "crown-ibp", "crown" or "alpha-crown" (the latter is evaluation only: its
            result is detached; it is never looser than "crown").
        C: B×S×K specification (or S×K shared by the batch), folded into the last linear layer.
        x: the clean batch (B×in_shape) for BatchNorm layers in training mode (default: box centre).
        bound_lower, bound_upper: skip the side not needed (it is returned as None); each side
            costs one backward pass for the CROWN methods.
        alpha_steps, alpha_lr, alpha_intermediate, alpha_wide_neurons: α-CROWN settings (Adam
            steps, learning rate ×0.98 per step, intermediate bounds: "optimized" = full CROWN,
            then re-optimised with their own slopes, for every unstable neuron where a layer has at
            most ``alpha.MAX_INTERMEDIATE_ROWS`` of them per sample, else for the
            ``alpha_wide_neurons`` per sample whose relaxation costs the final bound most (0: none);
            "crown" = full CROWN, fixed; "ibp" = IBP, fixed).

    Returns:
        ``(lower, upper)``, each B×S (B×K when C is None), dtype/device of the input box.
        Differentiable w.r.t. model parameters and the box (except for "alpha-crown").
    """
    method = normalize_method(method)
    if not (bound_lower or bound_upper):
        raise ValueError("at least one of bound_lower / bound_upper must be True")
    bd = Bounder(model, x_lower, x_upper, x)
    if C is None and method == "ibp":
        lo, up = bd.ibp_output()
        return (lo if bound_lower else None), (up if bound_upper else None)
    A = bd.spec(C)
    S = A.shape[1]
    opts: dict[str, Any] = dict(alpha_steps=alpha_steps, alpha_lr=alpha_lr, alpha_intermediate=alpha_intermediate,
                                alpha_wide_neurons=alpha_wide_neurons)
    if bound_lower and bound_upper:
        res = bd.lower_rows(torch.cat([A, -A], 1), method, **opts)
        return res[:, :S], -res[:, S:]
    if bound_lower:
        return bd.lower_rows(A, method, **opts), None
    return None, -bd.lower_rows(-A, method, **opts)
