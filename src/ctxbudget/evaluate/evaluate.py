"""Clean / verified / attack / Liu-et-al. evaluation of a classifier under a threat model.

Pixel units throughout: images B×C×H×W in [0, 1], budgets ε of the same shape, boxes clipped to
[0, 1] (``ctxbudget.budgets.input_box``). Conventions (docs/method.md in the source distribution):

* an example is *verified* by a bound method iff it is classified correctly and every margin lower
  bound ``m̲_j`` (j ≠ y) is > 0; "any" = verified by at least one requested method (the per-example
  best); misclassified examples are never verified;
* an example is *broken* by the attack iff PGD finds a point of the box where some margin is < 0
  (misclassified examples are broken at the clean point);
* soundness invariant: no verified example may be broken. A violation raises ``SoundnessError``
  naming the example index, the budget kind and the method (``strict=False`` only counts them).

Entry points: :func:`evaluate_model` (explicit objects, returns a JSON-safe dict) and
:func:`evaluate_run` (a trained run directory: loads data, writes ``results.json`` and
``per_example.npz``).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence, cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..budgets import UniformBudget, input_box, log_volume
from ..errors import SoundnessError, UserError
from .attack import pgd_attack
from .liu2019 import METHODS, BoundFn, liu_max_volume, margin_lower_bounds

DEFAULT_METHODS = ("ibp", "crown-ibp")


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"ibp,crown-ibp"`` → ("ibp", "crown-ibp"); raises UserError on unknown names."""
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [m for m in items if m not in METHODS]
    if not items or bad:
        raise UserError(f"unknown bound method(s) {bad or text!r}; choose from {', '.join(METHODS)} (comma-separated)")
    return tuple(dict.fromkeys(items))


