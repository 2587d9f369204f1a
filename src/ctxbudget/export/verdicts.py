"""ctxbudget's own verdict on each exported VNN-LIB instance, written into ``manifest.json``.

For every example and budget kind the exported box is checked with the one verification rule
(:func:`ctxbudget.bounds.verify.certify`) under each bound method (default IBP and CROWN-IBP), so
a complete verifier's answers can be compared with ctxbudget's without running a second tool:

* ``"certified"`` — some method verifies the box: a sound complete verifier must answer *safe*
  (unsat) on that instance, so an *unsafe* answer with a counterexample would be a soundness bug;
* ``"misclassified"`` — the clean image is not classified as its label: the clean point is a
  counterexample, every verifier must answer *unsafe* (sat);
* ``"not certified"`` — ctxbudget's incomplete bounds do not decide; a complete verifier may.

Per instance: ``verdict``, ``certified_by`` (the methods that verify), ``min_margin_lower`` (per
method, the smallest certified lower bound of the margins ``f_y − f_j``, j ≠ y, logit units, after
the rule's float64 recomputation of near-zero bounds) and ``best_min_margin_lower`` (the largest of
those: the best bound ctxbudget has for the instance).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..bounds.verify import certify

VERDICT_METHODS = ("ibp", "crown-ibp")


def instance_verdicts(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, lower: torch.Tensor,
                      upper: torch.Tensor, methods: Sequence[str] = VERDICT_METHODS,
                      batch_size: int = 64) -> list[dict[str, Any]]:
    """ctxbudget's verdict on the boxes ``[lower, upper]`` (N×C×H×W, pixel units) around ``images``.

    Returns one JSON-safe dict per example (see the module docstring).
    """
    if not methods:
        raise ValueError("need at least one bound method")
    n = len(images)
    per_method: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        correct = classifier(images).argmax(1).cpu() == labels.cpu()
    for m in methods:
        mins, ok = [], []
        for s in range(0, n, batch_size):
            sl = slice(s, min(s + batch_size, n))
            v = certify(classifier, lower[sl], upper[sl], labels[sl], m, correct=correct[sl].to(images.device),
                        x=images[sl])
            mins.append(v.min_lower.cpu())
            ok.append(v.verified.cpu())
        per_method[m] = (torch.cat(mins), torch.cat(ok))
    out: list[dict[str, Any]] = []
    for i in range(n):
        by = [m for m in methods if bool(per_method[m][1][i])]
        lows = {m: float(per_method[m][0][i]) for m in methods}
        verdict = "certified" if by else ("misclassified" if not bool(correct[i]) else "not certified")
        out.append({"verdict": verdict, "certified_by": by, "min_margin_lower": lows,
                    "best_min_margin_lower": max(lows.values())})
    return out
