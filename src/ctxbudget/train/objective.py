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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import robust_cross_entropy
from ..bounds.verify import certify
from ..budgets import BudgetModel, input_box


class Objective(nn.Module):
    def __init__(self, classifier: nn.Sequential, threat: BudgetModel) -> None:
        super().__init__()
        self.classifier = classifier
        self.threat = threat

    def forward(self, x: torch.Tensor, y: torch.Tensor, eps0: float, kappa: float, beta: float,
                method: str = "crown-ibp", fusion: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x: B×C×H×W in [0, 1]; y: B. Returns (mean loss, sums over the batch of loss terms/counts)."""
        logits = self.classifier(x)
        natural = F.cross_entropy(logits, y, reduction="none")
        stats = {"n": torch.tensor(float(len(y)), device=x.device),
                 "clean_wrong": (logits.argmax(1) != y).sum().float()}
        self.threat.eps0 = float(eps0)
        if eps0 <= 0:
            loss = natural.mean()
            stats.update(loss=natural.sum().detach(), robust=torch.zeros((), device=x.device),
                         verified_wrong=stats["clean_wrong"].clone(), eps_sum=torch.zeros((), device=x.device),
                         eps_n=torch.zeros((), device=x.device),
                         eps_min=torch.zeros((), device=x.device), eps_max=torch.zeros((), device=x.device))
            # keep every parameter in the graph (DDP expects all parameters to get gradients)
            return loss + 0.0 * sum(p.sum() for p in self.threat.parameters()), stats
        eps = self.threat(x)
        lower, upper = input_box(x, eps)
        robust, margins = robust_cross_entropy(self.classifier, lower, upper, y, method=method, fusion=fusion,
                                               beta=beta, return_margins=True, x=x)
        per_example = kappa * natural + (1 - kappa) * robust
        with torch.no_grad():  # the certificate the loss computation produced on the way (progress display)
            verified = certify(self.classifier, lower, upper, y, method, lower=margins, correct=logits.argmax(1) == y,
                               recheck=False, x=x).verified
            flat = eps.detach().reshape(len(y), -1)
        stats.update(loss=per_example.sum().detach(), robust=robust.sum().detach(),
                     verified_wrong=(~verified).sum().float(), eps_sum=flat.mean(1).sum(), eps_n=stats["n"].clone(),
                     eps_min=flat.min(), eps_max=flat.max())
        return per_example.mean(), stats
