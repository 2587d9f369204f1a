"""Clean / verified / attack / Liu-et-al. evaluation of a classifier under a threat model.

Pixel units throughout: images B×C×H×W in [0, 1], budgets ε of the same shape, boxes clipped to
[0, 1] (``ctxbudget.budgets.input_box``). Conventions (docs/method.md in the source distribution):

* an example is *verified* by a bound method by the rule of ``ctxbudget.bounds.verify`` (classified
  correctly, every margin lower bound ``m̲_j`` above its rounding tolerance τ_j, near-zero bounds
  recomputed in float64); "any" = verified by at least one requested method; misclassified
  examples are never verified;
* an example is *broken* by the attack iff PGD finds a point of the box where some margin is < 0
  (misclassified examples are broken at the clean point);
* soundness invariant (``soundness.py``): every certified margin lower bound is ≤ the margin PGD
  reached plus 2τ, so no verified example is broken. A violation raises ``SoundnessError`` naming
  the example index, the budget kind and the method (``strict=False`` only counts them).

The steps (``steps.py``: clean predictions, verify / attack a batch, a budget column, the Liu et al.
column) fill a typed :class:`~ctxbudget.evaluate.result.EvalResult`. Entry points:
:func:`evaluate_model` (explicit objects, returns the JSON-safe summary) and :func:`evaluate_run`
(a trained run directory or registered model: loads data, writes ``results.json`` and ``per_example.npz``).
"""
from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence, cast

import numpy as np
import torch
from torch import nn

from ..bounds.engine import METHODS
from ..bounds.verify import BoundFn
from ..budgets import UniformBudget
from ..contextuality import budget_contextuality
from ..data import ImageDataset, get_dataset
from ..devices import module_device
from ..errors import UserError
from ..run import Run, atomic_write_bytes, output_dir_for
from ..runtime import attack_precision as attack_precision_for
from .ranks import current_shard, max_seconds
from .result import BudgetColumn, EvalResult
from .soundness import column_violations, raise_if_any
from .steps import AttackSettings, budget_column, clean_predictions, liu_column

