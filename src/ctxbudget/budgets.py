"""Threat models: per-dimension perturbation budgets ε(x) and the box they define.

Everything here is in pixel units: images x ∈ [0, 1]^{B×C×H×W}, budgets ε of the same shape.

* ``project_budgets(g, eps0, alpha_lo, alpha_hi)`` — the budget projection (docs/method.md) from generator
  scores g ∈ [0, 1] to budgets that satisfy the range constraint ``l ≤ ε_i ≤ u`` (``l = α_lo·ε0``,
  ``u = min(α_hi·ε0, 1)``) and the volume constraint ``Σ_i log ε_i = n log ε0`` exactly.
* ``UniformBudget(eps0)`` and ``LearnedBudget(generator, eps0, alpha_lo, alpha_hi)`` — the two
  threat models behind one interface (``budgets(x) -> ε``), so the uniform baseline runs the same
  code path. ``eps0`` is the model's target volume; the training schedule passes each step's ε0 to
  ``forward(x, eps0)`` (0 means no perturbation).
* ``input_box(x, eps)`` — the clipped box ``[max(x − ε, 0), min(x + ε, 1)]`` that the verifier sees.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .runtime import bf16_autocast_on


def validate_budget_params(eps0: float, alpha_lo: float = 1.0, alpha_hi: float = 1.0, *,
                           allow_zero: bool = False) -> None:
    """Raise ``ValueError`` with a clear message unless ε0 ∈ (0, 1] and α_lo ≤ 1 ≤ α_hi.

    ``allow_zero`` admits ε0 = 0 (the warm-up phase of a schedule, natural training).
    """
    for name, value in (("eps0", eps0), ("alpha_lo", alpha_lo), ("alpha_hi", alpha_hi)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if allow_zero and eps0 == 0:
        pass
    elif not 0 < eps0 <= 1:
        raise ValueError(f"eps0 must lie in (0, 1] (pixel units), got {eps0}")
    if not 0 < alpha_lo <= 1:
        raise ValueError(f"alpha_lo must lie in (0, 1] (the lower limit l = alpha_lo·eps0 may not exceed eps0), got {alpha_lo}")
    if alpha_hi < 1:
        raise ValueError(f"alpha_hi must be >= 1 (the upper limit u = alpha_hi·eps0 may not be below eps0), got {alpha_hi}")
    if alpha_lo > alpha_hi:
        raise ValueError(f"alpha_lo ({alpha_lo}) must not exceed alpha_hi ({alpha_hi})")


def budget_limits(eps0: float, alpha_lo: float, alpha_hi: float) -> tuple[float, float]:
    """The range ``(l, u) = (α_lo·ε0, min(α_hi·ε0, 1))`` in pixel units."""
    return alpha_lo * eps0, min(alpha_hi * eps0, 1.0)


def project_budgets(g: torch.Tensor, eps0: float, alpha_lo: float, alpha_hi: float) -> torch.Tensor:
    """Map scores ``g`` (B×…, values in [0, 1]) to budgets ε of the same shape and dtype.

    Step 1: ``log ε̃ = log l + g·(log u − log l)`` puts every budget in [l, u].
    Step 2: proportional refinement in log space (towards u if the volume is too small, towards l
    if too large) makes ``Σ log ε_i = n·log ε0`` per example, n = number of elements per example.
    Computed in float64 internally so the volume holds to float precision; differentiable in g.
    ε0 = 0 returns zeros (no perturbation).
    """
    validate_budget_params(eps0, alpha_lo, alpha_hi, allow_zero=True)
    if g.dim() < 2:
        raise ValueError(f"g must be batched (B×…), got shape {tuple(g.shape)}")
    check_finite("the generator scores g", g)
    if eps0 == 0:
        return torch.zeros_like(g)
    lo, hi = budget_limits(eps0, alpha_lo, alpha_hi)
    log_l, log_u, log_e0 = math.log(lo), math.log(hi), math.log(eps0)
    flat = g.reshape(g.shape[0], -1).to(torch.float64)
    flat = flat + (flat.clamp(0.0, 1.0) - flat).detach()          # values in [0, 1]; gradient passes
    n = flat.shape[1]
    log_init = log_l + flat * (log_u - log_l)                      # B×n, in [log l, log u]
    log_vol = log_init.sum(dim=1, keepdim=True)                    # B×1
    deficit = n * log_e0 - log_vol                                 # > 0: grow towards u
    room_up = (n * log_u - log_vol).clamp_min(1e-300)              # Σ (log u − log ε̃) ≥ 0
    room_down = (log_vol - n * log_l).clamp_min(1e-300)            # Σ (log ε̃ − log l) ≥ 0
    # per example one of the two refinements is active (B×1 factors, the other is 0):
    # grow: log ε̃ + deficit·(log u − log ε̃)/room_up;  shrink: log ε̃ + deficit·(log ε̃ − log l)/room_down
    grow = deficit.clamp_min(0.0) / room_up
    shrink = deficit.clamp_max(0.0) / room_down
    log_eps = log_init + grow * (log_u - log_init) + shrink * (log_init - log_l)
    log_eps = log_eps + (log_eps.clamp(log_l, log_u) - log_eps).detach()  # rounding only
    return log_eps.exp().to(g.dtype).view_as(g)


def log_volume(eps: torch.Tensor) -> torch.Tensor:
    """Per-example log-volume ``Σ_i log ε_i`` (float64, shape B). Zero budgets give −inf."""
    return eps.reshape(eps.shape[0], -1).to(torch.float64).log().sum(dim=1)


def input_box(x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The box ``[max(x − ε, 0), min(x + ε, 1)]`` (both B×C×H×W, pixel units).

    ValueError for NaN/inf in x or ε, x outside [0, 1], or a negative ε (an inverted box)."""
    if x.shape != eps.shape:
        raise ValueError(f"x and eps must have the same shape, got {tuple(x.shape)} and {tuple(eps.shape)}")
    x_min, x_max = check_finite("the images x", x)
    if x_min < 0 or x_max > 1:
        raise ValueError(f"the images x must lie in [0, 1] (pixel units), got values in [{x_min:g}, {x_max:g}]")
    if check_finite("the budgets eps", eps)[0] < 0:
        raise ValueError(f"the budgets eps must be ≥ 0, got a negative value ({float(eps.min()):g})")
    return clip01(x - eps), clip01(x + eps)


