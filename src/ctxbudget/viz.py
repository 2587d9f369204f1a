"""Figures: budget maps (the paper's Figures 2–6), training curves, budget histograms, region stats.

Matplotlib with the Agg backend (no display needed). Functions take tensors or arrays in pixel
units (images N×C×H×W in [0, 1], budgets ε of the same shape) and return a ``Figure``;
:func:`save_figure` writes it as PNG (and PDF). Budget maps are shown in grey normalised by the
upper limit u (``ε/u`` in [0, 1], lighter = larger budget); RGB budgets are averaged over channels
(optionally also shown per channel).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

ArrayLike = Any  # numpy array or torch tensor


def _np(a: ArrayLike) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _show_image(ax: Any, img: np.ndarray) -> None:
    """Draw one C×H×W image in [0, 1] (grey for C = 1, RGB for C = 3)."""
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def budget_grid(images: ArrayLike, eps: ArrayLike, upper: float, *, labels: Sequence[int] | None = None,
                preds: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                per_channel: bool = False, title: str | None = None) -> Figure:
    """Grid: top row the inputs, below them the budget maps ε/u (grey, lighter = larger budget).

    Args:
        images: N×C×H×W in [0, 1]; eps: budgets N×C×H×W (pixel units); upper: the limit u.
        labels, preds: optional class indices (N) written under each column ("label / prediction").
        per_channel: for C > 1 add one map row per channel below the channel-mean map.
    """
    imgs, e = _np(images).astype(np.float32), _np(eps).astype(np.float32)
    n, c = imgs.shape[:2]
    rel = e / max(float(upper), 1e-12)
    maps = [("ε/u" + (" (mean)" if c > 1 else ""), rel.mean(axis=1))]
    if per_channel and c > 1:
        names = ["R", "G", "B"] if c == 3 else [f"ch{i}" for i in range(c)]
        maps += [(f"ε/u ({names[i]})", rel[:, i]) for i in range(c)]
    rows = 1 + len(maps)
    cell = 1.35 * imgs.shape[2] / imgs.shape[3]                        # keep the image aspect ratio
    fig, axes = plt.subplots(rows, n, figsize=(1.35 * n + 0.9, (cell + 0.3) * rows + 0.4), squeeze=False)
    im = None
    for j in range(n):
        _show_image(axes[0, j], imgs[j])
        if labels is not None:
            cls = lambda k: class_names[k] if class_names is not None and k < len(class_names) else str(k)
            text = cls(int(labels[j])) + (f" / {cls(int(preds[j]))}" if preds is not None else "")
            color = "black" if preds is None or int(preds[j]) == int(labels[j]) else "red"
            axes[0, j].set_title(text, fontsize=8, color=color)
        for r, (_, m) in enumerate(maps, start=1):
            im = axes[r, j].imshow(m[j], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=8)
    for r, (name, _) in enumerate(maps, start=1):
        axes[r, 0].set_ylabel(name, fontsize=7)
    fig.subplots_adjust(left=0.06, right=0.88, bottom=0.04, top=0.86 if title else 0.9, wspace=0.08, hspace=0.25)
    cax = fig.add_axes((0.9, 0.08, 0.02, 0.8 * (rows - 1) / rows))
    assert im is not None  # n ≥ 1 columns were drawn
    fig.colorbar(im, cax=cax).set_label("ε / u", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def compare_budget_maps(images: ArrayLike, rows: Sequence[tuple[str, ArrayLike, float, Sequence[str]]], *,
                        titles: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Inputs on top, then one row of budget maps ε/u per generator (the same images, side by side).

    Args:
        images: N×C×H×W in [0, 1]. rows: ``(name, eps N×C×H×W, upper u, notes)`` per row; ``notes``
            (N strings) are written under each map (e.g. the panel's contextuality figures).
        titles: N strings above the inputs (e.g. the labels).
    """
    imgs = _np(images).astype(np.float32)
    n = imgs.shape[0]
    cell = 1.5 * imgs.shape[2] / imgs.shape[3]
    fig, axes = plt.subplots(1 + len(rows), n, figsize=(1.5 * n + 1.2, (cell + 0.55) * (1 + len(rows)) + 0.4),
                             squeeze=False)
    im = None
    for j in range(n):
        _show_image(axes[0, j], imgs[j])
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=8)
    for r, (name, eps, upper, notes) in enumerate(rows, start=1):
        rel = _np(eps).astype(np.float32).mean(axis=1) / max(float(upper), 1e-12)
        for j in range(n):
            im = axes[r, j].imshow(rel[j], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
            if j < len(notes):
                axes[r, j].set_xlabel(notes[j], fontsize=6)
        axes[r, 0].set_ylabel(name, fontsize=8)
    axes[0, 0].set_ylabel("input", fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.9, bottom=0.05, top=0.88 if title else 0.93, wspace=0.08, hspace=0.35)
    if im is not None:
        fig.colorbar(im, cax=fig.add_axes((0.92, 0.1, 0.015, 0.6))).set_label("ε / u", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def training_curves(metrics: Sequence[dict], title: str | None = None) -> Figure:
    """Clean / verified error (train and test, %) and ε0 against epoch, from ``metrics.jsonl`` rows
    (keys ``epoch``, ``split``, ``clean_err``, ``verified_err``, ``eps0``); where the test rows carry
    contextuality (``input_dependent_share``, ``ratio_*``), a third panel plots it, so a
    position-fixed mask shows as the share falling towards 0. ``title``: above the panels."""
    test_ctx = sorted((r for r in metrics if str(r.get("split")) == "test" and r.get("input_dependent_share") is not None),
                      key=lambda r: r["epoch"])
    panels = 3 if test_ctx else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.0 * panels, 3.0))
    ax, ax_eps = axes[0], axes[1]
    splits = sorted({str(r.get("split", "train")) for r in metrics})
    styles = {"train": "--", "test": "-"}
    for split in splits:
        rows = sorted((r for r in metrics if str(r.get("split", "train")) == split), key=lambda r: r["epoch"])
        ep = [r["epoch"] for r in rows]
        for key, color in (("clean_err", "tab:blue"), ("verified_err", "tab:red")):
            vals = [100 * r[key] if r.get(key) is not None else np.nan for r in rows]
            if np.isfinite(vals).any():
                ax.plot(ep, vals, styles.get(split, ":"), color=color, label=f"{key.replace('_err', '')} ({split})")
    rows = sorted((r for r in metrics if r.get("eps0") is not None), key=lambda r: r["epoch"])
    seen: dict[float, float] = {}
    for r in rows:
        seen.setdefault(r["epoch"], r["eps0"])
    ax_eps.plot(list(seen), list(seen.values()), color="tab:green")
    ax.set(xlabel="epoch", ylabel="error (%)", ylim=(0, 100), title="errors")
    ax_eps.set(xlabel="epoch", ylabel="ε0 (pixel units)", title="target volume ε0")
    ax.legend(fontsize=7)
    for a in axes:
        a.grid(alpha=0.3)
    if test_ctx:
        ax_ctx = axes[2]
        ep = [r["epoch"] for r in test_ctx]
        ax_ctx.plot(ep, [100 * r["input_dependent_share"] for r in test_ctx], color="black",
                    label="input-dependent share (%)")
        ratio_keys = sorted({k for r in test_ctx for k in r if k.startswith("ratio_")})
        ax_ratio = ax_ctx.twinx() if ratio_keys else None
        for key, color in zip(ratio_keys, ("tab:purple", "tab:orange", "tab:cyan", "tab:olive")):
            assert ax_ratio is not None
            vals = [r.get(key) if r.get(key) is not None else np.nan for r in test_ctx]
            ax_ratio.plot(ep, vals, "--", color=color, label=key.replace("ratio_", "").replace("_", " ") + " (ratio)")
        if ax_ratio is not None:
            ax_ratio.set_ylabel("mean ε ratio", fontsize=8)
            ax_ratio.axhline(1.0, color="0.6", linewidth=0.6)
            ax_ratio.legend(fontsize=6, loc="upper right")
        ax_ctx.set(xlabel="epoch", ylabel="share (%)", ylim=(0, 100), title="contextuality (test)")
        ax_ctx.legend(fontsize=6, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
    else:
        fig.tight_layout()
    return fig


def budget_histogram(eps: ArrayLike, eps0: float, lower: float, upper: float, *, bins: int = 60,
                     title: str | None = None) -> Figure:
    """Histogram of all budgets ε_i (pixel units) with l, ε0 and u marked; ``title`` prefixes the axes title."""
    e = _np(eps).reshape(-1).astype(np.float64)
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    lo_edge = min(lower, float(e.min())) if e.size else lower
    hi_edge = max(upper, float(e.max())) if e.size else upper
    ax.hist(e, bins=np.linspace(lo_edge, hi_edge if hi_edge > lo_edge else lo_edge + 1e-6, bins + 1).tolist(),
            color="0.45", weights=np.full(e.shape, 100.0 / max(e.size, 1)))
    for v, name, style in ((lower, "l", ":"), (eps0, "ε0", "-"), (upper, "u", "--")):
        ax.axvline(v, color="tab:red", linestyle=style, label=f"{name} = {v:.3g}")
    ax.set(xlabel="budget ε_i (pixel units)", ylabel="share of dimensions (%)",
           title=(f"{title}: " if title else "")
           + f"budgets: geometric mean {np.exp(np.log(np.clip(e, 1e-300, None)).mean()):.3g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, stem: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``stem.png`` (and ``stem.pdf``), each atomically (an interrupted save leaves the
    previous file, never half a file), close it, return the paths written."""
    import io

    from .run import atomic_write_bytes

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for fmt in formats:
            path = stem.with_suffix("." + fmt)
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi)
            atomic_write_bytes(path, buf.getvalue())
            paths.append(path)
    finally:
        plt.close(fig)
    return paths