DEFAULT_METHODS = ("ibp", "crown-ibp")


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"ibp,crown-ibp"`` → ("ibp", "crown-ibp"); raises UserError on unknown names."""
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [m for m in items if m not in METHODS]
    if not items or bad:
        raise UserError(f"unknown bound method(s) {bad or text!r}; choose from {', '.join(METHODS)} (comma-separated)")
    return tuple(dict.fromkeys(items))


def evaluate_model(classifier: nn.Module, threat: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                   methods: Sequence[str] = DEFAULT_METHODS, batch_size: int = 128, attack_steps: int = 50,
                   attack_restarts: int = 1, attack_targets: int = 3, attack_loss: str = "margin",
                   attack_precision: str = "float32", liu_limit: int = 100,
                   liu_method: str = "crown-ibp", liu_iters: int = 100, liu_lr: float = 0.05,
                   bound_fn: BoundFn | None = None, seed: int = 0, progress: bool | None = None,
                   strict: bool = True, return_records: bool = False) -> Any:
    """Evaluate ``classifier`` under the budgets of ``threat`` and under uniform ``threat.eps0``.

    Each batch runs on the classifier's device (``images`` stay where they are). Under ``torchrun``
    (a default process group) rank r evaluates every W-th batch and every rank returns the whole
    result, equal to one process's (``ranks.py``).

    Args:
        classifier: N×C×H×W → N×K logits (switched to eval mode, as is the threat model).
        threat: budget model (``forward(x) -> ε``, ``.eps0``, ``.kind``), e.g. ``LearnedBudget``.
        images: N×C×H×W in [0, 1]; labels: (N,) int64.
        methods: bound methods for the verified errors (subset of ibp, crown-ibp, crown, alpha-crown).
        attack_steps / attack_restarts / attack_targets / attack_loss: PGD settings
            (``attack.pgd_attack``: steps per run, untargeted runs, targeted runs against the most
            likely other classes, objective), used for every attack (learned, uniform and Liu et al.
            budgets).
        attack_precision: ``float32`` (default), ``bfloat16``, or ``auto`` (bf16 where the device
            multiplies bf16 natively): the attack's matrix products (``attack.pgd_attack(precision=...)``;
            its margins and broken decisions stay float32; bf16 is faster and breaks about 1 % fewer
            examples, ``benchmarks/README.md``). What ``auto`` chose is in ``attack.precision``.
        liu_limit: number of leading examples for the (expensive) Liu et al. column; 0 skips it.
        liu_method / liu_iters / liu_lr: bound method and optimiser settings of ``liu_max_volume``.
        bound_fn: margin lower-bound function (default: ``ctxbudget.bounds``); tests inject others.
        seed: seed of the attack's random starts: example i of column k draws from its own seed
            (``attack.example_seeds(seed, k, i)``), whatever the batch size or process split.
        progress: tqdm bars (default: only when stderr is a terminal).
        strict: raise ``SoundnessError`` on a violation of the soundness invariant (else count them).
        return_records: also return per-example arrays (``EvalResult.records()``).

    Returns:
        ``EvalResult.summary()`` (JSON-safe; see ``result.py``), or ``(summary, records)``.
    """
    t_total = time.perf_counter()
    methods = parse_methods(methods)
    liu_method = parse_methods([liu_method])[0]
    progress = sys.stderr.isatty() if progress is None else progress
    precision = attack_precision_for(attack_precision, module_device(classifier))   # ValueError if unknown
    settings = AttackSettings(steps=attack_steps, restarts=attack_restarts, targets=attack_targets, loss=attack_loss,
                              seed=seed, precision=precision)
    images, labels, eps0 = _checked_inputs(threat, images, labels)
    classifier.eval()
    threat.eval()
    seconds: dict[str, float] = {}
    shard = current_shard()                                    # torchrun: this rank's batches; else all

    t = time.perf_counter()
    pred = clean_predictions(classifier, images, batch_size, shard)
    correct = pred == labels.cpu().numpy()
    seconds["clean"] = time.perf_counter() - t

    kinds = {"learned": threat, "uniform": UniformBudget(eps0)}
    if getattr(threat, "kind", "") == "uniform":
        kinds = {"uniform": kinds["uniform"]}                  # learned == uniform: compute once
    columns: dict[str, BudgetColumn] = {}
    violations: list[str] = []
    for kind, budget in kinds.items():
        columns[kind], secs = budget_column(classifier, budget, kind, images, labels, correct, methods, settings,
                                            bound_fn, batch_size, progress, shard)
        seconds.update(secs)
        violations += column_violations(columns[kind], labels.cpu().numpy(), methods)
    raise_if_any(violations, strict)
    if "learned" not in kinds:
        seconds["verify_learned"] = seconds["attack_learned"] = 0.0

    t = time.perf_counter()
    liu, liu_violations = liu_column(classifier, images, labels, eps0, liu_limit, method=liu_method, iters=liu_iters,
                                     lr=liu_lr, settings=settings, bound_fn=bound_fn,
                                     batch_size=batch_size, progress=progress, shard=shard)
    seconds["liu2019"] = time.perf_counter() - t
    violations += liu_violations
    raise_if_any(violations, strict)
    seconds["total"] = time.perf_counter() - t_total
    seconds = max_seconds(seconds, module_device(classifier))
    result = EvalResult(eps0=eps0, dims=int(images[0].numel()), methods=methods, labels=labels.cpu().numpy(),
                        prediction=pred, columns=columns, liu=liu if liu.n else None, violations=violations,
                        attack=settings.as_dict(), seconds=seconds)
    return (result.summary(), result.records()) if return_records else result.summary()


def _checked_inputs(threat: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(images as float32, labels as int64, threat.eps0)`` after checking them: tensors, at least one
    example, one label per image, ε0 in (0, 1]."""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("images and labels must be torch tensors")
    images, labels = images.float(), labels.long()
    n = int(images.shape[0])
    if n == 0:
        raise UserError("no examples to evaluate (empty data set or --limit 0)")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    eps0 = float(cast(Any, threat).eps0)
    if not 0 < eps0 <= 1:
        raise ValueError(f"the threat model's eps0 must lie in (0, 1], got {eps0}")
    return images, labels, eps0


