"""The training objective as one ``nn.Module``: natural CE mixed with a certified robust CE.

``Objective(classifier, threat)(x, y, eps0, kappa, beta, method, fusion)`` returns the scalar loss
and per-batch counts. Packing it into one module is what lets ``DistributedDataParallel`` wrap the
classifier and the budget generator together (DDP hooks fire on ``forward``), while the bound
engine walks the classifier's layers itself.

loss = κ·CE(f(x), y) + (1 − κ)·L_rob,  L_rob = upper bound of max_{x' ∈ box} CE(f(x'), y) on the box
[clip(x − ε(x)), clip(x + ε(x))], mixed β·CROWN-IBP + (1 − β)·IBP (``ctxbudget.bounds``). With ε0 = 0
the batch is trained naturally (κ = 1). The clean batch x goes to the bound engine (statistics of
train-mode BatchNorm). The per-batch "verified" count applies ``ctxbudget.bounds.verify``'s rule
(without the float64 re-check: ``m̲ > 2τ``) to the margin bounds the loss computed.

Optional terms (off by default, each usable alone, for learned and uniform budgets):

* MTL-IBP (``mtl_alpha`` = α, De Palma et al. 2024): L_rob is replaced by
  ``α·L_rob + (1 − α)·CE(f(x_adv), y)`` with x_adv = clip(x + ε(x) ⊙ t) from a per-pixel PGD
  (:mod:`ctxbudget.train.adversarial`); f is the network as bounded (train-mode BatchNorm with the
  clean batch's statistics, so attack, adversarial loss and bound see the same function).
* Shi et al.'s warm-up regularisers (:mod:`ctxbudget.train.regularizers`), added to the mean loss
  with the weight ``warmup_weight`` the trainer passes per step: ``+ w·(L_tight + L_relu)``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import Bounder
from ..bounds.loss import robust_cross_entropy_from
from ..bounds.verify import certify
from ..budgets import BudgetModel, input_box
from .adversarial import adversarial_point, pgd_offsets
from .regularizers import warmup_regularizers


@dataclass
class StepSums:
    """The additive statistics of training batches (0-dim tensors; sums over examples, then over
    steps and ranks): examples ``n``, ``clean_wrong`` / ``verified_wrong`` counts, ``loss`` (the
    per-example loss) and ``robust`` (L_rob) sums, ``eps_sum`` (Σ of per-example mean ε) over
    ``eps_n`` examples. ``to_tensor``/``from_tensor`` pack them, in field order, into one float64
    vector (one all-reduce for all of them)."""

    n: torch.Tensor
    clean_wrong: torch.Tensor
    verified_wrong: torch.Tensor
    loss: torch.Tensor
    robust: torch.Tensor
    eps_sum: torch.Tensor
    eps_n: torch.Tensor

    def __add__(self, other: StepSums) -> StepSums:
        return StepSums(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def to_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The fields in order as one float64 vector (length ``len(fields)``)."""
        return torch.stack([torch.as_tensor(getattr(self, f.name), dtype=torch.float64, device=device)
                            for f in fields(self)])

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> StepSums:
        """Inverse of :meth:`to_tensor` (0-dim tensors)."""
        return cls(*t.unbind())


@dataclass
class StepStats:
    """What :class:`Objective` reports about one batch: the additive ``sums``, the smallest and
    largest budget of the batch (``eps_min``/``eps_max``; 0 when ε0 = 0), ``warmup_reg`` (the
    weighted warm-up regulariser × B) and ``adversarial`` (the sum of the MTL-IBP adversarial CE)."""

    sums: StepSums
    eps_min: torch.Tensor
    eps_max: torch.Tensor
    warmup_reg: torch.Tensor
    adversarial: torch.Tensor


