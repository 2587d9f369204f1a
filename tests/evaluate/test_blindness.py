"""Where the classifier is blind vs where the budgets are large (ctxbudget.evaluate.blindness)."""
import pytest
import torch
from torch import nn

from ctxbudget.evaluate.blindness import blindness_stats, first_layer_mass, input_gradient


def test_first_layer_mass_of_a_strided_conv_counts_the_taps_reading_each_pixel():
    conv = nn.Conv2d(1, 2, 4, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    mass = first_layer_mass(nn.Sequential(nn.Identity(), conv), (1, 6, 6))[0]
    # 2 filters × the 2×2 output positions whose 4×4 windows cover an interior pixel; corners: 1 position
    assert mass[2, 2] == 8 and mass[0, 0] == 2 and mass[0, 2] == 4
    with torch.no_grad():
        conv.weight[:, :, ::2, :] = 0.0               # taps of even kernel rows: the parity a mask exploits
    mass = first_layer_mass(nn.Sequential(conv), (1, 6, 6))[0]
    assert mass[1, 1] == 0 and mass[2, 2] == 8     # odd input rows are read by even taps only (padding 1)


def test_linear_first_layer_and_errors():
    lin = nn.Linear(8, 3)
    mass = first_layer_mass(nn.Sequential(nn.Flatten(), lin), (2, 2, 2))
    assert torch.allclose(mass.flatten(), lin.weight.abs().sum(0))
    with pytest.raises(ValueError, match="no Conv2d or Linear"):
        first_layer_mass(nn.Sequential(nn.ReLU()), (1, 2, 2))
    with pytest.raises(ValueError, match="reads 8 inputs"):
        first_layer_mass(nn.Sequential(nn.Flatten(), lin), (1, 3, 3))


def test_budgets_parked_where_the_classifier_is_blind_are_told_apart_from_budgets_that_follow_it():
    torch.manual_seed(0)
    lin = nn.Linear(16, 2)
    with torch.no_grad():
        lin.weight[:, 8:] = 0.0                       # blind to the second half of the input
    clf = nn.Sequential(nn.Flatten(), lin)
    x = torch.rand(20, 1, 4, 4)
    y = torch.zeros(20, dtype=torch.long)
    parked = torch.full_like(x, 0.1)
    parked.view(20, -1)[:, 8:] = 0.6                  # large where it is blind, the same for every image
    parked = parked * torch.exp(0.01 * torch.randn_like(x))
    s = blindness_stats(clf, parked, x, y)
    assert s["blind_share"] == pytest.approx(0.5) and s["mass_corr"] < -0.9 and s["gradient_corr"] < -0.9
    g = input_gradient(clf, x, y)
    assert torch.allclose(g[0].flatten(), lin.weight[0].abs())
    with pytest.raises(ValueError, match="≥ 2 images"):
        blindness_stats(clf, parked[:1], x[:1], y[:1])