def check_finite(name: str, t: torch.Tensor) -> tuple[float, float]:
    """Raise ``ValueError`` if ``t`` holds NaN or ±inf; return its (min, max) (one device sync)."""
    if t.numel() == 0:
        return 0.0, 0.0
    with torch.no_grad():
        lo, hi = torch.aminmax(t.detach())
        lo_v, hi_v = torch.stack([lo, hi]).tolist()
    if not (math.isfinite(lo_v) and math.isfinite(hi_v)):
        raise ValueError(f"{name} must be finite, found NaN or inf")
    return lo_v, hi_v


class _Clip01(torch.autograd.Function):
    """``clamp(v, 0, 1)`` with clamp's gradient (1 on the closed interval [0, 1], 0 outside), the
    mask computed with float ops: clamp's own backward (a boolean ``where``) is several times slower
    on CPU. The gradient at the end points matters: the Liu et al. optimisation relies on it."""

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(v)
        return v.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        v, = ctx.saved_tensors
        at_least_0 = v.sign().add_(1.0).clamp_(max=1.0)
        at_most_1 = torch.rsub(v, 1.0).sign_().add_(1.0).clamp_(max=1.0)
        return g * at_least_0.mul_(at_most_1)


def clip01(v: torch.Tensor) -> torch.Tensor:
    """``clamp(v, 0, 1)``, same values and gradient, faster backward on CPU."""
    return _Clip01.apply(v)


class BudgetModel(nn.Module):
    """Interface of a threat model: ``forward(x, eps0=None) -> ε`` (same shape as x), plus ``eps0``
    (the target volume the model was built or loaded with) and ``limits``.

    ``eps0`` given to ``forward``/``limits`` overrides the attribute for that call: the training
    schedule passes each step's ε0 as an argument instead of setting state on the module."""

    kind: str = "base"

    def __init__(self, eps0: float) -> None:
        super().__init__()
        self.eps0 = float(eps0)

    def _eps0(self, eps0: float | None) -> float:
        if eps0 is None:
            return self.eps0
        validate_budget_params(float(eps0), allow_zero=True)
        return float(eps0)

    def limits(self, eps0: float | None = None) -> tuple[float, float]:
        """(l, u): the range every budget lies in at ε0 (default: the model's)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Plain-data description (used in configs and result files)."""
        return {"kind": self.kind, "eps0": self.eps0}


class UniformBudget(BudgetModel):
    """ε_i = ε0 for every dimension (ordinary L∞ certified training, the paper's baseline)."""

    kind = "uniform"

    def __init__(self, eps0: float) -> None:
        validate_budget_params(eps0, allow_zero=True)
        super().__init__(eps0)

    def limits(self, eps0: float | None = None) -> tuple[float, float]:
        e0 = self._eps0(eps0)
        return e0, e0

    def forward(self, x: torch.Tensor, eps0: float | None = None) -> torch.Tensor:
        return torch.full_like(x, self._eps0(eps0))


class LearnedBudget(BudgetModel):
    """ε(x) = project_budgets(g_θ(x), ε0, α_lo, α_hi) for a generator network g_θ."""

    kind = "learned"

    def __init__(self, generator: nn.Module, eps0: float, alpha_lo: float, alpha_hi: float,
                 compute_dtype: torch.dtype = torch.float32) -> None:
        validate_budget_params(eps0, alpha_lo, alpha_hi, allow_zero=True)
        super().__init__(eps0)
        self.generator = generator
        self.alpha_lo = float(alpha_lo)
        self.alpha_hi = float(alpha_hi)
        if compute_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"compute_dtype must be torch.float32 or torch.bfloat16, got {compute_dtype}")
        #: dtype of the generator's matrix products (bf16 autocast); the projection is always float64
        self.compute_dtype = compute_dtype

    def limits(self, eps0: float | None = None) -> tuple[float, float]:
        return budget_limits(self._eps0(eps0), self.alpha_lo, self.alpha_hi)

    def forward(self, x: torch.Tensor, eps0: float | None = None) -> torch.Tensor:
        check_finite("the images x", x)
        e0 = self._eps0(eps0)
        if e0 == 0:
            return torch.zeros_like(x)
        low = self.compute_dtype == torch.bfloat16 and bf16_autocast_on(x.device.type)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=low):
            g = self.generator(x)
        # the scores only choose the box: the projection (float64) and every bound stay full precision
        return project_budgets(g.to(x.dtype), e0, self.alpha_lo, self.alpha_hi)

    def describe(self) -> dict:
        return {**super().describe(), "alpha_lo": self.alpha_lo, "alpha_hi": self.alpha_hi,
                "generator_dtype": str(self.compute_dtype).replace("torch.", "")}


#: the budget kinds a run can train (``budget.kind``), as named by the threat models' ``kind``
BUDGET_KINDS = (LearnedBudget.kind, UniformBudget.kind)
