"""The budget-generator network g_θ (the paper's Appendix A), and a local variant.

``BudgetGenerator(input_shape, head="dense")`` maps an image batch B×C×H×W in [0, 1] to
g ∈ (0, 1)^{B×C×H×W}:

* ``head="dense"`` (the paper): Conv(C→4, k=3, pad=1) → ReLU → Conv(4→8, k=3, pad=1) → ReLU →
  Flatten → Linear(8·H·W → C·H·W) → Sigmoid. Padding 1 keeps the spatial size (the paper does not
  state it). The dense head sees the whole image (needed where the label-carrying region is
  chosen by a distant cue, as the border of the Doubled data sets), but it can also store one fixed
  budget mask for every image in its weights and bias.
* ``head="conv"`` (not in the paper): the same two convolutions, then Conv(8→C, k=3, pad=1) →
  Sigmoid. Each budget depends on the 7×7 neighbourhood of its pixel only, so budgets follow the
  image content and the generator cannot store a position-fixed mask. It has 409 instead of
  4.9 M weights on MNIST.

Turning g into budgets (range and volume constraints) is ``ctxbudget.budgets``' job.
"""
from __future__ import annotations

import torch
from torch import nn

HEADS = ("dense", "conv")


class BudgetGenerator(nn.Module):
    """g_θ: B×C×H×W images → B×C×H×W scores in (0, 1)."""

    def __init__(self, input_shape: tuple[int, int, int], hidden_channels: tuple[int, int] = (4, 8),
                 head: str = "dense") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"generator head must be one of {', '.join(HEADS)}, got {head!r}")
        c, h, w = (int(v) for v in input_shape)
        self.input_shape = (c, h, w)
        self.head_kind = head
        c1, c2 = hidden_channels
        convs: list[nn.Module] = [nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU()]
        if head == "dense":
            self.features = nn.Sequential(*convs, nn.Flatten())
            self.head: nn.Module = nn.Linear(c2 * h * w, c * h * w)
        else:
            self.features = nn.Sequential(*convs)
            self.head = nn.Conv2d(c2, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"BudgetGenerator expects B×{'×'.join(map(str, self.input_shape))} input, got {tuple(x.shape)}")
        return torch.sigmoid(self.head(self.features(x))).view_as(x)
