"""Bound engine: IBP, CROWN-IBP, CROWN and α-CROWN on per-element (non-uniform) input boxes.

Public API::

    from ctxbudget.bounds import compute_bounds, margin_spec, robust_cross_entropy
    C = margin_spec(y, num_classes)                      # B×(K−1)×K, rows e_y − e_j
    lower, upper = compute_bounds(model, x_lower, x_upper, method="crown-ibp", C=C)
    loss = robust_cross_entropy(model, x_lower, x_upper, y, method="crown-ibp", fusion=True, beta=1.0)

Modules: ``layers`` (per-layer IBP and backward rules), ``relu`` (the ReLU relaxation), ``ibp`` (interval
propagation), ``crown`` (backward propagation: CROWN-IBP, CROWN), ``intermediate`` (full-CROWN
intermediate bounds of the unstable neurons), ``alpha`` (α-CROWN), ``engine`` (validation,
:func:`compute_bounds`), ``loss`` (margin spec, robust cross-entropy), ``verify`` (the one
rounding-safe rule deciding "verified": :func:`certify`).
"""
from __future__ import annotations

from .engine import DIFFERENTIABLE_METHODS, METHODS, Bounder, compute_bounds
from .loss import margin_spec, robust_cross_entropy, verified_margin_lower
from .relu import relu_relaxation
from .verify import Verdict, certify, margin_lower_bounds

__all__ = [
    "DIFFERENTIABLE_METHODS",
    "METHODS",
    "Bounder",
    "Verdict",
    "certify",
    "compute_bounds",
    "margin_lower_bounds",
    "margin_spec",
    "relu_relaxation",
    "robust_cross_entropy",
    "verified_margin_lower",
]
