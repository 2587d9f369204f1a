"""Shi et al. (2021, "Fast Certified Robust Training with Short Warmup") warm-up regularisers.

Both are functions of the IBP bounds of one training batch, read from a prepared
:class:`ctxbudget.bounds.Bounder` (its cached IBP pass, shared with the robust loss: no extra bound
computation). For each of the m ReLU layers k let ``[l_k, u_k]`` be the IBP bounds of its input
(pre-activation, B×shape), ``c_k = (u_k + l_k)/2`` the centres and ``Δ_k = (u_k − l_k)/2`` the
radii; ``Δ_0`` are the radii of the network's input box after its leading ``Normalize`` (the
input the authors' networks see); τ is the tolerance (``loss.warmup_tol``, 0.5 in the paper).
"mean" averages over the batch and all elements of a layer.

* **Bound tightness** — no layer's IBP bound may be more than 1/τ times as wide as the input box::

      L_tight = (1/m) Σ_k ReLU(τ − mean(Δ_0) / mean(Δ_k)) / τ

* **ReLU balance** — stable-active (``l_k > 0``) and stable-inactive (``u_k < 0``) neurons should
  balance in the mean and the spread of their centres (c̄_k = mean(c_k))::

      r_mean = Σ_{l>0} c_k / (−Σ_{u<0} c_k),   r_var = Σ_{l>0} (c_k − c̄_k)² / Σ_{u<0} (c_k − c̄_k)²
      L_relu = (1/m) Σ_k [ReLU(τ − min(r_mean, 1/r_mean)) + ReLU(τ − min(r_var, 1/r_var))] / τ

  A layer where either ratio is 0/0 (no stable neuron on either side) contributes 0, as in the
  authors' code (which skips such layers); min(r, 1/r) is computed as min(a, b)/max(a, b) so that a
  side without neurons gives 0 and a finite gradient.

Both are differentiable in the weights and in the box, hence, for learned budgets, in ε(x) and the
generator. The trainer weights their sum by ``loss.warmup_reg·(1 − ε0(t)/ε0_max)``
(:func:`ctxbudget.train.schedules.warmup_weight`): full strength when the ramp starts, 0 once ε0
reaches its target.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..bounds import Bounder
from ..bounds.layers import ChannelAffineOp


def input_radius(bd: Bounder) -> Tensor:
    """Radii of the input box after the model's leading ``Normalize`` layer(s), B×in_shape."""
    r = bd.r
    for o in bd.ops:
        if type(o) is not ChannelAffineOp:   # Normalize only (BatchNorm is a subclass)
            break
        r = r * o._view(o.scale.abs(), r.dim() - 1)
    return r


def _balance(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``min(a/b, b/a)`` for scalars a, b ≥ 0 as ``min(a, b)/max(a, b)``, and whether it is defined
    (``max(a, b) > 0``)."""
    hi, lo = torch.maximum(a, b), torch.minimum(a, b)
    ok = hi > 0
    return lo / torch.where(ok, hi, torch.ones_like(hi)), ok


def warmup_regularizers(bd: Bounder, tol: float = 0.5) -> tuple[Tensor, Tensor]:
    """``(L_tight, L_relu)`` (two scalars ≥ 0, dimensionless) of the module docstring for the
    batch and box of ``bd``; zeros for a network without ReLU."""
    pre, _ = bd.ibp_state()
    zero = bd.r.new_zeros(())
    if not pre:
        return zero, zero
    delta0 = input_radius(bd).mean()
    tight, relu = zero, zero
    for l, u in pre.values():
        c, d = ((u + l) * 0.5).flatten(), ((u - l) * 0.5).flatten()
        tight = tight + torch.relu(tol - delta0 / d.mean().clamp_min(1e-12)) / tol
        with torch.no_grad():
            active, inactive = (l > 0).flatten().to(c.dtype), (u < 0).flatten().to(c.dtype)
        dev = (c - c.mean()).square()
        # masked sums as dot products: one pass each, no masked temporaries
        r_mean, ok_mean = _balance(c @ active, -(c @ inactive))
        r_var, ok_var = _balance(dev @ active, dev @ inactive)
        term = (torch.relu(tol - r_mean) + torch.relu(tol - r_var)) / tol
        relu = relu + torch.where(ok_mean & ok_var, term, zero)
    m = len(pre)
    return tight / m, relu / m
