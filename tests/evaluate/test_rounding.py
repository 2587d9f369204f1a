"""Float rounding must never certify a false margin.

Flatten → Linear(784, 2) networks (weights 3·randn), uniform box 0.1 around random images, the
bias set so that the exact (float64) worst-case margin of example 0 lies within ±3e-4 of 0 (the
adversarial case of the issue; in float32 the bound and the forward pass are each off by up to
~1e-4 there). Whatever the evaluation certifies must hold for the exact network *and* for the
float32 network evaluated at its exact worst corner; and the rule must not be vacuous (examples
with a clear positive margin are still certified).
"""
import torch
from torch import nn

from ctxbudget.budgets import UniformBudget
from ctxbudget.evaluate import evaluate_model


def _net_and_images(seed: int, offset: float, n: int = 4):
    g = torch.Generator().manual_seed(seed)
    w = 3 * torch.randn(2, 784, generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g)
    lo, hi = (x - 0.1).clamp(0, 1).flatten(1).double(), (x + 0.1).clamp(0, 1).flatten(1).double()
    d = (w[0] - w[1]).double()
    corner = torch.where(d > 0, lo, hi)                                     # exact worst corner, label 0
    exact_no_bias = corner @ d
    b = torch.zeros(2)
    b[0] = float(offset - exact_no_bias[0])                                  # example 0 at `offset`
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with torch.no_grad():
        net[1].weight.copy_(w)
        net[1].bias.copy_(b)
    exact = exact_no_bias + (b[0] - b[1]).double()                          # with the float32 bias
    with torch.no_grad():
        out = net(corner.float())
    f32 = (out[:, 0] - out[:, 1]).double()
    return net.eval(), x, torch.zeros(n, dtype=torch.long), exact, f32


def test_near_zero_margins_never_falsely_certified():
    certified_near_zero = 0
    for seed in range(40):
        for offset in torch.linspace(-3e-4, 3e-4, 7).tolist():
            net, x, y, exact, f32 = _net_and_images(seed, offset)
            res, rec = evaluate_model(net, UniformBudget(0.1), x, y, methods=("ibp", "crown"), attack_steps=5,
                                      liu_limit=0, return_records=True, progress=False)
            ok = rec["verified_uniform_any"]
            bad = ok & ((exact.numpy() <= 0) | (f32.numpy() < 0))
            assert not bad.any(), (seed, offset, exact[0].item(), f32[0].item())
            certified_near_zero += int(ok[0])
    assert certified_near_zero < 40 * 7


def test_clear_margins_still_certified():
    count = 0
    for seed in range(10):
        net, x, y, exact, f32 = _net_and_images(seed, 0.05)                  # exact margin 0.05 > 0
        res, rec = evaluate_model(net, UniformBudget(0.1), x, y, methods=("ibp",), attack_steps=5, liu_limit=0,
                                  return_records=True, progress=False)
        count += int(rec["verified_uniform_any"][0])
    assert count == 10
