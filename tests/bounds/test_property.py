"""Property-based soundness (hypothesis): random small networks, boxes and dtypes, every method.

For each drawn case: every margin at sampled points of the box (corners included) and at the
points PGD reaches is ≥ the certified lower bound − 2τ (τ: the rounding tolerance of
``ctxbudget.bounds.verify``), logits stay within [lower − 2τ, upper + 2τ], and an example the
verification rule certifies has positive margins at every one of those points.
"""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from ctxbudget.bounds import compute_bounds, margin_spec
from ctxbudget.bounds.verify import certify, margin_magnitude, tolerance

from .conftest import pgd, sample_box

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


def random_net(seed: int, conv: bool, bn: bool, pool: bool, width: int, depth: int, classes: int,
               dtype: torch.dtype) -> nn.Sequential:
    """A random Sequential on 1×6×6 inputs from the layers the engine supports."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    if conv:
        layers += [nn.Conv2d(1, 3, 3, stride=1, padding=1)]
        if bn:
            layers.append(nn.BatchNorm2d(3))
        layers.append(nn.ReLU())
        if pool:
            layers.append(nn.AvgPool2d(2))
        layers.append(nn.Flatten())
        n = 3 * (3 * 3 if pool else 6 * 6)
    else:
        layers.append(nn.Flatten())
        n = 36
    for _ in range(depth):
        layers += [nn.Linear(n, width), nn.ReLU()]
        n = width
    layers.append(nn.Linear(n, classes))
    net = nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), conv=st.booleans(), bn=st.booleans(), pool=st.booleans(),
       width=st.integers(2, 12), depth=st.integers(0, 2), classes=st.integers(2, 5),
       dtype=st.sampled_from([torch.float32, torch.float64]), method=st.sampled_from(METHODS),
       scale=st.sampled_from([0.0, 1e-3, 0.05, 0.3]), zero_frac=st.sampled_from([0.0, 0.5]))
def test_random_networks_boxes_and_dtypes(seed, conv, bn, pool, width, depth, classes, dtype, method, scale,
                                          zero_frac):
    net = random_net(seed, conv, bn, pool, width, depth, classes, dtype)
    g = torch.Generator().manual_seed(seed)
    B = 3
    x = torch.rand(B, 1, 6, 6, generator=g, dtype=dtype)
    x[:, :, 0] = 0.0                                                  # clipped sides
    eps = scale * torch.rand(B, 1, 6, 6, generator=g, dtype=dtype)
    eps = eps * (torch.rand(B, 1, 6, 6, generator=g, dtype=dtype) >= zero_frac)
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    y = torch.randint(0, classes, (B,), generator=g)
    C = margin_spec(y, classes, dtype)
    low, up = compute_bounds(net, lo, hi, method, C=C)
    tol = 2 * tolerance(margin_magnitude(net, lo, hi, y), dtype)      # B×(K−1), float64
    assert torch.isfinite(low).all() and torch.isfinite(up).all()
    assert (low.double() <= up.double() + tol).all()

    def margins(z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bsk,bk->bs", C, net(z))

    with torch.no_grad():
        pts = sample_box(lo, hi, 16, seed=seed)
        m = torch.stack([margins(p) for p in pts]).double()           # 16×B×(K−1)
    assert (m >= low.double() - tol).all(), float((low.double() - tol - m).max())
    assert (m <= up.double() + tol).all(), float((m - up.double() - tol).max())
    reached = pgd(margins, lo, hi, steps=15, maximize=False, seed=seed).double()
    assert (reached >= low.double() - tol).all(), float((low.double() - tol - reached).max())
    v = certify(net, lo, hi, y, method, x=x)
    worst = torch.minimum(m.min(0).values.min(1).values, reached.min(1).values)
    assert (worst[v.verified] > 0).all()
