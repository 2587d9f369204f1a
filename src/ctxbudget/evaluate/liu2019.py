"""Per-example volume maximisation of Liu et al. (2019), the "verified (Liu 2019)" column.

For each correctly classified example (x, y), find budgets ε ∈ (0, 1]^n (pixel units, n = C·H·W)
that maximise the log-volume ``Σ_i log ε_i`` subject to every certified margin lower bound on the
clipped box ``[max(x − ε, 0), min(x + ε, 1)]`` being ≥ δ. The example counts as verified iff the
certified log-volume found is ≥ ``n log ε0``.

Method (the augmented Lagrangian of Liu et al., retuned so that large budgets are
reachable; Liu's defaults — SGD 1e-3 from ε = 1e-3 — cannot grow ε beyond ≈ 0.16):

1. ε = exp(s) with s ≤ log max(x_i, 1 − x_i) ≤ 0: beyond that cap the clipped box no longer
   changes (and its gradient vanishes), so the cap keeps the constraint gradients alive. Budgets
   that end at their cap are reported as ε_i = 1 (the same box; ε ≤ 1 always).
2. Feasible uniform start: the largest uniform ε certified (margins ≥ δ), found by bisection on
   log ε, batched over examples.
3. Adam on s (lr ``lr``) minimising ``−Σ_i s_i + Σ_j ψ(c_j, μ_j, ρ)`` with ``c_j = m̲_j − δ`` and
   ψ(c, μ, ρ) = −μc + ρc²/2 if c ≤ μ/ρ else −μ²/(2ρ); μ ← max(μ − ρc, 0) every ``mu_every``
   iterations; ρ starts at ``rho`` and is ×5 after each fifth of the iterations.
4. The best certified iterate seen (by log-volume; the uniform start is one) is kept; the last
   iterate is scaled by 0.99^k, k ≤ ``max_shrink`` the smallest certified count (found by
   bisection over k rather than one bound computation per ×0.99 step), and kept if better.
5. A fresh bound computation re-checks the final ε; an uncertified example is shrunk the same way
   and marked uncertified if that does not help.

"Certified" is everywhere the verification rule of ``ctxbudget.bounds.verify`` (float-rounding
safe) together with every margin lower bound ≥ δ.

Defaults (100 Adam steps of 0.05 on log ε, ρ = 1, δ = 1e-4) were tuned on a small MNIST DM-small
run at ε0 = 0.3: the geometric-mean certified budget grew from 0.125 (uniform start) to ≈ 0.36;
200 steps of 0.02 gave the same. With CROWN-IBP on DM-small this costs ≈ 0.35 s per example on
one CPU thread.

Everything runs on the whole batch at once (no per-example Python loop).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from ..bounds.engine import DIFFERENTIABLE_METHODS, or_list
from ..bounds.verify import BoundFn, certify, margin_lower_bounds
from ..budgets import input_box

#: the bound methods the optimisation can use: it needs gradients of the bound (α-CROWN's are detached)
LIU_METHODS = DIFFERENTIABLE_METHODS


def check_liu_method(method: str) -> None:
    """ValueError unless ``method`` can drive the optimisation (one of :data:`LIU_METHODS`)."""
    if method not in LIU_METHODS:
        raise ValueError(f"the Liu et al. optimisation needs gradients of the bound: use {or_list(LIU_METHODS)}, "
                         f"got {method!r} (alpha-crown bounds are detached)")


@dataclass
class LiuResult:
    """``eps``: B×C×H×W budgets found (0 where nothing is certified); ``log_volume``: Σ log ε_i (B,
    float64, −inf if uncertified); ``certified``: re-checked certificate (B, bool);
    ``uniform_eps``: largest certified uniform budget (B; 0 if none)."""

    eps: torch.Tensor
    log_volume: torch.Tensor
    certified: torch.Tensor
    uniform_eps: torch.Tensor


def _certified(bound_fn: BoundFn, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor,
               eps: torch.Tensor, method: str, delta: float) -> torch.Tensor:
    """Certified by the verification rule (``ctxbudget.bounds.verify``) with every margin ≥ δ (B, bool)."""
    with torch.no_grad():
        lo, hi = input_box(x, eps)
        v = certify(classifier, lo, hi, y, method, bound_fn=bound_fn, x=x)
        return v.verified & (v.min_lower >= delta)


def largest_uniform_eps(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str = "crown-ibp",
                        bound_fn: BoundFn = margin_lower_bounds, delta: float = 1e-4, eps_min: float = 1e-6,
                        iters: int = 16) -> torch.Tensor:
    """Largest uniform ε ∈ [eps_min, 1] (B,) whose clipped box is certified with margins ≥ δ, by
    bisection on log ε; 0 where even ``eps_min`` is not certified."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)

    def ok(e: torch.Tensor) -> torch.Tensor:
        return _certified(bound_fn, classifier, x, y, e.view(shape).expand_as(x), method, delta)

    at_min, at_one = ok(ones * eps_min), ok(ones)
    lo_log = torch.full_like(ones, math.log(eps_min))
    hi_log = torch.zeros_like(ones)
    for _ in range(iters):
        mid = (lo_log + hi_log) / 2
        good = ok(mid.exp())
        lo_log = torch.where(good, mid, lo_log)
        hi_log = torch.where(good, hi_log, mid)
    out = torch.where(at_one, ones, lo_log.exp())
    return torch.where(at_min, out, torch.zeros_like(out))