def _key(name: str) -> str:
    return name.replace("-", "_")


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _frac(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 0.0


def _check(violations: list[str], strict: bool) -> None:
    if violations and strict:
        raise SoundnessError(f"{len(violations)} certified example(s) broken by the attack; first: "
                             + "; ".join(violations[:3]))


def evaluate_model(classifier: nn.Module, threat: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                   methods: Sequence[str] = DEFAULT_METHODS, batch_size: int = 128, attack_steps: int = 50,
                   attack_restarts: int = 1, attack_loss: str = "margin", liu_limit: int = 100,
                   liu_method: str = "crown-ibp", liu_iters: int = 100, liu_lr: float = 0.05,
                   bound_fn: BoundFn | None = None, seed: int = 0, progress: bool | None = None,
                   strict: bool = True, return_records: bool = False) -> Any:
    """Evaluate ``classifier`` under the budgets of ``threat`` and under uniform ``threat.eps0``.

    Args:
        classifier: N×C×H×W → N×K logits (switched to eval mode, as is the threat model).
        threat: budget model (``forward(x) -> ε``, ``.eps0``, ``.kind``), e.g. ``LearnedBudget``.
        images: N×C×H×W in [0, 1]; labels: (N,) int64.
        methods: bound methods for the verified errors (subset of ibp, crown-ibp, crown, alpha-crown).
        attack_steps / attack_restarts / attack_loss: PGD settings (``attack.pgd_attack``).
        liu_limit: number of leading examples for the (expensive) Liu et al. column; 0 skips it.
        liu_method / liu_iters / liu_lr: bound method and optimiser settings of ``liu_max_volume``.
        bound_fn: margin lower-bound function (default: ``ctxbudget.bounds``); tests inject others.
        seed: seed of the attack's random starts.
        progress: tqdm bars (default: only when stderr is a terminal).
        strict: raise ``SoundnessError`` on a violation (else only count it).
        return_records: also return per-example arrays (dict of numpy arrays, length N).

    Returns:
        The results dict (JSON-safe; fractions in [0, 1]), or ``(results, records)``. Keys:
        ``n``, ``dims`` (n per example), ``eps0``, ``clean_err``; ``verified_err`` → {learned,
        uniform, liu2019} (learned/uniform: verified by any requested method; liu2019 over the
        first ``n_liu2019`` examples, None if skipped); ``verified_err_by_method`` → {kind →
        {method → fraction}}; ``attack_err`` → {learned, uniform}; ``soundness_violations`` (0);
        ``mean_log_volume_liu2019``: mean over Liu-certified examples of (1/n)·Σ_i log ε_i, i.e.
        the mean log of the geometric-mean budget (compare with ``target_log_volume_per_dim`` =
        log ε0; ``mean_geo_budget_liu2019`` is its exp); ``seconds`` per part. Records: arrays
        ``index``, ``label``, ``prediction``, ``correct``, ``verified_{kind}_{method}``,
        ``verified_{kind}_any``, ``min_lb_{kind}_{method}`` / ``min_lb_{kind}`` (smallest margin
        lower bound, best method), ``attack_margin_{kind}``, ``log_volume_{kind}``,
        ``liu_evaluated``, ``liu_log_volume`` (NaN if not evaluated, −inf if uncertified),
        ``verified_liu2019``; method names with "-" written with "_".
    """
    t_total = time.perf_counter()
    methods = parse_methods(methods)
    liu_method = parse_methods([liu_method])[0]
    bound_fn = bound_fn or margin_lower_bounds
    progress = sys.stderr.isatty() if progress is None else progress
    images, labels = images.float(), labels.long()
    n = int(images.shape[0])
    if n == 0:
        raise UserError("no examples to evaluate (empty data set or --limit 0)")
    dims = int(images[0].numel())
    eps0 = float(cast(Any, threat).eps0)
    gen = torch.Generator().manual_seed(seed)
    classifier.eval()
    threat.eval()
    seconds: dict[str, float] = {}
    rec: dict[str, np.ndarray] = {"index": np.arange(n), "label": labels.numpy().copy()}

    t = time.perf_counter()
    with torch.no_grad():
        pred = torch.cat([classifier(images[s]).argmax(1) for s in _batches(n, batch_size)])
    correct = (pred == labels).numpy()
    rec["prediction"], rec["correct"] = pred.numpy(), correct
    seconds["clean"] = time.perf_counter() - t

    kinds = {"learned": threat, "uniform": UniformBudget(eps0)}
    if getattr(threat, "kind", "") == "uniform":
        kinds = {"uniform": kinds["uniform"]}                  # learned == uniform: compute once
    violations: list[str] = []
    for kind, budget in kinds.items():
        lbs = {m: np.zeros(n, np.float32) for m in methods}
        att = np.zeros(n, np.float32)
        logv = np.zeros(n, np.float64)
        t_b = t_a = 0.0
        for s in tqdm(_batches(n, batch_size), desc=f"{kind} budgets", disable=not progress, leave=False):
            x, y = images[s], labels[s]
            t = time.perf_counter()
            with torch.no_grad():
                eps = budget(x)
                lo, hi = input_box(x, eps)
                for m in methods:
                    lbs[m][s] = bound_fn(classifier, lo, hi, y, m).min(dim=1).values.numpy()
            logv[s] = log_volume(eps).numpy()
            t_b += time.perf_counter() - t
            t = time.perf_counter()
            att[s] = pgd_attack(classifier, x, y, eps, steps=attack_steps, restarts=attack_restarts,
                                loss=attack_loss, generator=gen).min_margin.numpy()
            t_a += time.perf_counter() - t
        seconds[f"verify_{kind}"], seconds[f"attack_{kind}"] = t_b, t_a
        any_ok = np.zeros(n, bool)
        for m in methods:
            ok = correct & (lbs[m] > 0)
            any_ok |= ok
            rec[f"min_lb_{kind}_{_key(m)}"], rec[f"verified_{kind}_{_key(m)}"] = lbs[m], ok
            violations += [f"example {i} (label {int(labels[i])}) certified by {m} under {kind} budgets but "
                           f"broken by PGD (margin {att[i]:.4g})" for i in np.flatnonzero(ok & (att < 0))]
        rec[f"verified_{kind}_any"] = any_ok
        rec[f"min_lb_{kind}"] = np.max(np.stack([lbs[m] for m in methods]), axis=0)
        rec[f"attack_margin_{kind}"], rec[f"log_volume_{kind}"] = att, logv
    _check(violations, strict)
    if "learned" not in kinds:
        for key in [k for k in rec if "_uniform" in k]:
            rec[key.replace("_uniform", "_learned")] = rec[key]
        seconds["verify_learned"] = seconds["attack_learned"] = 0.0

    t = time.perf_counter()
    n_liu = min(max(int(liu_limit), 0), n)
    liu_logv = np.full(n, np.nan)
    liu_ok = np.zeros(n, bool)
    for s in tqdm(_batches(n_liu, batch_size), desc="liu2019", disable=not progress, leave=False):
        x, y = images[s], labels[s]
        res = liu_max_volume(classifier, x, y, method=liu_method, bound_fn=bound_fn, iters=liu_iters,
                             lr=liu_lr, progress=progress)
        liu_logv[s] = res.log_volume.numpy()
        liu_ok[s] = res.certified.numpy() & (res.log_volume.numpy() >= dims * math.log(eps0))
        cert = res.certified.nonzero().flatten()
        if cert.numel() and attack_steps > 0:                   # soundness of Liu's certificates too
            broken = pgd_attack(classifier, x[cert], y[cert], res.eps[cert], steps=attack_steps,
                                generator=gen).broken
            violations += [f"example {s.start + int(i)} certified by {liu_method} on its Liu et al. budgets "
                           f"but broken by PGD" for i in cert[broken]]
    seconds["liu2019"] = time.perf_counter() - t
    rec["liu_evaluated"] = np.arange(n) < n_liu
    rec["liu_log_volume"], rec["verified_liu2019"] = liu_logv, liu_ok
    _check(violations, strict)

    per_dim = liu_logv[:n_liu] / dims
    finite = per_dim[np.isfinite(per_dim)]
    seconds["total"] = time.perf_counter() - t_total
    unver = {k: ~rec[f"verified_{k}_any"] for k in ("learned", "uniform")}
    results = {
        "n": n,
        "dims": dims,
        "eps0": eps0,
        "clean_err": _frac(~correct),
        "verified_err": {"learned": _frac(unver["learned"]), "uniform": _frac(unver["uniform"]),
                         "liu2019": _frac(~liu_ok[:n_liu]) if n_liu else None},
        "verified_err_by_method": {k: {m: _frac(~rec[f"verified_{k}_{_key(m)}"]) for m in methods}
                                   for k in ("learned", "uniform")},
        "attack_err": {k: _frac(rec[f"attack_margin_{k}"] < 0) for k in ("learned", "uniform")},
        "soundness_violations": len(violations),
        "n_liu2019": n_liu,
        "liu2019_method": liu_method,
        "liu2019_certified_frac": _frac(np.isfinite(per_dim)) if n_liu else None,
        # mean over certified examples of (1/n)·Σ_i log ε_i, i.e. the log of the geometric-mean budget
        "mean_log_volume_liu2019": float(finite.mean()) if finite.size else None,
        "mean_geo_budget_liu2019": float(np.exp(finite.mean())) if finite.size else None,
        "target_log_volume_per_dim": math.log(eps0),
        "mean_log_volume_learned_per_dim": float(np.mean(rec["log_volume_learned"]) / dims),
        "methods": list(methods),
        "attack": {"steps": attack_steps, "restarts": attack_restarts, "loss": attack_loss, "seed": seed},
        "seconds": seconds,
    }
    return (results, rec) if return_records else results


def load_split(run: Any, split: str = "test", data_dir: str | None = None) -> Any:
    """The run's data set split (``ctxbudget.data.get_dataset``), same synthetic seed as training."""
    from ..data import get_dataset

    seed = int((getattr(run, "config", None) or {}).get("data", {}).get("seed", 0))
    return get_dataset(run.dataset, split, root=data_dir or getattr(run, "data_root", None), seed=seed)


def evaluate_run(run: Any, *, split: str = "test", limit: int | None = None, data_dir: str | None = None,
                 write: bool = True, images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 **kwargs: Any) -> dict:
    """Evaluate a loaded run (``ctxbudget.run.load_run``): its classifier under ``run.threat``.

    Loads ``split`` of the run's data set (unless ``images``/``labels`` are given), keeps the first
    ``limit`` examples, calls :func:`evaluate_model` with ``kwargs`` and, if ``write``, saves
    ``RUN_DIR/results.json`` and ``RUN_DIR/per_example.npz`` (arrays named as in the records).
    """
    if images is None or labels is None:
        ds = load_split(run, split, data_dir)
        images, labels = ds.images, ds.labels
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be >= 1, got {limit}")
        images, labels = images[:limit], labels[:limit]
    results, rec = evaluate_model(run.classifier, run.threat, images, labels, return_records=True, **kwargs)
    results = {"run_dir": str(run.run_dir), "dataset": run.dataset, "split": split,
               "training": {"kind": run.kind, "eps0": float(run.eps0), "alpha_lo": getattr(run, "alpha_lo", None),
                            "alpha_hi": getattr(run, "alpha_hi", None)}, **results}
    if write:
        out = Path(run.run_dir)
        tmp = out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(out / "results.json")
        np.savez_compressed(out / "per_example.npz", **rec)
    return results
