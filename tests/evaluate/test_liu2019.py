"""Liu et al. (2019) volume maximisation: certified, ≥ the uniform start, ε ≤ 1, batched."""
import math

import torch
from torch import nn

from ctxbudget.budgets import input_box
from ctxbudget.evaluate import largest_uniform_eps, liu_max_volume
from eval_helpers import engine_bound_fn, ibp_margin_bounds, make_images, tiny_conv

N_DIMS = 36


def _check_certified(model, x, y, res, bound_fn, method="ibp"):
    lo, hi = input_box(x, res.eps)
    lb = bound_fn(model, lo, hi, y, method).min(dim=1).values
    assert bool((lb[res.certified] > 0).all())
    assert bool((res.eps <= 1.0).all()) and bool((res.eps >= 0).all())


def test_certified_and_at_least_the_uniform_volume():
    x = make_images(8)
    model = tiny_conv(0)
    y = model(x).argmax(1)
    res = liu_max_volume(model, x, y, method="ibp", bound_fn=ibp_margin_bounds, iters=60, lr=0.05)
    assert res.certified.all()
    _check_certified(model, x, y, res, ibp_margin_bounds)
    uni = largest_uniform_eps(model, x, y, method="ibp", bound_fn=ibp_margin_bounds)
    assert torch.allclose(uni, res.uniform_eps)
    assert bool((res.log_volume >= N_DIMS * uni.double().log() - 1e-6).all())
    # non-uniform budgets do better than the uniform box on average
    assert (res.log_volume - N_DIMS * uni.double().log()).mean() > 1.0


def test_sparse_linear_model_gets_large_volume():
    """Only pixel 0 matters: every other budget can go to 1 (capped), pixel 0 stays small."""
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]))
        lin.bias.copy_(torch.tensor([-0.3, 0.0]))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.full((3, 1, 2, 2), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    res = liu_max_volume(model, x, y, method="ibp", bound_fn=ibp_margin_bounds, iters=100, lr=0.1)
    assert res.certified.all()
    eps = res.eps.flatten(1)
    assert bool((eps[:, 1:] > 0.9).all()) and bool((eps <= 1).all())
    assert bool((eps[:, 0] < 0.2 + 1e-6).all()) and bool((eps[:, 0] > 0.15).all())
    assert bool((res.log_volume > 4 * math.log(0.2)).all())


def test_misclassified_is_uncertified():
    x = make_images(6)
    model = tiny_conv(1)
    y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 3
    res = liu_max_volume(model, x, y, method="ibp", bound_fn=ibp_margin_bounds, iters=10)
    assert res.certified.tolist() == [False] * 3 + [True] * 3
    assert bool(torch.isinf(res.log_volume[:3]).all()) and bool((res.eps[:3] == 0).all())


def test_batched_equals_one_by_one():
    x = make_images(4, seed=5)
    model = tiny_conv(2)
    y = model(x).argmax(1)
    kw = dict(method="ibp", bound_fn=ibp_margin_bounds, iters=30, lr=0.05)
    batch = liu_max_volume(model, x, y, **kw)
    for i in range(4):
        one = liu_max_volume(model, x[i:i + 1], y[i:i + 1], **kw)
        assert abs(one.log_volume.item() - batch.log_volume[i].item()) < 1e-2 * N_DIMS


def test_with_the_real_engine_crown_ibp():
    bound_fn = engine_bound_fn()
    x = make_images(6, seed=3)
    model = tiny_conv(5)
    y = model(x).argmax(1)
    res = liu_max_volume(model, x, y, method="crown-ibp", bound_fn=bound_fn, iters=40, lr=0.05)
    _check_certified(model, x, y, res, bound_fn, "crown-ibp")
    uni = largest_uniform_eps(model, x, y, method="crown-ibp", bound_fn=bound_fn)
    ok = uni > 0
    assert bool((res.log_volume[ok] >= N_DIMS * uni[ok].double().log() - 1e-6).all())