def _psi(c: torch.Tensor, mu: torch.Tensor, rho: float) -> torch.Tensor:
    """Augmented-Lagrangian penalty ψ(c, μ, ρ) for constraints c ≥ 0 (element-wise)."""
    return torch.where(c <= mu / rho, -mu * c + rho * c * c / 2, -mu * mu / (2 * rho))


def liu_max_volume(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str = "crown-ibp",
                   bound_fn: BoundFn = margin_lower_bounds, iters: int = 100, lr: float = 0.05,
                   delta: float = 1e-4, rho: float = 1.0, mu_every: int = 5, max_shrink: int = 200,
                   progress: bool = False) -> LiuResult:
    """Maximise Σ log ε_i per example subject to certified margins ≥ δ (see module docstring).

    Args:
        classifier: B×C×H×W → B×K logits, eval mode.
        x: images B×C×H×W in [0, 1]; y: labels (B,).
        method: bound method passed to ``bound_fn`` (one of :data:`LIU_METHODS`).
        iters: Adam iterations; lr: Adam step on s = log ε.
        delta: required margin (logit units); rho: initial penalty weight.
        max_shrink: bound on the ×0.99 shrink steps of the repair phases.

    Returns:
        LiuResult. Misclassified examples (or ones not certifiable even at ε = 1e-6) get ε = 0,
        log-volume −inf, certified False. Never returns ε > 1.
    """
    check_liu_method(method)
    x, y = x.detach(), y.detach()
    b = x.shape[0]
    with torch.no_grad():
        correct = classifier(x).argmax(dim=1) == y
    uni = largest_uniform_eps(classifier, x, y, method=method, bound_fn=bound_fn, delta=delta)
    uni = torch.where(correct, uni, torch.zeros_like(uni))
    feasible = uni > 0
    shape = (-1,) + (1,) * (x.dim() - 1)
    floor = math.log(1e-6)
    cap = torch.max(x, 1 - x).clamp_min(1e-6).log()                        # box is [0, 1] beyond it
    start = torch.min(uni.clamp_min(1e-6).log().view(shape).expand_as(x), cap)
    best_s = start.clone()
    best_vol = torch.where(feasible, start.flatten(1).double().sum(1), torch.full((b,), -math.inf, dtype=torch.float64))
    active = feasible.nonzero().flatten()
    if active.numel() > 0 and iters > 0:
        xa, ya = x[active], y[active]
        s_final = _augmented_lagrangian(classifier, xa, ya, start[active], cap[active], active, best_s, best_vol,
                                        bound_fn=bound_fn, method=method, iters=iters, lr=lr, delta=delta, rho=rho,
                                        mu_every=mu_every, floor=floor, progress=progress)
        last = _shrink_until_certified(bound_fn, classifier, xa, ya, s_final.exp(), method, delta, max_shrink,
                                       floor=best_vol[active])
        last_ok = _certified(bound_fn, classifier, xa, ya, last, method, delta)
        last_vol = last.log().flatten(1).double().sum(1)
        better = last_ok & (last_vol > best_vol[active])
        idx = active[better]
        best_vol[idx] = last_vol[better]
        best_s[idx] = last.log()[better]
    eps = best_s.exp().clamp(max=1.0)
    eps = torch.where(best_s >= cap - 1e-6, torch.ones_like(eps), eps)       # same box: report ε = 1
    eps = torch.where(feasible.view(shape), eps, torch.zeros_like(eps))
    if active.numel() > 0:                                                    # fresh re-check
        eps[active] = _shrink_until_certified(bound_fn, classifier, x[active], y[active], eps[active],
                                              method, delta, max_shrink)
    certified = feasible & correct & _certified(bound_fn, classifier, x, y, eps, method, delta)
    eps = torch.where(certified.view(shape), eps, torch.zeros_like(eps))
    log_vol = torch.where(certified, eps.clamp_min(1e-300).log().flatten(1).double().sum(1),
                          torch.full((b,), -math.inf, dtype=torch.float64))
    return LiuResult(eps=eps.detach(), log_volume=log_vol, certified=certified, uniform_eps=uni)


