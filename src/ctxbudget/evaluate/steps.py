"""The steps of an evaluation: clean predictions, verify a batch, attack a batch, a budget column,
the Liu et al. column. Pixel units (images and budgets B×C×H×W in [0, 1]); logit units for margins.

Every "verified" decision goes through :func:`ctxbudget.bounds.verify.certify` (the one rule).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..bounds.verify import BoundFn, Verdict, certify
from ..budgets import input_box, log_volume
from ..devices import module_device
from .attack import example_seeds, pgd_attack
from .liu2019 import liu_max_volume
from .ranks import ONE_PROCESS, Shard, gather_strings, merge_owned
from .result import BudgetColumn, LiuColumn


@dataclass
class AttackSettings:
    """PGD settings shared by every attack of one evaluation (``attack.pgd_attack``)."""

    steps: int = 50
    restarts: int = 1
    targets: int = 3
    loss: str = "margin"
    seed: int = 0
    precision: str = "float32"      # float32 | bfloat16: the steps' matrix products (resolved, never "auto")

    def as_dict(self) -> dict:
        return {"steps": self.steps, "restarts": self.restarts, "targets": self.targets, "loss": self.loss,
                "seed": self.seed, "precision": self.precision}


def on(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` moved to ``device`` (a no-op where they are there already): the data set stays
    where it was loaded (usually the CPU) and each batch goes to the model."""
    return tuple(t.to(device, non_blocking=True) for t in tensors)


