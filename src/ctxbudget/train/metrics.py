"""One line of ``metrics.jsonl``: :class:`EpochRow` and the one place it becomes JSON (``to_json``).

The trainer writes one row per epoch and split. Both splits carry the common keys (errors are
fractions in [0, 1], ε in pixel units); the train split adds ``robust_loss``, ``lr``, ``kappa`` and
``beta``, the test split adds ``method`` (the bound method of its verified error) and, for learned
budgets, the contextuality keys ``input_dependent_share`` and ``ratio_<pair>``
(``ctxbudget.contextuality.contextuality_row``). Key order in the file::

    epoch split step eps0 loss [robust_loss] clean_err verified_err mean_eps min_eps max_eps
    [lr kappa beta] [method] [input_dependent_share ratio_*] seconds
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

#: keys of the split-specific fields, in file order, written only when set (not None)
TRAIN_KEYS = ("lr", "kappa", "beta")


@dataclass
class EpochRow:
    """Measurements of one epoch on one split (see the module docstring)."""

    epoch: int
    split: str                          # "train" | "test"
    step: int                           # optimizer steps completed
    eps0: float
    loss: float
    clean_err: float
    verified_err: float
    mean_eps: float
    min_eps: float
    max_eps: float
    seconds: float = 0.0
    robust_loss: Optional[float] = None     # train
    lr: Optional[float] = None              # train
    kappa: Optional[float] = None           # train
    beta: Optional[float] = None            # train
    method: Optional[str] = None            # test
    contextuality: dict[str, float] = field(default_factory=dict)   # test, learned budgets

    def to_json(self) -> dict[str, Any]:
        """The ``metrics.jsonl`` dict (keys and order as in the module docstring)."""
        out: dict[str, Any] = {"epoch": self.epoch, "split": self.split, "step": self.step, "eps0": self.eps0,
                               "loss": self.loss}
        if self.robust_loss is not None:
            out["robust_loss"] = self.robust_loss
        out.update(clean_err=self.clean_err, verified_err=self.verified_err, mean_eps=self.mean_eps,
                   min_eps=self.min_eps, max_eps=self.max_eps)
        for key in TRAIN_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.method is not None:
            out["method"] = self.method
        out.update(self.contextuality)
        out["seconds"] = self.seconds
        return out
