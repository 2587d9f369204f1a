"""The budget-map figure of one certified image: the input beside its budgets ε (pixel units)."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from ..viz import plt  # matplotlib with the Agg backend


def budget_map_figure(image: torch.Tensor, eps: torch.Tensor, lower: float, upper: float, title: str) -> Figure:
    """Figure with the C×H×W ``image`` (grey or RGB) and the channel-mean budget map of ``eps``
    (C×H×W, pixel units) on the colour scale [``lower``, ``upper``] (the range limits l, u)."""
    img = image.detach().cpu().numpy()
    e = eps.detach().cpu().numpy().mean(axis=0)
    fig, (ax_img, ax_eps) = plt.subplots(1, 2, figsize=(6.4, 3.2))
    if img.shape[0] == 1:
        ax_img.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax_img.imshow(np.clip(np.moveaxis(img[:3], 0, -1), 0.0, 1.0), interpolation="nearest")
    ax_img.set_title("input", fontsize=9)
    im = ax_eps.imshow(e, cmap="viridis", vmin=lower, vmax=upper, interpolation="nearest")
    ax_eps.set_title("budget ε" + (" (channel mean)" if img.shape[0] > 1 else ""), fontsize=9)
    for ax in (ax_img, ax_eps):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=ax_eps, fraction=0.046, pad=0.04).set_label("ε (pixel units)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig
