"""PGD inside a non-uniform, clipped box (the empirical side of the soundness check).

All tensors are in pixel units: images ``x`` B×C×H×W in [0, 1], budgets ``eps`` of the same shape.
The attack searches the box ``[max(x − ε, 0), min(x + ε, 1)]`` (``ctxbudget.budgets.input_box``),
so dimensions whose box has zero width (ε_i = 0, or x_i at the domain edge on the clipped side) are
never moved. Every step is a signed-gradient step of per-pixel size proportional to that pixel's
budget, then a projection (element-wise clamp) back onto the box.

:func:`pgd_attack` runs, on the whole batch at once:

1. ``restarts`` *untargeted* runs (objective: the smallest margin ``f_y − max_{j≠y} f_j``, or
   cross-entropy) from uniform random points of the box with the constant step
   ``step_factor · ε_i / steps`` (Madry et al.: 2.5·ε_i/steps);
2. ``targets`` *targeted* runs: run k pushes the margin ``f_y − f_j`` against the k-th most likely
   other class j of each example (ranked by the clean logits; ``targets ≥ K−1`` tries every class),
   starting alternately from a random corner of the box (every pixel at lo or hi, chosen at
   random; runs 1, 3, …) and a uniform random point (runs 2, 4, …), with a cosine step schedule
   ``ε_i · (1 + cos(π t / steps)) / 2`` that decays from ``ε_i`` to 0.

Untargeted PGD follows the class that is closest at the start and can stall on it while another
class is reachable (an example of the quick-start model that α,β-CROWN broke and a single
untargeted run did not); the targeted runs with large early steps cover that case. The
untargeted runs draw their random starts first, exactly as the single-restart attack of earlier versions did, so
the result is never weaker than that attack with the same generator; the targeted runs draw from
a generator seeded from its state (:func:`_side_generator`) without advancing it, so this holds
for every call of a sequence sharing one generator (an evaluation's batches).

Randomness: either one ``generator`` for the batch (as above), or ``seeds`` — one integer per
example (:func:`example_seeds`), from which each example draws its own starts (untargeted runs from
a generator seeded with it, targeted runs from one seeded with its side seed). With ``seeds`` an
example's attack does not depend on the other examples of its batch, on the batch size or on how
the examples are split across processes (``evaluate`` under torchrun).

An example is *broken* when some margin ``f_y − f_j`` (j ≠ y) is < 0 at a point of the box. The
smallest margin over **all** classes is recorded at the clean point and at every iterate of every
run (the best point is kept), so misclassified examples count as broken.

Precision (``precision="bfloat16"``): the steps' forward and backward passes run under bf16
autocast (1.3–1.5× faster on a CPU with AVX-512 BF16, ``benchmarks/README.md``; the attack only
*searches*, as the generator only chooses the box). What it reports stays float32: a bf16 margin can be off by a few
tenths of a logit (measured: up to 0.42 on the registered models), so every iterate whose bf16
margin is below :data:`BF16_CHECK_BELOW` is re-evaluated in float32 before it counts, an example is
broken (and leaves the attack) only on a float32 margin < 0, and at the end ``min_margin`` is the
float32 margin at ``x_adv`` (or at the clean point) for every example.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..bounds.conv import fold_forward
from ..bounds.loss import other_classes
from ..budgets import input_box
from ..runtime import bf16_autocast_on

#: the attack's compute precisions (``pgd_attack(precision=...)``)
PRECISIONS = ("float32", "bfloat16")
#: a bf16 margin below this (logits) is re-evaluated in float32 before it counts: bf16 margins were
#: measured up to 0.42 off the float32 ones (0.1–0.3 typical) at random points of the registered models'
#: learned boxes (``benchmarks/README.md``). Checking every iterate within that error costs more than
#: the bf16 steps save (an iterate of a robust example sits a few logits from the boundary); the
#: iterates that matter are those near or past 0, and ``_Search.settle`` re-evaluates the best point
BF16_CHECK_BELOW = 0.25


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Margins ``f_y − f_j`` for every j ≠ y, shape B×(K−1) (j ascending, y left out)."""
    true = logits.gather(1, y.view(-1, 1))
    return (true - logits).gather(1, other_classes(y, logits.shape[1]))


