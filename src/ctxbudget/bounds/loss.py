"""Margin specifications and robust cross-entropy bounds (margin form and loss fusion).

- :func:`margin_spec`: rows ``e_y − e_j`` (j ≠ y ascending), B×(K−1)×K.
- :func:`verified_margin_lower`: lower bounds of the K−1 margins, B×(K−1).
- :func:`robust_cross_entropy`: per-example upper bound (B) of ``max_{x' ∈ box} CE(f(x'), y)``,
  either from margin lower bounds (``fusion=False``, CROWN-IBP style) or by auto_LiRPA's loss
  fusion (one CROWN row bounding ``Σ_j exp(z_j − m)``), with CROWN-IBP's β mixing with IBP.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .engine import Bounder, normalize_method

BETA_SKIP = 1e-5  # CROWN pass skipped below this mixing factor (as CROWN-IBP does)


def other_classes(y: Tensor, num_classes: int) -> Tensor:
    """Indices j ≠ y in increasing order for labels ``y`` (B): B×(K−1), int64, on y's device."""
    j = torch.arange(num_classes - 1, device=y.device).unsqueeze(0)
    return j + (j >= y.unsqueeze(1)).long()


def margin_spec(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32,
                device: Optional[torch.device] = None) -> Tensor:
    """Margin specification for labels ``y`` (B, int): B×(K−1)×K with rows ``e_y − e_j``, j ≠ y
    in increasing order (so ``C @ logits`` gives ``logit_y − logit_j``)."""
    if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point():
        raise ValueError(f"y must be a 1-D integer tensor of labels, got {y!r}")
    K = int(num_classes)
    if K < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= K):
        raise ValueError(f"labels must lie in [0, {K}), got range [{int(y.min())}, {int(y.max())}]")
    device = y.device if device is None else device
    y = y.to(device)
    eye = torch.eye(K, dtype=dtype, device=device)
    return eye[y].unsqueeze(1) - eye[other_classes(y, K)]


def _check_labels(y: Tensor, bd: Bounder) -> None:
    if not isinstance(y, Tensor) or y.shape != (bd.B,):
        raise ValueError(f"y must have shape ({bd.B},), got {getattr(y, 'shape', y)}")


def _beta(beta: float) -> float:
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    return beta


def _margins(bd: Bounder, y: Tensor, method: str, beta: float, **opts) -> Tensor:
    """Mixed margin lower bounds β·method + (1 − β)·IBP, B×(K−1)."""
    A = bd.spec(margin_spec(y, bd.K, bd.c.dtype, bd.c.device))
    if method == "ibp" or beta < BETA_SKIP:
        return bd.lower_rows(A, "ibp")
    crown = bd.lower_rows(A, method, **opts)
    if beta >= 1.0:
        return crown
    return beta * crown + (1.0 - beta) * bd.lower_rows(A, "ibp")


def verified_margin_lower(model: nn.Module, x_lower: Tensor, x_upper: Tensor, y: Tensor,
                          method: str = "crown-ibp", *, x: Optional[Tensor] = None, beta: float = 1.0,
                          **opts) -> Tensor:
    """Lower bounds of the margins ``f_y − f_j`` (j ≠ y ascending) over the box, B×(K−1).

    Only the lower side is computed (one backward pass for CROWN methods). ``beta`` < 1 mixes with
    IBP as CROWN-IBP does. ``opts`` go to α-CROWN (alpha_steps, alpha_lr, alpha_intermediate,
    alpha_wide_neurons).
    Whether a sample is verified is decided by :func:`ctxbudget.bounds.verify.certify` (entries
    above a rounding tolerance, near-zero ones re-checked in float64), not by ``> 0``.
    """
    method = normalize_method(method)
    bd = Bounder(model, x_lower, x_upper, x)
    _check_labels(y, bd)
    return _margins(bd, y, method, _beta(beta), **opts)


def _exp_chord(l: Tensor, u: Tensor) -> Tensor:
    """Slope of the chord of exp over [l, u] (element-wise, l ≤ u ≤ 0 typically), stable for l ≈ u."""
    d = u - l
    small = d < 1e-12
    d_safe = torch.where(small, torch.ones_like(d), d)
    return torch.where(small, torch.exp(u), torch.exp(u) * -torch.expm1(-d_safe) / d_safe)


