"""Clear errors for unsupported layers and malformed inputs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ctxbudget.bounds import compute_bounds, margin_spec, robust_cross_entropy

from .conftest import random_box, small_conv_net


def test_unsupported_layer_is_named() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(TypeError, match="Tanh"):
        compute_bounds(net, x, x + 0.1)
    with pytest.raises(TypeError, match="MaxPool2d"):
        compute_bounds(nn.Sequential(nn.MaxPool2d(2)), x, x)
    with pytest.raises(TypeError, match="Sequential"):
        compute_bounds(nn.Linear(4, 2), x, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="groups"):
        compute_bounds(nn.Sequential(nn.Conv2d(2, 2, 1, groups=2)), torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))


def test_bad_inputs() -> None:
    net = small_conv_net(0)
    x, xl, xu = random_box(2, (1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        compute_bounds(net, xl, xu[:1])
    bad = xl.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        compute_bounds(net, bad, xu)
    with pytest.raises(ValueError, match="x_lower > x_upper"):
        compute_bounds(net, xu + 0.01, xu)
    with pytest.raises(ValueError, match="method"):
        compute_bounds(net, xl, xu, method="deeppoly-ish")
    with pytest.raises(ValueError, match="C must have shape"):
        compute_bounds(net, xl, xu, C=torch.ones(2, 3, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="cannot apply"):
        compute_bounds(net, torch.zeros(2, 1, 5, 5, dtype=torch.float64), torch.zeros(2, 1, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="y must have shape"):
        robust_cross_entropy(net, xl, xu, torch.tensor([0]))
    with pytest.raises(ValueError, match="beta"):
        robust_cross_entropy(net, xl, xu, torch.tensor([0, 1]), beta=2.0)
    with pytest.raises(ValueError):
        margin_spec(torch.tensor([0.5]), 3)


def test_avgpool_options_rejected() -> None:
    net = nn.Sequential(nn.AvgPool2d(2, ceil_mode=True))
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="AvgPool2d"):
        compute_bounds(net, x, x)


def test_c_shared_two_dimensional_and_one_side() -> None:
    net = small_conv_net(1)
    x, xl, xu = random_box(3, (1, 8, 8))
    C2 = margin_spec(torch.tensor([2]), 5, dtype=torch.float64)[0]
    lo, up = compute_bounds(net, xl, xu, "crown-ibp", C=C2)
    lo1, none = compute_bounds(net, xl, xu, "crown-ibp", C=C2, bound_upper=False)
    assert none is None and torch.allclose(lo, lo1)
    none, up1 = compute_bounds(net, xl, xu, "crown-ibp", C=C2, bound_lower=False)
    assert none is None and torch.allclose(up, up1)
