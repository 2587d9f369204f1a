"""How contextual are learned budgets? Statistics of ε(x) over a set of images.

The paper shows contextuality with figures only; these numbers make it measurable:

* **input-dependent share** of the variance of ``L = log ε(x)`` (N images × n dimensions, ``L̄`` the
  per-dimension mean over the images)::

      share = Σ (L − L̄)² / Σ (L − mean(L))²

  0 means one fixed budget map for every image (a mask the generator could have stored as a bias);
  1 means the per-dimension average map explains nothing. Uniform budgets have no variance at
  all; the share is then reported as 0.
* **mean budget on stroke vs background** pixels: stroke = dimensions with ``x > 0.5``, background =
  ``x ≤ 0.5`` (pixel units, [0, 1] images).
* **label regions** of the synthetic data sets (``Dataset.regions``, N×1×H×W bool):

  - Watermarked MNIST: *lit watermark pixels* (inside the 8×8 mark box and ``x > 0.05``) vs every
    dimension outside the box. The paper's claim: smaller budgets on the watermark.
  - Doubled data sets: the *attended* image half vs the *ignored* half (the border rows, part of
    the region mask, are left out of both). The paper's claim: large budgets on the ignored half.

Every mean is an arithmetic mean of budgets in pixel units; ``ratio`` = first mean / second mean.
"""
from __future__ import annotations

from typing import Callable

import torch

STROKE_THRESHOLD = 0.5        # x > 0.5: digit stroke
LIT_THRESHOLD = 0.05          # inside the watermark box, x > 0.05: a lit watermark pixel


def input_dependent_share(log_eps: torch.Tensor) -> float:
    """Share of the variance of ``log_eps`` (N×…) that is not explained by its per-dimension mean."""
    if log_eps.dim() < 2 or log_eps.shape[0] < 2:
        raise ValueError(f"need at least 2 examples (N×…), got shape {tuple(log_eps.shape)}")
    L = log_eps.reshape(log_eps.shape[0], -1).double()
    if not torch.isfinite(L).all():
        raise ValueError("log budgets must be finite (budgets > 0)")
    total = (L - L.mean()).pow(2).sum()
    if float(total) <= 1e-24 * L.numel():
        return 0.0
    return float((L - L.mean(dim=0, keepdim=True)).pow(2).sum() / total)


def _mean_ratio(eps: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> dict:
    a, b = eps[first], eps[second]
    ma = float(a.mean()) if a.numel() else None
    mb = float(b.mean()) if b.numel() else None
    return {"mean": ma, "mean_other": mb, "count": int(a.numel()), "count_other": int(b.numel()),
            "ratio": (ma / mb) if ma is not None and mb else None}


def region_masks(dataset_name: str, images: torch.Tensor, regions: torch.Tensor | None
                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Named pairs (mask, other mask) of N×C×H×W bool tensors for the region statistics."""
    x = images
    out = {"stroke_vs_background": (x > STROKE_THRESHOLD, x <= STROKE_THRESHOLD)}
    if regions is None:
        return out
    box = regions.expand_as(x)
    if dataset_name.startswith("watermarked"):
        out["watermark_vs_elsewhere"] = (box & (x > LIT_THRESHOLD), ~box)
    elif dataset_name.startswith("doubled"):
        border = torch.zeros_like(box)
        border[:, :, :4, :] = True       # the colour border (ctxbudget.data.synthetic.BORDER rows)
        out["attended_vs_ignored"] = (box & ~border, ~box)
    return out


@torch.no_grad()
def budget_contextuality(budgets: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *,
                         dataset_name: str = "", regions: torch.Tensor | None = None,
                         batch_size: int = 256) -> dict:
    """Contextuality statistics of ``budgets`` (x → ε) on ``images`` (N×C×H×W in [0, 1]).

    Returns a JSON-safe dict: ``n``, ``input_dependent_share``, ``mean_eps``, and for each region
    pair of :func:`region_masks` a dict ``{mean, mean_other, count, count_other, ratio}``.
    """
    n = int(images.shape[0])
    eps = torch.cat([budgets(images[i:min(i + batch_size, n)]).float() for i in range(0, n, batch_size)])
    return contextuality_of(eps, images, dataset_name=dataset_name, regions=regions)


def contextuality_of(eps: torch.Tensor, images: torch.Tensor, *, dataset_name: str = "",
                     regions: torch.Tensor | None = None) -> dict:
    """:func:`budget_contextuality` for budgets already computed (``eps``: N×C×H×W, pixel units)."""
    n = int(images.shape[0])
    if n < 2:
        raise ValueError("contextuality needs at least 2 images")
    if regions is not None and regions.shape[0] != n:
        raise ValueError(f"regions hold {regions.shape[0]} examples, images {n}")
    if eps.shape != images.shape:
        raise ValueError(f"budgets returned shape {tuple(eps.shape)} for images {tuple(images.shape)}")
    eps = eps.float()
    out: dict = {"n": n, "mean_eps": float(eps.double().mean()),
                 "input_dependent_share": input_dependent_share(eps.clamp_min(1e-30).log())}
    for name, (first, second) in region_masks(dataset_name, images, regions).items():
        out[name] = _mean_ratio(eps, first, second)
    return out