def robust_cross_entropy(model: nn.Module, x_lower: Tensor, x_upper: Tensor, y: Tensor,
                         method: str = "crown-ibp", fusion: bool = True, beta: float = 1.0, *,
                         x: Optional[Tensor] = None, return_margins: bool = False,
                         **opts) -> Tensor | tuple[Tensor, Tensor]:
    """Per-example upper bound (B) of the cross-entropy ``max_{x' ∈ box} CE(f(x'), y)``.

    fusion=False: ``CE([0, −m̲_j]) = log(1 + Σ_{j≠y} exp(−m̲_j))`` from margin lower bounds
    m̲ = β·(method) + (1 − β)·IBP.

    fusion=True (auto_LiRPA loss fusion): bounds [l_j, u_j] of z_j = f_j − f_y (IBP with the last
    layer merged with e_j − e_y; for "crown"/"alpha-crown" the method's own bounds); m = max_j u_j;
    exp(z_j − m) ≤ its chord over [l_j − m, u_j − m]; the resulting linear function of the logits
    is one row bounded by the method (one backward pass): S̄ ≥ Σ_j exp(z_j − m), and
    CE ≤ log(S̄) + m. Mixing acts on S̄: β·S̄_method + (1 − β)·Σ_j exp(u_j − m).

    method="ibp" (or β < 1e-5) gives the IBP loss ``logsumexp_j u_j``, identical in both forms.

    ``return_margins=True`` also returns the margin lower bounds (B×(K−1), j ≠ y ascending) that the
    computation produced on the way, at no extra cost: the mixed margins for fusion=False; the
    bounds of the z_j for fusion=True (IBP for "ibp"/"crown-ibp", the method's own otherwise). A
    sample is certified by :func:`ctxbudget.bounds.verify.certify` applied to them.
    """
    return robust_cross_entropy_from(Bounder(model, x_lower, x_upper, x), y, method, fusion, beta,
                                     return_margins=return_margins, **opts)


def robust_cross_entropy_from(bd: Bounder, y: Tensor, method: str = "crown-ibp", fusion: bool = True,
                              beta: float = 1.0, *, return_margins: bool = False,
                              **opts) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`robust_cross_entropy` on a prepared :class:`Bounder` (model + box), so that other terms
    of a training loss can reuse its cached IBP pass (``bd.ibp_state()``)."""
    method = normalize_method(method)
    beta = _beta(beta)
    _check_labels(y, bd)
    if not fusion:
        m = _margins(bd, y, method, beta, **opts)
        zero = torch.zeros(bd.B, 1, dtype=m.dtype, device=m.device)
        ce = torch.logsumexp(torch.cat([zero, -m], 1), dim=1)
        return (ce, m) if return_margins else ce

    K = bd.K
    eye = torch.eye(K, dtype=bd.c.dtype, device=bd.c.device)
    rows = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # B×K×K, row j = e_y − e_j (row y is zero)
    A = bd.spec(rows)
    z_method = method if method in ("crown", "alpha-crown") else "ibp"
    res = bd.lower_rows(torch.cat([A, -A], 1), z_method, **opts)
    u = -res[:, :K]  # upper bound of z_j = f_j − f_y
    l = res[:, K:]  # lower bound of z_j
    m = u.max(dim=1).values
    eu = torch.exp(u - m.unsqueeze(1))
    s_ibp = eu.sum(1)
    if method == "ibp" or beta < BETA_SKIP:
        ce = torch.log(s_ibp) + m
        return (ce, res[:, :K].gather(1, other_classes(y, K))) if return_margins else ce
    k = _exp_chord(torch.minimum(l, u) - m.unsqueeze(1), u - m.unsqueeze(1))  # B×K chord slopes
    # Σ_j k_j z_j = coef · f with coef = Σ_j k_j (e_j − e_y) = −k @ rows
    coef = -(k.unsqueeze(1) @ rows).squeeze(1)  # B×K
    A1 = bd.spec((-coef).unsqueeze(1))
    upper_lin = -bd.lower_rows(A1, method, **opts)[:, 0]
    s_crown = upper_lin + (eu - k * u).sum(1)
    s_crown = torch.maximum(s_crown, torch.exp(-m))  # S ≥ exp(z_y − m) = exp(−m) always holds
    s = s_crown if beta >= 1.0 else beta * s_crown + (1.0 - beta) * s_ibp
    ce = torch.log(s) + m
    return (ce, res[:, :K].gather(1, other_classes(y, K))) if return_margins else ce