def _augmented_lagrangian(classifier: nn.Module, xa: torch.Tensor, ya: torch.Tensor, start: torch.Tensor,
                          cap_a: torch.Tensor, active: torch.Tensor, best_s: torch.Tensor, best_vol: torch.Tensor, *,
                          bound_fn: BoundFn, method: str, iters: int, lr: float, delta: float, rho: float,
                          mu_every: int, floor: float, progress: bool) -> torch.Tensor:
    """Adam on s = log ε (A×C×H×W, from ``start``, kept in [``floor``, ``cap_a``]) of −Σ s + ψ(margins − δ)
    for the examples ``active`` (xa, ya); μ is updated every ``mu_every`` steps and ρ ×5 every
    ``iters // 5``. Every certified iterate with a larger volume is written into ``best_s`` / ``best_vol``
    (all B examples, indexed by ``active``) in place. Returns the last iterate s (detached)."""
    s = start.clone().requires_grad_(True)
    adam_m, adam_v = torch.zeros_like(s), torch.zeros_like(s)            # Adam (β = 0.9, 0.999)
    mu = None
    cur_rho = rho
    phase = max(iters // 5, 1)
    it = range(iters)
    if progress:
        it = tqdm(it, desc="liu2019", leave=False)
    for t in it:
        lo, hi = input_box(xa, s.exp())
        c = bound_fn(classifier, lo, hi, ya, method) - delta              # A×(K−1)
        if mu is None:
            mu = torch.zeros_like(c.detach())
        with torch.no_grad():                                             # track best certified
            ok = c.min(dim=1).values >= 0
            vol = s.detach().flatten(1).double().sum(1)
            better = ok & (vol > best_vol[active])
            if bool(better.any()):
                idx = active[better]
                best_vol[idx] = vol[better]
                best_s[idx] = s.detach()[better]
        loss = -s.flatten(1).sum() + _psi(c, mu, cur_rho).sum()
        grad, = torch.autograd.grad(loss, s)
        with torch.no_grad():
            adam_m.mul_(0.9).add_(grad, alpha=0.1)
            adam_v.mul_(0.999).addcmul_(grad, grad, value=0.001)
            s -= lr * (adam_m / (1 - 0.9 ** (t + 1))) / ((adam_v / (1 - 0.999 ** (t + 1))).sqrt() + 1e-8)
            s.copy_(torch.min(s.clamp_min(floor), cap_a))
            if (t + 1) % mu_every == 0:
                mu = (mu - cur_rho * c.detach()).clamp_min(0.0)
            if (t + 1) % phase == 0:
                cur_rho *= 5.0
    return s.detach()


def _shrink_until_certified(bound_fn: BoundFn, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor,
                            eps: torch.Tensor, method: str, delta: float, max_shrink: int,
                            floor: torch.Tensor | None = None) -> torch.Tensor:
    """Scale the budgets of uncertified examples by 0.99^k with the smallest certified k ≤ max_shrink.

    k is found by bisection (certification is monotone in the box up to bound-method quirks); every
    returned scaled ε was itself checked certified, otherwise the example keeps ε·0.99^k_max
    (uncertified; the caller re-checks). With ``floor`` (B, log-volumes) k is also limited so that
    the log-volume stays ≥ floor (smaller volumes cannot beat the best certified budgets found).
    """
    eps = eps.detach().clone()
    todo = ~_certified(bound_fn, classifier, x, y, eps, method, delta)
    if not bool(todo.any()) or max_shrink < 1:
        return eps
    step = -math.log(0.99) * eps[0].numel()                                  # log-volume lost per shrink
    k_max = torch.full((x.shape[0],), float(max_shrink), dtype=torch.float64)
    if floor is not None:
        vol = eps.flatten(1).double().log().sum(1)
        k_max = torch.minimum(k_max, ((vol - floor) / step).floor().clamp_min(0))
    idx = (todo & (k_max > 0)).nonzero().flatten()
    if idx.numel() == 0:
        return eps
    xi, yi, ei, hi_k = x[idx], y[idx], eps[idx], k_max[idx]
    scale = lambda k: ei * torch.pow(torch.tensor(0.99, dtype=torch.float64), k).to(ei.dtype).view(-1, *[1] * (ei.dim() - 1))
    ok_hi = _certified(bound_fn, classifier, xi, yi, scale(hi_k), method, delta)
    lo_k = torch.zeros_like(hi_k)                                             # known uncertified at lo_k
    while bool(((hi_k - lo_k > 1) & ok_hi).any()):
        mid = torch.where(ok_hi, ((lo_k + hi_k) / 2).floor(), hi_k)
        good = _certified(bound_fn, classifier, xi, yi, scale(mid), method, delta)
        live = ok_hi & (hi_k - lo_k > 1)
        hi_k = torch.where(live & good, mid, hi_k)
        lo_k = torch.where(live & ~good, mid, lo_k)
    eps[idx] = scale(hi_k)
    return eps
