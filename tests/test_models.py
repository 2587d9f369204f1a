import pytest
import torch
from torch import nn

from ctxbudget.models import BudgetGenerator, Normalize, get_model

SHAPES = {"mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10), "doubled-cifar10": ((3, 36, 64), 10),
          "watermarked-mnist": ((1, 28, 28), 20), "organamnist": ((1, 28, 28), 11)}
# parameter counts computed by hand from shared/reference/models.md
EXPECTED_PARAMS = {
    ("dm-small", "mnist"): (16 * 16 + 16) + (32 * 16 * 16 + 32) + (3200 * 100 + 100) + (100 * 10 + 10),
    ("dm-small", "cifar10"): (16 * 48 + 16) + (32 * 256 + 32) + (4608 * 100 + 100) + (100 * 10 + 10),
    ("dm-large", "mnist"): (64 * 9 + 64) + (64 * 576 + 64) + (128 * 576 + 128) + 2 * (128 * 1152 + 128)
                           + (25088 * 512 + 512) + (512 * 10 + 10),
    ("dm-large", "cifar10"): (64 * 27 + 64) + (64 * 576 + 64) + (128 * 576 + 128) + 2 * (128 * 1152 + 128)
                             + (32768 * 512 + 512) + (512 * 10 + 10),
    ("dm-medium", "mnist"): (32 * 9 + 32) + (32 * 512 + 32) + (64 * 288 + 64) + (64 * 1024 + 64)
                            + (1024 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10),
}


@pytest.mark.parametrize("name", ["dm-small", "dm-medium", "dm-large"])
@pytest.mark.parametrize("data", list(SHAPES))
def test_output_shapes_and_layer_set(name, data):
    shape, k = SHAPES[data]
    model = get_model(name, shape, k)
    assert isinstance(model, nn.Sequential) and isinstance(model[0], Normalize)
    assert all(isinstance(m, (Normalize, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear)) for m in model)
    assert model(torch.rand(2, *shape)).shape == (2, k)
    if (name, data) in EXPECTED_PARAMS:
        assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[(name, data)]


def test_normalize_and_errors():
    model = get_model("dm-small", (3, 32, 32), 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = torch.full((1, 3, 32, 32), 0.75)
    assert torch.allclose(model[0](x), torch.ones_like(x))
    with pytest.raises(ValueError, match="unknown model"):
        get_model("resnet", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="mean/std"):
        get_model("dm-small", (3, 32, 32), 10, mean=(0.5,), std=(0.2,))
    with pytest.raises(ValueError, match="too small"):
        get_model("dm-small", (1, 4, 4), 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 36, 64)])
def test_generator_shape_range(shape):
    g = BudgetGenerator(shape)
    out = g(torch.rand(2, *shape))
    assert out.shape == (2, *shape) and (out > 0).all() and (out < 1).all()
    c, h, w = shape
    expected = (c * 4 * 9 + 4) + (4 * 8 * 9 + 8) + (8 * h * w * c * h * w + c * h * w)
    assert sum(p.numel() for p in g.parameters()) == expected
    with pytest.raises(ValueError):
        g(torch.rand(2, c, h + 1, w))