class Objective(nn.Module):
    """The training loss of one batch. ``warmup_tol``: τ of the warm-up regularisers; ``mtl_alpha``:
    α of MTL-IBP (None: off); ``attack_steps``/``attack_step_size``: its PGD (step in units of ε_i)."""

    def __init__(self, classifier: nn.Sequential, threat: BudgetModel, *, warmup_tol: float = 0.5,
                 mtl_alpha: float | None = None, attack_steps: int = 1, attack_step_size: float = 10.0) -> None:
        super().__init__()
        self.classifier = classifier
        self.threat = threat
        self.warmup_tol = warmup_tol
        self.mtl_alpha = mtl_alpha
        self.attack_steps = attack_steps
        self.attack_step_size = attack_step_size

    def forward(self, x: torch.Tensor, y: torch.Tensor, eps0: float, kappa: float, beta: float,
                method: str = "crown-ibp", fusion: bool = True,
                warmup_weight: float = 0.0) -> tuple[torch.Tensor, StepStats]:
        """x: B×C×H×W in [0, 1]; y: B; ``warmup_weight``: weight of the warm-up regularisers this
        step (0: not computed). Returns (mean loss, :class:`StepStats` of the batch)."""
        # κ = 0 (after the ramp of a κ_final = 0 schedule): the clean CE has weight 0, its gradient
        # would be exact zeros; the logits only feed the statistics, so no graph is kept for them
        with torch.set_grad_enabled(torch.is_grad_enabled() and (kappa != 0 or eps0 <= 0)):
            logits = self.classifier(x)
        natural = F.cross_entropy(logits, y, reduction="none")
        def zero() -> torch.Tensor:
            return torch.zeros((), device=x.device)

        n = torch.tensor(float(len(y)), device=x.device)
        clean_wrong = (logits.argmax(1) != y).sum().float()
        if eps0 <= 0:
            loss = natural.mean()
            sums = StepSums(n=n, clean_wrong=clean_wrong, verified_wrong=clean_wrong.clone(),
                            loss=natural.sum().detach(), robust=zero(), eps_sum=zero(), eps_n=zero())
            stats = StepStats(sums, eps_min=zero(), eps_max=zero(), warmup_reg=zero(), adversarial=zero())
            # keep every parameter in the graph (DDP expects all parameters to get gradients)
            return loss + 0.0 * sum(p.sum() for p in self.threat.parameters()), stats
        eps = self.threat(x, float(eps0))
        lower, upper = input_box(x, eps)
        bd = Bounder(self.classifier, lower, upper, x)
        robust, margins = robust_cross_entropy_from(bd, y, method=method, fusion=fusion, beta=beta,
                                                    return_margins=True)
        bound_term = robust
        adversarial_sum = zero()
        if self.mtl_alpha is not None:
            t = pgd_offsets(bd.forward, x, eps, y, self.attack_steps, self.attack_step_size)
            adversarial = F.cross_entropy(bd.forward(adversarial_point(x, eps, t)), y, reduction="none")
            bound_term = self.mtl_alpha * robust + (1 - self.mtl_alpha) * adversarial
            adversarial_sum = adversarial.sum().detach()
        per_example = kappa * natural + (1 - kappa) * bound_term
        loss = per_example.mean()
        warmup_reg = zero()
        if warmup_weight > 0:
            tight, balance = warmup_regularizers(bd, self.warmup_tol)
            reg = warmup_weight * (tight + balance)
            loss = loss + reg
            warmup_reg = reg.detach() * len(y)
        with torch.no_grad():  # the certificate the loss computation produced on the way (progress display)
            verified = certify(self.classifier, lower, upper, y, method, lower=margins, correct=logits.argmax(1) == y,
                               recheck=False, x=x, bounder=bd).verified   # τ from the loss's own IBP pass
            flat = eps.detach().reshape(len(y), -1)
        sums = StepSums(n=n, clean_wrong=clean_wrong, verified_wrong=(~verified).sum().float(),
                        loss=per_example.sum().detach(), robust=robust.sum().detach(), eps_sum=flat.mean(1).sum(),
                        eps_n=n.clone())
        return loss, StepStats(sums, eps_min=flat.min(), eps_max=flat.max(), warmup_reg=warmup_reg,
                               adversarial=adversarial_sum)
