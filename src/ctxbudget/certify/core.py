"""Per-image certificates of a loaded run: :func:`certify_images`.

For images x (N×C×H×W, pixels in [0, 1]) and a label y per image (default: the prediction), for the
run's learned budgets ε(x) and for uniform ε0 (only the latter for a uniform run), and for each bound
method: the margin lower bound ``min_{j≠y} m̲_j`` over the clipped box [max(x−ε, 0), min(x+ε, 1)]
(logit units) and whether it certifies y (the one rounding-safe rule, ``ctxbudget.bounds.certify``).
Every image is attacked with PGD and checked against the evaluation's soundness invariant (the
certified margin lower bound ≤ the margin PGD reached + 2τ; no certified image broken):
``SoundnessError`` otherwise.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..bounds.verify import Verdict, certify
from ..budgets import UniformBudget, input_box, log_volume
from ..data import get_info
from ..errors import SoundnessError, UserError
from ..evaluate import margin_lower_bounds, parse_methods, pgd_attack
from ..run import Run


def certify_images(run: Run, images: torch.Tensor, *, labels: Sequence[int] | None = None,
                   methods: Sequence[str] = ("ibp", "crown-ibp"), attack_steps: int = 20,
                   seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """Certify ``images`` (N×C×H×W in [0, 1]) with a run from ``ctxbudget.load_run``.

    Returns ``(reports, budgets)``: one JSON-safe dict per image (keys ``prediction``, ``class``,
    ``label``, ``correct`` (None without labels), ``eps0``, ``budget_stats`` {kind → min / max /
    geometric mean of ε}, ``certified`` {kind → {method → bool}}, ``certified_any`` {kind → bool},
    ``margin_lower_bound`` {kind → {method → float}}) and the budget tensors {kind → N×C×H×W}.
    """
    methods = parse_methods(methods)
    if images.dim() != 4 or images.shape[0] == 0:
        raise UserError(f"need a non-empty N×C×H×W batch of images, got shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()) or float(images.min()) < 0 or float(images.max()) > 1:
        raise UserError("images must be finite pixels in [0, 1]")
    classifier = run.classifier.eval()
    images = images.to(run.device)                      # everything below runs on the run's device
    with torch.no_grad():
        logits = classifier(images)
    k = int(logits.shape[1])
    pred = logits.argmax(1)
    if labels is None:
        y, correct = pred.clone(), None
    else:
        if len(labels) != len(images) or any(not 0 <= int(v) < k for v in labels):
            raise UserError(f"need one label in [0, {k}) per image, got {list(labels)}")
        y = torch.as_tensor([int(v) for v in labels], dtype=torch.long, device=images.device)
        correct = pred == y
    ok = torch.ones_like(pred, dtype=torch.bool) if correct is None else correct
    kinds: dict[str, Any] = {"uniform": UniformBudget(run.eps0)}
    if run.kind != "uniform":
        kinds = {"learned": run.threat, **kinds}
    gen = torch.Generator().manual_seed(seed)
    budgets: dict[str, torch.Tensor] = {}
    lbs: dict[str, dict[str, torch.Tensor]] = {}
    verified: dict[str, dict[str, torch.Tensor]] = {}
    for kind, threat in kinds.items():
        with torch.no_grad():
            eps = threat(images)
            lo, hi = input_box(images, eps)
            lbs[kind] = {m: margin_lower_bounds(classifier, lo, hi, y, m) for m in methods}
        budgets[kind] = eps.cpu()
        verdicts = {m: certify(classifier, lo, hi, y, m, lower=lbs[kind][m], correct=ok, x=images) for m in methods}
        verified[kind] = {m: v.verified for m, v in verdicts.items()}
        if attack_steps > 0:
            res = pgd_attack(classifier, images, y, eps, steps=attack_steps, generator=gen)
            _check_soundness(kind, verdicts, res.min_margin.double())
    names = _class_names(run)
    reports = []
    for i in range(len(images)):
        stats = {}
        for kind, eps in budgets.items():
            e = eps[i:i + 1]
            stats[kind] = {"min": float(e.min()), "max": float(e.max()),
                           "geo_mean": math.exp(float(log_volume(e)[0]) / e.numel())}
        reports.append({
            "prediction": int(pred[i]),
            "class": names[int(pred[i])] if int(pred[i]) < len(names) else str(int(pred[i])),
            "label": int(y[i]),
            "correct": None if correct is None else bool(correct[i]),
            "eps0": float(run.eps0),
            "budget_stats": stats,
            "certified": {kd: {m: bool(v[i]) for m, v in d.items()} for kd, d in verified.items()},
            "certified_any": {kd: any(bool(v[i]) for v in d.values()) for kd, d in verified.items()},
            "margin_lower_bound": {kd: {m: float(v[i].min()) for m, v in d.items()} for kd, d in lbs.items()},
        })
    return reports, budgets


def _check_soundness(kind: str, verdicts: dict[str, Verdict], attack_margin: torch.Tensor) -> None:
    """The evaluation's soundness invariant (``ctxbudget.evaluate.soundness``) for every image and method:
    the certified smallest margin lower bound is ≤ the smallest margin PGD reached + 2τ (τ: the image's
    largest rounding tolerance), and no certified image is broken. ``SoundnessError`` otherwise."""
    for m, v in verdicts.items():
        broken = v.verified & (attack_margin < 0)
        above = v.min_lower > attack_margin + 2 * v.tol.max(dim=1).values
        bad = (broken | above).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            what = "certified but broken by PGD" if bool(broken[i]) else "has a margin lower bound above the margin PGD reached"
            raise SoundnessError(f"image {i} {what} under {kind} budgets ({m}: bound {float(v.min_lower[i]):.6g}, "
                                 f"PGD margin {float(attack_margin[i]):.6g})")


def _class_names(run: Run) -> list[str]:
    d = run.config.data
    if d.classes is not None:     # an image folder's class order, recorded at training
        return list(d.classes)
    try:
        return list(get_info(d.name, d.path).classes)
    except (ValueError, UserError):   # a user data set registered in another process; image folder not here
        return []