def min_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smallest margin ``f_y − max_{j≠y} f_j`` per example (B); < 0 means misclassified."""
    return margins(logits, y).min(dim=1).values


@dataclass
class AttackResult:
    """``min_margin``: lowest margin found per example (B, logit units); ``x_adv``: the point (B×C×H×W)
    where it was found; ``broken``: ``min_margin < 0`` (B, bool)."""

    min_margin: torch.Tensor
    x_adv: torch.Tensor

    @property
    def broken(self) -> torch.Tensor:
        return self.min_margin < 0


def _targets(logits: torch.Tensor, y: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` most likely classes other than y per example (B×count, by descending logit)."""
    masked = logits.detach().clone()
    masked.scatter_(1, y.view(-1, 1), float("-inf"))
    return masked.argsort(dim=1, descending=True)[:, :count]


def _side_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """RNG of the targeted runs: seeded from ``generator``'s state without advancing it, so adding
    targeted runs leaves every later draw of the untargeted runs (this call's and later calls')
    as it was. ``None`` (torch's global RNG) stays ``None``."""
    if generator is None:
        return None
    digest = hashlib.sha256(generator.get_state().numpy().tobytes()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def example_seeds(seed: int, column: str, indices: torch.Tensor | range) -> torch.Tensor:
    """One attack seed per example (int64, in [0, 2^63)): a hash of (``seed``, ``column``, example
    index), so an example's random starts are the same however the examples are batched or split."""
    out = [int.from_bytes(hashlib.sha256(f"{int(seed)}:{column}:{int(i)}".encode()).digest()[:8], "little") >> 1
           for i in indices]
    return torch.tensor(out, dtype=torch.int64)


class _Draws:
    """Uniform [0, 1) draws of the attack's starts: from one generator for the whole batch, or per
    example from generators seeded with ``seeds`` (untargeted) and their side seeds (targeted)."""

    def __init__(self, generator: torch.Generator | None, seeds: torch.Tensor | None) -> None:
        self.generator = generator
        self.side: torch.Generator | None = None    # seeded from `generator` after the untargeted draws
        self.each: tuple[list[torch.Generator], list[torch.Generator]] | None = None
        if seeds is not None:
            main = [torch.Generator().manual_seed(int(v)) for v in seeds.tolist()]
            side = [torch.Generator().manual_seed(int(v) ^ _SIDE_SALT) for v in seeds.tolist()]
            self.each = (main, side)

    def uniform(self, shape: torch.Size, dtype: torch.dtype, device: torch.device, targeted: bool) -> torch.Tensor:
        if self.each is None:
            if targeted and self.side is None:
                self.side = _side_generator(self.generator)
            return torch.rand(shape, generator=self.side if targeted else self.generator, dtype=dtype).to(device)
        return torch.stack([torch.rand(shape[1:], generator=g, dtype=dtype) for g in self.each[int(targeted)]]).to(device)


#: XOR-ed into an example's seed for the generator of its targeted runs
_SIDE_SALT = 0x5DEECE66D


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, *,
               steps: int = 50, restarts: int = 1, targets: int = 3, step_factor: float = 2.5,
               loss: str = "margin", generator: torch.Generator | None = None,
               seeds: torch.Tensor | None = None, stop_when_broken: bool = False,
               precision: str = "float32") -> AttackResult:
    """Minimise the margin of ``model`` over the clipped box around ``x`` with per-pixel budgets.

    Args:
        model: classifier, B×C×H×W → B×K logits (used as is; put it in eval mode yourself).
        x: clean images B×C×H×W in [0, 1]; y: labels (B, int64).
        eps: budgets B×C×H×W ≥ 0 (pixel units).
        steps: PGD steps per run (0 evaluates the clean point only).
        restarts: untargeted runs from uniform random starts, constant step (module docstring, 1).
        targets: targeted runs against the most likely other classes, from random corners and
            uniform points with a cosine step schedule (module docstring, 2); 0 turns them off.
            Like AutoAttack's later attacks, they attack only the examples not broken yet.
        step_factor: the untargeted runs' step per pixel is ``step_factor · eps / steps``.
        loss: objective of the untargeted runs, ``"margin"`` (maximise ``max_{j≠y} f_j − f_y``) or
            ``"ce"`` (cross-entropy); the targeted runs use the targeted margin ``f_j − f_y``.
        generator: torch RNG for the random starts (reproducibility).
        seeds: instead of ``generator``, one seed per example (B int64, :func:`example_seeds`):
            each example draws its own starts, independent of its batch.
        stop_when_broken: stop attacking an example once some margin < 0 was found (its
            ``min_margin`` is then that negative margin, not the smallest reachable): the broken set
            is the same, the work on broken examples stops (``evaluate`` uses it).
        precision: ``"float32"`` or ``"bfloat16"``: the dtype of the steps' matrix products (bf16
            autocast on a CPU or CUDA device; elsewhere float32). Margins, the broken decision and the
            result are float32 either way (module docstring).

    Returns:
        AttackResult with the smallest margin (over all classes) seen at the clean point and every
        iterate of every run, and the point where it was reached. Costs at most ``(restarts +
        min(targets, K−1)) · steps`` forward/backward passes of the batch.
    """
    if loss not in ("margin", "ce"):
        raise ValueError(f"loss must be 'margin' or 'ce', got {loss!r}")
    if steps < 0 or restarts < 1 or targets < 0:
        raise ValueError(f"need steps >= 0, restarts >= 1 and targets >= 0, got {steps}, {restarts}, {targets}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if seeds is not None and (generator is not None or tuple(seeds.shape) != (len(x),)):
        raise ValueError("seeds: one per example (shape (B,)), and not together with a generator")
    x = x.detach()
    eps = eps.detach().to(x.dtype)
    lo, hi = input_box(x, eps)
    net = fold_forward(model)  # same values; the first layer's input gradient by product and fold (bounds.conv)
    with torch.no_grad():
        clean_logits = net(x)
        best = min_margin(clean_logits, y)
    clean = best.clone()
    low = precision == "bfloat16" and bf16_autocast_on(x.device.type)
    search = _Search(net, y, lo, hi, steps, loss, best, x.clone(), stop_when_broken, low)
    if steps == 0:
        return AttackResult(min_margin=best, x_adv=search.best_x)
    everyone = torch.arange(len(x), device=x.device)
    constant = step_factor * eps / steps
    draws = _Draws(generator, seeds)
    for _ in range(restarts):                                     # 1. untargeted, constant step
        u = draws.uniform(x.shape, x.dtype, x.device, targeted=False)
        search.descend(everyone, lo + u * (hi - lo), None, lambda t: constant)
    n_targets = min(targets, int(clean_logits.shape[1]) - 1)
    ranked = _targets(clean_logits, y, n_targets)
    for k in range(n_targets):                                    # 2. targeted, cosine schedule
        u = draws.uniform(x.shape, x.dtype, x.device, targeted=True)
        start = torch.where(u < 0.5, lo, hi) if k % 2 == 0 else lo + u * (hi - lo)   # corner / uniform
        idx = (best >= 0).nonzero().flatten()                     # not broken yet
        if idx.numel():
            search.descend(idx, start[idx], ranked[idx, k], lambda t: eps * (0.5 * (1 + math.cos(math.pi * t / steps))))
    if low:
        search.settle(x, clean)
    return AttackResult(min_margin=search.best, x_adv=search.best_x)


@dataclass
class _Search:
    """The state of one :func:`pgd_attack` call: the model, labels and box, and the smallest margin found
    so far per example (``best``, B) with the point where it was found (``best_x``, B×C×H×W), both
    updated in place. ``low``: the steps run under bf16 autocast (:meth:`logits_at`)."""

    model: Callable[[torch.Tensor], torch.Tensor]
    y: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    steps: int
    loss: str
    best: torch.Tensor
    best_x: torch.Tensor
    stop_when_broken: bool = False
    low: bool = False

    def logits_at(self, point: torch.Tensor) -> torch.Tensor:
        """The model's logits at ``point`` (float32 values; bf16 matrix products where ``low``)."""
        with torch.autocast(point.device.type, dtype=torch.bfloat16, enabled=self.low):
            return self.model(point).float()

    @torch.no_grad()
    def checked(self, point: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Margins ``m`` at ``point`` with every bf16 value below :data:`BF16_CHECK_BELOW` replaced by the
        float32 margin (a no-op in float32): a margin < 0 from here on is a float32 one."""
        if not self.low:
            return m
        close = (m < BF16_CHECK_BELOW).nonzero().flatten()
        if close.numel():
            m = m.clone()
            m[close] = min_margin(self.model(point[close]), y[close])
        return m

    @torch.no_grad()
    def settle(self, x: torch.Tensor, clean: torch.Tensor) -> None:
        """After a bf16 search: ``best`` becomes the float32 margin at ``best_x``, or the clean margin
        ``clean`` (and ``best_x`` the clean point ``x``) where that is lower."""
        at_best = min_margin(self.model(self.best_x), self.y)
        keep = at_best <= clean
        self.best.copy_(torch.where(keep, at_best, clean))
        self.best_x.copy_(torch.where(keep.view(-1, *([1] * (x.dim() - 1))), self.best_x, x))

    def record(self, idx: torch.Tensor, point: torch.Tensor, m: torch.Tensor) -> None:
        """Keep ``point`` (len(idx)×C×H×W) for the examples ``idx`` whose margin ``m`` is lower."""
        better = m < self.best[idx]
        if bool(better.any()):
            self.best[idx[better]] = m[better]
            self.best_x[idx[better]] = point[better]

    def descend(self, idx: torch.Tensor, start: torch.Tensor, target: torch.Tensor | None,
                step_at: Callable[[int], torch.Tensor]) -> None:
        """One PGD run on the examples ``idx`` from ``start`` (len(idx)×C×H×W): ``steps`` signed-gradient
        steps of size ``step_at(t)`` (B×C×H×W, indexed by ``idx``), each projected onto the box. With
        ``stop_when_broken``, an example leaves the run at the first step where it is broken."""
        yi, loi, hii = self.y[idx], self.lo[idx], self.hi[idx]
        point = start
        for t in range(self.steps):
            if self.stop_when_broken:
                keep = self.best[idx] >= 0
                if not bool(keep.all()):
                    if not bool(keep.any()):
                        return
                    idx, point, yi, loi, hii = idx[keep], point[keep], yi[keep], loi[keep], hii[keep]
                    target = None if target is None else target[keep]
            point.requires_grad_(True)
            logits = self.logits_at(point)
            m = min_margin(logits, yi)
            grad, = torch.autograd.grad(_objective(logits, yi, m, target, self.loss), point)
            with torch.no_grad():
                point = point.detach()
                self.record(idx, point, self.checked(point, yi, m.detach()))
                point = torch.max(torch.min(point + step_at(t)[idx] * grad.sign(), hii), loi)
        with torch.no_grad():
            logits = self.logits_at(point)
            self.record(idx, point, self.checked(point, yi, min_margin(logits, yi)))


def _objective(logits: torch.Tensor, y: torch.Tensor, m: torch.Tensor, target: torch.Tensor | None,
               loss: str) -> torch.Tensor:
    """What a PGD step ascends: the targeted margin ``f_j − f_y`` (``target`` given), else minus the
    smallest margin ``m`` (``loss="margin"``) or the cross-entropy (``loss="ce"``), summed over the batch."""
    if target is not None:
        return (logits.gather(1, target.view(-1, 1)) - logits.gather(1, y.view(-1, 1))).sum()
    if loss == "margin":
        return -m.sum()
    return nn.functional.cross_entropy(logits, y, reduction="sum")
