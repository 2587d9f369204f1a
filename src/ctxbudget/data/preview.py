"""PNG preview grids of a data set (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from .base import PathLike
from .registry import get_dataset


def save_preview(
    name: str,
    out_path: PathLike,
    root: Optional[PathLike] = None,
    split: str = "train",
    per_class: int = 6,
    seed: int = 0,
    show_regions: bool = False,
    download: bool = False,
    *,
    path: Optional[PathLike] = None,
    classes: Optional[Sequence[str]] = None,
) -> Path:
    """Write a PNG grid with one row per class and ``per_class`` random examples of that class
    (chosen with ``seed``; the data set itself is built with the same ``seed``). Rows are
    labelled ``"k: class name"``. With ``show_regions`` the label-carrying region of each example
    (if the data set has one) is outlined in yellow. ``path``/``classes``: the folder or archive of
    ``image-folder`` (see :func:`ctxbudget.data.get_dataset`). Returns the path written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ds = get_dataset(name, split, root=root, seed=seed, download=download, path=path, classes=classes)
    info = ds.info
    c, h, w = info.input_shape
    g = torch.Generator().manual_seed(int(seed))
    ncls = info.num_classes
    cell = 1.1
    fig, axes = plt.subplots(
        ncls, per_class, figsize=(per_class * cell * w / h + 1.6, ncls * cell + 0.6), squeeze=False
    )
    for k in range(ncls):
        idx = torch.nonzero(ds.labels == k).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)[:per_class]]
        for j in range(per_class):
            ax = axes[k, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j == 0:
                ax.set_ylabel(f"{k}: {info.classes[k]}", rotation=0, ha="right", va="center", fontsize=8)
            if j >= idx.numel():
                continue
            img = ds.images[idx[j]]
            if c == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            if show_regions and ds.regions is not None:
                ax.contour(ds.regions[idx[j], 0].float().numpy(), levels=[0.5], colors="yellow", linewidths=0.6)
    fig_h = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig_h))
    fig.suptitle(f"{info.label} ({split}, n={len(ds)}, seed={seed})", fontsize=10, y=1 - 0.08 / fig_h, va="top")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
