"""The budget-generator network g_θ (the paper's Appendix A).

``BudgetGenerator(input_shape)`` maps an image batch B×C×H×W in [0, 1] to g ∈ (0, 1)^{B×C×H×W}:
Conv(C→4, k=3, pad=1) → ReLU → Conv(4→8, k=3, pad=1) → ReLU → Flatten → Linear(8·H·W → C·H·W)
→ Sigmoid. Padding 1 keeps the spatial size (the paper does not state it). Turning g into budgets
(range and volume constraints) is ``ctxbudget.budgets``' job.
"""
from __future__ import annotations

import torch
from torch import nn


class BudgetGenerator(nn.Module):
    """g_θ: B×C×H×W images → B×C×H×W scores in (0, 1)."""

    def __init__(self, input_shape: tuple[int, int, int], hidden_channels: tuple[int, int] = (4, 8)) -> None:
        super().__init__()
        c, h, w = (int(v) for v in input_shape)
        self.input_shape = (c, h, w)
        c1, c2 = hidden_channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(c2 * h * w, c * h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"BudgetGenerator expects B×{'×'.join(map(str, self.input_shape))} input, got {tuple(x.shape)}")
        return torch.sigmoid(self.head(self.features(x))).view_as(x)