def batches(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering range(n)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def clean_predictions(classifier: nn.Module, images: torch.Tensor, batch_size: int,
                      shard: Shard = ONE_PROCESS) -> np.ndarray:
    """Arg-max class of every image (N, int64); each batch runs on the classifier's device, and
    ``shard`` says which batches this process computes (``ranks``: the others come from the other ranks)."""
    dev = module_device(classifier)
    n = len(images)
    pred = np.zeros(n, np.int64)
    for s in shard.mine(batches(n, batch_size)):
        pred[s] = classifier(on(dev, images[s])[0]).argmax(1).cpu().numpy()
    return merge_owned({"pred": pred}, shard.owned(n, batches(n, batch_size)), dev)["pred"]


def verify_batch(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, correct: torch.Tensor,
                 methods: Sequence[str], bound_fn: Optional[BoundFn]) -> dict[str, Verdict]:
    """The verdict of each method on the clipped box of budgets ``eps`` around ``x`` (B×C×H×W)."""
    with torch.no_grad():
        lo, hi = input_box(x, eps)
    return {m: certify(classifier, lo, hi, y, m, correct=correct, bound_fn=bound_fn, x=x) for m in methods}


def attack_batch(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor,
                 settings: AttackSettings, column: str, indices: torch.Tensor | range) -> np.ndarray:
    """Smallest margin PGD reaches in the box (B, logit units; < 0: broken, and then the first negative
    margin found: an example leaves the attack once broken, ``pgd_attack(stop_when_broken=True)``). Example ``indices[i]``
    (its index in the evaluated set) draws its starts from its own seed for ``column``
    (``attack.example_seeds``): the result does not depend on batching or on how ranks split the set."""
    seeds = example_seeds(settings.seed, column, indices)
    return pgd_attack(classifier, x, y, eps, steps=settings.steps, restarts=settings.restarts,
                      targets=settings.targets, loss=settings.loss, seeds=seeds,
                      stop_when_broken=True, precision=settings.precision).min_margin.cpu().numpy()


def budget_column(classifier: nn.Module, budget: nn.Module, kind: str, images: torch.Tensor, labels: torch.Tensor,
                  correct: np.ndarray, methods: Sequence[str], settings: AttackSettings,
                  bound_fn: Optional[BoundFn], batch_size: int, progress: bool,
                  shard: Shard = ONE_PROCESS) -> tuple[BudgetColumn, dict[str, float]]:
    """Verify and attack every example under ``budget`` (a threat model ``x → ε``); each batch runs
    on the classifier's device; this process computes ``shard``'s batches, the other ranks the rest.

    Returns the column and the seconds spent ``{"verify_KIND": …, "attack_KIND": …}``.
    """
    n = len(images)
    lower = {m: np.zeros(n) for m in methods}
    tol = {m: np.zeros(n) for m in methods}
    verified = {m: np.zeros(n, bool) for m in methods}
    rechecked = {m: np.zeros(n, bool) for m in methods}
    att, logv = np.zeros(n, np.float32), np.zeros(n)
    t_verify = t_attack = 0.0
    dev = module_device(classifier)
    for s in tqdm(shard.mine(batches(n, batch_size)), desc=f"{kind} budgets", disable=not progress, leave=False):
        x, y = on(dev, images[s], labels[s])
        t = time.perf_counter()
        with torch.no_grad():
            eps = budget(x)
        ok = torch.as_tensor(correct[s], device=x.device)
        for m, v in verify_batch(classifier, x, y, eps, ok, methods, bound_fn).items():
            lower[m][s], tol[m][s] = v.min_lower.cpu().numpy(), v.tol.max(1).values.cpu().numpy()
            verified[m][s], rechecked[m][s] = v.verified.cpu().numpy(), v.rechecked.cpu().numpy()
        logv[s] = log_volume(eps).cpu().numpy()
        t_verify += time.perf_counter() - t
        t = time.perf_counter()
        att[s] = attack_batch(classifier, x, y, eps, settings, kind, range(s.start, s.stop))
        t_attack += time.perf_counter() - t
    arrays = {"att": att, "logv": logv, **{f"{name}:{m}": d[m] for name, d in
                                           (("lower", lower), ("tol", tol), ("verified", verified), ("rechecked", rechecked))
                                           for m in methods}}
    arrays = merge_owned(arrays, shard.owned(n, batches(n, batch_size)), dev)
    pick = lambda name: {m: arrays[f"{name}:{m}"] for m in methods}
    col = BudgetColumn(kind=kind, lower=pick("lower"), tol=pick("tol"), verified=pick("verified"),
                       rechecked=pick("rechecked"), attack_margin=arrays["att"], log_volume=arrays["logv"])
    return col, {f"verify_{kind}": t_verify, f"attack_{kind}": t_attack}


def liu_column(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps0: float, limit: int, *,
               method: str, iters: int, lr: float, settings: AttackSettings,
               bound_fn: Optional[BoundFn], batch_size: int, progress: bool,
               shard: Shard = ONE_PROCESS) -> tuple[LiuColumn, list[str]]:
    """Liu et al. (2019) on the first ``limit`` examples; their certificates are attacked with
    ``settings`` (soundness). Returns the column and the violations found (strings). Each batch runs
    on the classifier's device."""
    n = len(images)
    n_liu = min(max(int(limit), 0), n)
    dims = int(images[0].numel())
    logv, ok = np.full(n, np.nan), np.zeros(n, bool)
    violations: list[str] = []
    kwargs: dict[str, Any] = {} if bound_fn is None else {"bound_fn": bound_fn}
    dev = module_device(classifier)
    for s in tqdm(shard.mine(batches(n_liu, batch_size)), desc="liu2019", disable=not progress, leave=False):
        x, y = on(dev, images[s], labels[s])
        res = liu_max_volume(classifier, x, y, method=method, iters=iters, lr=lr, progress=progress, **kwargs)
        logv[s] = res.log_volume.cpu().numpy()
        ok[s] = res.certified.cpu().numpy() & (res.log_volume.cpu().numpy() >= dims * math.log(eps0))
        cert = res.certified.nonzero().flatten()
        if cert.numel() and settings.steps > 0:
            margin = attack_batch(classifier, x[cert], y[cert], res.eps[cert], settings, "liu2019",
                                  (s.start + cert.cpu()).tolist())
            violations += [f"example {s.start + int(i)} certified by {method} on its Liu et al. budgets but broken "
                           f"by PGD (margin {m:.4g})" for i, m in zip(cert.tolist(), margin) if m < 0]
    owned = shard.owned(n, batches(n_liu, batch_size))
    owned[n_liu:] = shard.rank == 0                     # not evaluated (NaN, False): rank 0's copy
    merged = merge_owned({"logv": logv, "ok": ok}, owned, dev)
    return (LiuColumn(n=n_liu, method=method, log_volume=merged["logv"], verified=merged["ok"]),
            gather_strings(violations))
