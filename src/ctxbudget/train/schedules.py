"""Per-optimizer-step schedules: the ε0 (volume) ramp, the κ and β mixing weights, the learning rate.

Steps are 0-based global optimizer steps, epochs count from 1, ``L`` = steps per epoch. These are
the auto_LiRPA / CROWN-IBP conventions:

* linear ramp (``LinearScheduler``): 0 before the first step of epoch ``start``; then linear per
  step, reaching the maximum at the first step of epoch ``start + length``.
* smoothed ramp (``SmoothedScheduler``, Gowal et al.): ``a·(s − init)^4`` up to ``mid_s``, then linear
  to the maximum at ``final``, with ``a`` chosen so the slope is continuous at ``mid_s``.
* κ (natural-loss weight) = 1 − (1 − κ_final)·ε/ε_max and β (CROWN-IBP weight) = 1 − (1 − β_final)·ε/ε_max.
* warm-up regulariser weight (Shi et al. 2021) = λ0·(1 − ε/ε_max): λ0 as the ramp starts, 0 once it ends.
* learning rate: ``lr·decay^k`` where k counts the milestones the current epoch has passed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: the ramp shapes of ``schedule.kind``
RAMP_KINDS = ("linear", "smoothed")


@dataclass(frozen=True)
class RampSchedule:
    """Fraction ε(s)/ε_max ∈ [0, 1] of the target reached at global step ``s``."""

    kind: str            # "linear" | "smoothed"
    start: int           # epoch (1-based) whose first step starts the ramp
    length: int          # ramp length in epochs
    steps_per_epoch: int
    mid: float = 0.25

    def __post_init__(self) -> None:
        if self.kind not in RAMP_KINDS:
            raise ValueError(f"unknown ramp kind {self.kind!r} ({' | '.join(RAMP_KINDS)})")
        if self.steps_per_epoch < 1:
            raise ValueError("steps_per_epoch must be >= 1")

    @property
    def init_step(self) -> int:
        return (self.start - 1) * self.steps_per_epoch

    @property
    def final_step(self) -> int:
        return (self.start + self.length - 1) * self.steps_per_epoch

    def __call__(self, step: int) -> float:
        init, final = self.init_step, self.final_step
        if step >= final:
            return 1.0
        if step <= init:
            return 0.0
        if self.kind == "linear":
            return (step - init) / (final - init)
        mid_s = math.floor((final - init) * self.mid) + init
        if mid_s <= init:  # ramp too short for a polynomial part: plain linear
            return (step - init) / (final - init)
        t = (mid_s - init) ** 3
        a = 1.0 / ((final - mid_s) * 4 * t + (mid_s - init) * t)
        if step < mid_s:
            return a * (step - init) ** 4
        mid_v = a * (mid_s - init) ** 4
        return mid_v + (1.0 - mid_v) * (step - mid_s) / (final - mid_s)


def mixing_weight(fraction: float, final: float) -> float:
    """κ or β: 1 at the start of the ramp, ``final`` at its end (linear in ε/ε_max)."""
    return 1.0 - (1.0 - final) * fraction


def warmup_weight(fraction: float, lambda0: float) -> float:
    """Weight of the warm-up regularisers at ramp fraction ε0(t)/ε0_max ∈ [0, 1]: ``λ0·(1 − fraction)``."""
    return lambda0 * (1.0 - fraction)


def learning_rate(base_lr: float, epoch: int, milestones: list[int], decay: float) -> float:
    """Step decay by epoch: ×decay for each milestone m with ``epoch > m`` (epochs from 1)."""
    return base_lr * decay ** sum(1 for m in milestones if epoch > m)