def load_split(run: Run, split: str = "test", data_dir: str | None = None) -> ImageDataset:
    """The run's data set split (``ctxbudget.data.get_dataset``), same synthetic seed as training."""
    d = run.config.data
    return get_dataset(run.dataset, split, root=data_dir or run.data_root, seed=d.seed, path=d.path, classes=d.classes)


def evaluate_run(run: Run, *, split: str = "test", limit: int | None = None, data_dir: str | None = None,
                 write: bool = True, images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 out_dir: str | Path | None = None, **kwargs: Any) -> dict:
    """Evaluate a loaded run (``ctxbudget.run.load_run``): its classifier under ``run.threat``.

    Loads ``split`` of the run's data set (unless ``images``/``labels`` are given), keeps the first
    ``limit`` examples, calls :func:`evaluate_model` with ``kwargs`` and, if ``write``, saves
    ``results.json`` and ``per_example.npz`` (arrays named as in the records) into ``out_dir``,
    by default the run directory (for a registered model ``runs/NAME``: ``run.output_dir``).
    """
    out = output_dir_for(run, out_dir) if write else None      # refuse a bad folder before the work
    regions = None
    if images is None or labels is None:
        ds = load_split(run, split, data_dir)
        images, labels, regions = ds.images, ds.labels, ds.regions
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be >= 1, got {limit}")
        images, labels = images[:limit], labels[:limit]
        regions = regions[:limit] if regions is not None else None
    results, rec = evaluate_model(run.classifier, run.threat, images, labels, return_records=True, **kwargs)
    results = {"run_dir": str(run.run_dir), **({"model": run.model} if run.model is not None else {}),
               "dataset": run.dataset, "data_source": run.data_label, "split": split,
               "checkpoint": checkpoint_info(run),
               "training": {"kind": run.kind, "eps0": float(run.eps0), "alpha_lo": run.alpha_lo,
                            "alpha_hi": run.alpha_hi}, **results}
    if len(images) >= 2:
        dev = module_device(run.classifier)
        results["contextuality"] = budget_contextuality(lambda x: run.threat(x.to(dev)).cpu(), images.cpu(),
                                                        dataset_name=run.dataset,
                                                        regions=None if regions is None else regions.cpu())
    if out is not None:
        write_results(out, results, rec)
    return results


def checkpoint_info(run: Run) -> dict:
    """Which weights were evaluated: ``{"file": "final.pt", "epoch": 12, "step": 480}`` (None if unknown)."""
    meta = run.meta
    path = meta.get("checkpoint")
    name = None
    if path is not None:
        p = Path(path)
        try:
            name = str(p.relative_to(Path(run.run_dir)))
        except ValueError:
            name = str(p)
    return {"file": name, "epoch": meta.get("epoch"), "step": meta.get("step")}


def write_results(run_dir: Path, results: dict, records: dict[str, np.ndarray]) -> None:
    """``RUN_DIR/per_example.npz`` and then ``RUN_DIR/results.json`` (any JSON-safe dict), both atomically:
    results.json is written last, so an evaluation interrupted between the two is not taken as done."""
    buf = io.BytesIO()
    arrays: dict[str, Any] = dict(records)
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(run_dir / "per_example.npz", buf.getvalue())
    atomic_write_bytes(run_dir / "results.json", (json.dumps(results, indent=2) + "\n").encode())
