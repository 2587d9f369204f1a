"""The soundness check of an evaluation: certified bounds against what the attack reached.

Invariant (``ctxbudget.bounds.verify``): for every example and method, the certified smallest
margin lower bound is ≤ the smallest margin PGD reached in the same box plus 2τ (τ: the example's
largest rounding tolerance; one τ for the bound's rounding, one for the float forward pass's). In
particular no verified example may be broken. Checked for every example, correctly classified or
not (the clean point is one of the attacked points).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SoundnessError
from .result import BudgetColumn


def column_violations(col: BudgetColumn, labels: np.ndarray, methods: Sequence[str]) -> list[str]:
    """Human-readable violations of the invariant in one budget column (empty if sound)."""
    out: list[str] = []
    att = col.attack_margin.astype(np.float64)
    for m in methods:
        for i in np.flatnonzero(col.verified[m] & (att < 0)):
            out.append(f"example {i} (label {int(labels[i])}) certified by {m} under {col.kind} budgets but broken "
                       f"by PGD (margin {att[i]:.4g})")
        above = col.lower[m] > att + 2 * col.tol[m]
        for i in np.flatnonzero(above & ~(col.verified[m] & (att < 0))):
            out.append(f"example {i} (label {int(labels[i])}): {m} margin lower bound {col.lower[m][i]:.6g} under "
                       f"{col.kind} budgets exceeds the margin {att[i]:.6g} PGD reached (tolerance "
                       f"{2 * col.tol[m][i]:.2g})")
    return out


def raise_if_any(violations: Sequence[str], strict: bool) -> None:
    """``SoundnessError`` naming the first violations when ``strict`` and any were found."""
    if violations and strict:
        raise SoundnessError(f"{len(violations)} soundness violation(s): a certified bound is not a true bound; "
                             "first: " + "; ".join(violations[:3]))
