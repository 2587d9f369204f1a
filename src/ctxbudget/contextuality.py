"""How contextual are learned budgets? Statistics of ε(x) over a set of images.

The paper shows contextuality with figures only; these numbers make it measurable:

* **input-dependent share** of the variance of ``L = log ε(x)`` (N images × n dimensions, ``L̄`` the
  per-dimension mean over the images)::

      share = Σ (L − L̄)² / Σ (L − mean(L))²

  0 means one fixed budget map for every image (a mask the generator could have stored as a bias);
  1 means the per-dimension average map explains nothing. Uniform budgets have no variance at
  all; the share is then reported as 0, and so it is when the spread of ``L`` is below
  ``FLAT_LOG_VARIANCE`` (budgets equal up to float rounding, as when a generator saturates at one
  value everywhere: the ratio of two rounding noises would otherwise read as any share up to 1).
* **mean budget on stroke vs background** pixels: stroke = dimensions with ``x > 0.5``, background =
  ``x ≤ 0.5`` (pixel units, [0, 1] images).
* **label regions** of the synthetic data sets (``Dataset.regions``, N×1×H×W bool):

  - Watermarked MNIST: *lit watermark pixels* (inside the 8×8 mark box and ``x > 0.05``) vs every
    dimension outside the box. The paper's claim: smaller budgets on the watermark.
  - Doubled data sets: the *attended* image half vs the *ignored* half (the border rows, part of
    the region mask, are left out of both). The paper's claim: large budgets on the ignored half.
  - any other data set with regions: inside vs outside them (``label_region_vs_elsewhere``).

* ``log_eps_std``: the standard deviation of log ε over all images and dimensions (0 for one budget
  everywhere); read the share beside it: a generator saturated at ε0 on all but a few images gives
  a share near 1 of a variance near 0.

Every mean is an arithmetic mean of budgets in pixel units; ``ratio`` = first mean / second mean.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

STROKE_THRESHOLD = 0.5        # x > 0.5: digit stroke
LIT_THRESHOLD = 0.05          # inside the watermark box, x > 0.05: a lit watermark pixel
# variance of log ε below which the budgets count as one constant: a standard deviation of 1e-5 in
# log ε (relative budget differences of 0.001 %), two orders above float32 rounding of log ε (~6e-8)
FLAT_LOG_VARIANCE = 1e-10


def _centred_sq_sum(sq_sum: float, total: float, numel: float) -> float:
    """``Σ (L − mean L)²`` from the shifted sums ``Σ D²`` and ``Σ D`` (``D = L − k``, ``numel`` terms)."""
    return sq_sum - total * total / numel


def _share_from_sums(count: float, dim_sums: torch.Tensor, sq_sum: float, total: float, numel: float) -> float:
    """The input-dependent share from sums of shifted log budgets ``D = L − k`` (any constant k):
    ``count`` images, ``dim_sums`` = Σ_images D per dimension, ``sq_sum`` = Σ D², ``total`` = Σ D."""
    across = _centred_sq_sum(sq_sum, total, numel)              # Σ (L − mean L)²
    within = sq_sum - float(dim_sums.double().pow(2).sum()) / count   # Σ (L − L̄)²
    if across <= FLAT_LOG_VARIANCE * numel:                     # one budget everywhere, up to rounding
        return 0.0
    return min(max(within / across, 0.0), 1.0)


def _log_std_from_sums(sq_sum: float, total: float, numel: float) -> float:
    """Standard deviation of log ε over every image and dimension, from the shifted sums of
    :func:`_share_from_sums`: how far the budgets spread at all. The share is a ratio of variances and
    says nothing about their size; a map flat but for a few images reads as share ≈ 1 with a
    ``log_eps_std`` near 0."""
    return math.sqrt(max(_centred_sq_sum(sq_sum, total, numel), 0.0) / numel)


def input_dependent_share(log_eps: torch.Tensor) -> float:
    """Share of the variance of ``log_eps`` (N×…) that is not explained by its per-dimension mean."""
    if log_eps.dim() < 2 or log_eps.shape[0] < 2:
        raise ValueError(f"need at least 2 examples (N×…), got shape {tuple(log_eps.shape)}")
    L = log_eps.reshape(log_eps.shape[0], -1).double()
    if not torch.isfinite(L).all():
        raise ValueError("log budgets must be finite (budgets > 0)")
    D = L - L.mean()
    return _share_from_sums(L.shape[0], D.sum(0), float(D.pow(2).sum()), float(D.sum()), float(D.numel()))


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
    else:                                # any other data set with label regions: inside vs outside them
        out["label_region_vs_elsewhere"] = (box, ~box)
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
    acc = ContextualityAccumulator(tuple(images.shape[1:]), dataset_name=dataset_name, regions=regions is not None)
    acc.update(eps, images, regions)
    return acc.result()


class ContextualityAccumulator:
    """:func:`contextuality_of`, batch by batch: ``update(eps, images, regions)`` then ``result()``.

    Every statistic is a float64 sum, packed by :meth:`sums` into one 1-D tensor that ranks can
    all-reduce (``load_sums`` puts the reduced tensor back), so the trainer's per-epoch test line
    can carry the contextuality of the whole test split. Log budgets are summed shifted by the
    mean of the first batch's log budgets (a constant), which keeps the variance sums exact enough
    in float64. Accumulators whose sums are added must share ``shift`` (the trainer passes log ε0).
    """

    def __init__(self, shape: tuple[int, ...], *, dataset_name: str = "", regions: bool = False,
                 shift: float | None = None) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dataset_name = dataset_name
        self.has_regions = regions
        self.names = list(region_masks(dataset_name, torch.zeros(1, *self.shape),
                                       torch.zeros(1, 1, *self.shape[1:], dtype=torch.bool) if regions else None))
        self.dims = 1
        for s in self.shape:
            self.dims *= s
        self.shift = shift
        # layout: [count, Σ ε, Σ D, Σ D², 4 per region pair (Σ ε first, count, Σ ε second, count), Σ_images D per dim]
        self._head = 4 + 4 * len(self.names)
        self.state = torch.zeros(self._head + self.dims, dtype=torch.float64)

    def update(self, eps: torch.Tensor, images: torch.Tensor, regions: torch.Tensor | None = None) -> None:
        """Add a batch: ``eps``, ``images`` B×C×H×W (pixel units); ``regions`` B×1×H×W bool or None."""
        if tuple(eps.shape[1:]) != self.shape or eps.shape != images.shape:
            raise ValueError(f"budgets {tuple(eps.shape)} and images {tuple(images.shape)} must both be B×"
                             f"{'×'.join(map(str, self.shape))}")
        if self.has_regions and regions is None:
            raise ValueError("this accumulator was built for region statistics: pass the batch's regions")
        e = eps.detach().double().cpu()
        L = e.reshape(e.shape[0], -1).clamp_min(1e-300).log()
        if not torch.isfinite(L).all():
            raise ValueError("log budgets must be finite (budgets > 0)")
        if self.shift is None:
            self.shift = float(L.mean())
        D = L - self.shift
        head = [float(e.shape[0]), float(e.sum()), float(D.sum()), float(D.pow(2).sum())]
        masks = region_masks(self.dataset_name, images.detach().cpu(),
                             None if regions is None else regions.detach().cpu())
        for name in self.names:
            first, second = masks[name]
            head += [float(e[first].sum()), float(first.sum()), float(e[second].sum()), float(second.sum())]
        self.state[:self._head] += torch.tensor(head, dtype=torch.float64)
        self.state[self._head:] += D.sum(0)

    def sums(self) -> torch.Tensor:
        """All statistics as one float64 tensor (add the tensors of several accumulators to merge)."""
        return self.state.clone()

    def load_sums(self, sums: torch.Tensor) -> None:
        self.state = sums.detach().double().cpu().clone()

    def result(self) -> dict:
        """The dict of :func:`budget_contextuality` for everything added so far."""
        count = float(self.state[0])
        if count < 2:
            raise ValueError("contextuality needs at least 2 images")
        numel = count * self.dims
        out: dict = {"n": round(count), "mean_eps": float(self.state[1]) / numel,
                     "input_dependent_share": _share_from_sums(count, self.state[self._head:], float(self.state[3]),
                                                               float(self.state[2]), numel),
                     "log_eps_std": _log_std_from_sums(float(self.state[3]), float(self.state[2]), numel)}
        for i, name in enumerate(self.names):
            sa, ca, sb, cb = (float(v) for v in self.state[4 + 4 * i:8 + 4 * i])
            ma = sa / ca if ca else None
            mb = sb / cb if cb else None
            out[name] = {"mean": ma, "mean_other": mb, "count": int(ca), "count_other": int(cb),
                         "ratio": (ma / mb) if ma is not None and mb else None}
        return out


def contextuality_row(ctx: dict) -> dict:
    """The flat keys a ``metrics.jsonl`` test line carries from a contextuality dict:
    ``input_dependent_share`` and ``ratio_<pair>`` (first mean / second mean) per region pair."""
    out = {"input_dependent_share": ctx["input_dependent_share"]}
    for name, stats in ctx.items():
        if isinstance(stats, dict) and "ratio" in stats:
            out[f"ratio_{name}"] = stats["ratio"]
    return out
