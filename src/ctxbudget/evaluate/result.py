"""Typed evaluation results and their JSON / per-example views.

:class:`EvalResult` holds everything one evaluation measured, as arrays over the N examples;
``summary()`` turns it into the JSON-safe dict written to ``results.json`` (fractions in [0, 1])
and ``records()`` into the per-example arrays of ``per_example.npz``. To add a measurement, add a
field to :class:`EvalResult` and write it in ``summary()`` (and ``records()`` if per example).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..budgets import BUDGET_KINDS

KINDS = BUDGET_KINDS          # the budget columns (a uniform run's "learned" column is its uniform one)


def frac(mask: np.ndarray) -> float:
    """Share of True in ``mask`` (0.0 for an empty mask)."""
    return float(mask.mean()) if mask.size else 0.0


def key(name: str) -> str:
    """Method name as used in record keys: "crown-ibp" → "crown_ibp"."""
    return name.replace("-", "_")


@dataclass
class BudgetColumn:
    """One threat model's column, arrays of length N (pixel / logit units).

    ``lower[m]``: smallest certified margin lower bound of method m (float64, after the float64
    re-check of ``ctxbudget.bounds.verify``); ``tol[m]``: the largest τ_j of the example;
    ``verified[m]``: the verification rule's verdict; ``rechecked[m]``: recomputed in float64;
    ``attack_margin``: smallest margin PGD reached (< 0: broken); ``log_volume``: Σ_i log ε_i.
    """

    kind: str
    lower: dict[str, np.ndarray]
    tol: dict[str, np.ndarray]
    verified: dict[str, np.ndarray]
    rechecked: dict[str, np.ndarray]
    attack_margin: np.ndarray
    log_volume: np.ndarray

    @property
    def verified_any(self) -> np.ndarray:
        """Verified by at least one method (N, bool)."""
        return np.any(np.stack(list(self.verified.values())), axis=0)

    @property
    def best_lower(self) -> np.ndarray:
        """Best (largest) smallest-margin lower bound over the methods (N)."""
        return np.max(np.stack(list(self.lower.values())), axis=0)


@dataclass
class LiuColumn:
    """Liu et al. (2019) on the first ``n`` examples: ``log_volume`` (N; NaN if not evaluated, −inf
    if uncertified) and ``verified`` (N; certified with log-volume ≥ n·log ε0)."""

    n: int
    method: str
    log_volume: np.ndarray
    verified: np.ndarray


@dataclass
class EvalResult:
    """Everything one :func:`ctxbudget.evaluate.evaluate_model` call measured."""

    eps0: float
    dims: int
    methods: tuple[str, ...]
    labels: np.ndarray
    prediction: np.ndarray
    columns: dict[str, BudgetColumn]
    liu: Optional[LiuColumn]
    violations: list[str]
    attack: dict[str, Any]
    seconds: dict[str, float]

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def correct(self) -> np.ndarray:
        return self.prediction == self.labels

    def column(self, kind: str) -> BudgetColumn:
        """The column of ``kind``; "learned" falls back to "uniform" for a uniform threat model."""
        return self.columns.get(kind) or self.columns["uniform"]

    # ------------------------------------------------------------------ views
    def summary(self) -> dict[str, Any]:
        """JSON-safe dict (the ``results.json`` layout; fractions in [0, 1])."""
        n, n_liu = self.n, (self.liu.n if self.liu is not None else 0)
        cols = {k: self.column(k) for k in KINDS}
        liu_ok = self.liu.verified[:n_liu] if self.liu is not None else np.zeros(0, bool)
        per_dim = self.liu.log_volume[:n_liu] / self.dims if self.liu is not None else np.zeros(0)
        finite = per_dim[np.isfinite(per_dim)]
        out: dict[str, Any] = {
            "n": n,
            "n_by_column": {"clean": n, "learned": n, "uniform": n, "liu2019": n_liu},
            "dims": self.dims,
            "eps0": self.eps0,
            "clean_err": frac(~self.correct),
            "verified_err": {"learned": frac(~cols["learned"].verified_any),
                             "uniform": frac(~cols["uniform"].verified_any),
                             "liu2019": frac(~liu_ok) if n_liu else None},
            "verified_err_by_method": {k: {m: frac(~c.verified[m]) for m in self.methods} for k, c in cols.items()},
            "rechecked_float64": {k: {m: int(c.rechecked[m].sum()) for m in self.methods} for k, c in cols.items()},
            "attack_err": {k: frac(c.attack_margin < 0) for k, c in cols.items()},
            "soundness_violations": len(self.violations),
            "n_liu2019": n_liu,
            "liu2019_method": self.liu.method if self.liu is not None else None,
            "liu2019_certified_frac": frac(np.isfinite(per_dim)) if n_liu else None,
            # mean over certified examples of (1/n)·Σ_i log ε_i, i.e. the log of the geometric-mean budget
            "mean_log_volume_liu2019": float(finite.mean()) if finite.size else None,
            "mean_geo_budget_liu2019": float(np.exp(finite.mean())) if finite.size else None,
            "target_log_volume_per_dim": math.log(self.eps0),
            "mean_log_volume_learned_per_dim": float(np.mean(cols["learned"].log_volume) / self.dims),
            "methods": list(self.methods),
            "attack": dict(self.attack),
            "seconds": dict(self.seconds),
        }
        return out

    def records(self) -> dict[str, np.ndarray]:
        """Per-example arrays (length N) for ``per_example.npz``; "-" in method names written "_"."""
        rec: dict[str, np.ndarray] = {"index": np.arange(self.n), "label": self.labels,
                                      "prediction": self.prediction, "correct": self.correct}
        for kind in KINDS:
            c = self.column(kind)
            for m in self.methods:
                rec[f"min_lb_{kind}_{key(m)}"] = c.lower[m]
                rec[f"tol_{kind}_{key(m)}"] = c.tol[m]
                rec[f"verified_{kind}_{key(m)}"] = c.verified[m]
            rec[f"verified_{kind}_any"] = c.verified_any
            rec[f"min_lb_{kind}"] = c.best_lower
            rec[f"attack_margin_{kind}"] = c.attack_margin
            rec[f"log_volume_{kind}"] = c.log_volume
        n_liu = self.liu.n if self.liu is not None else 0
        rec["liu_evaluated"] = np.arange(self.n) < n_liu
        rec["liu_log_volume"] = self.liu.log_volume if self.liu is not None else np.full(self.n, np.nan)
        rec["verified_liu2019"] = self.liu.verified if self.liu is not None else np.zeros(self.n, bool)
        return rec
