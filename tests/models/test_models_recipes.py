"""The fast-training architectures and initialisation (Shi et al. 2021): dm-*-bn and ``model.init: ibp``."""
import math

import pytest
import torch
from torch import nn

from ctxbudget.config import load_config
from ctxbudget.errors import UserError
from ctxbudget.models import get_model, ibp_init_, initialize_


@pytest.mark.parametrize("name,plain", [("dm-small-bn", "dm-small"), ("dm-medium-bn", "dm-medium")])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_bn_variants_put_batchnorm_after_every_layer_but_the_last(name, plain, shape):
    bn, ref = get_model(name, shape, 10), get_model(plain, shape, 10)
    layers = list(bn)
    for i, m in enumerate(layers):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and i < len(layers) - 1:
            kind = nn.BatchNorm2d if isinstance(m, nn.Conv2d) else nn.BatchNorm1d
            width = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            assert isinstance(layers[i + 1], kind) and layers[i + 1].num_features == width
            assert isinstance(layers[i + 2], nn.ReLU)
    assert isinstance(layers[-1], nn.Linear)
    # the same layers as the plain model once the BatchNorms are taken out
    assert [type(m) for m in layers if not isinstance(m, nn.modules.batchnorm._BatchNorm)] == [type(m) for m in ref]
    n_bn = sum(2 * m.num_features for m in bn.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    assert sum(p.numel() for p in bn.parameters()) == sum(p.numel() for p in ref.parameters()) + n_bn
    assert bn.train()(torch.rand(4, *shape)).shape == (4, 10)


def test_ibp_init_statistics():
    torch.manual_seed(0)
    net = get_model("dm-medium-bn", (1, 28, 28), 10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ibp_init_(net)
    layers = [(i, m) for i, m in enumerate(net) if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i, m in layers[:-1]:
        fan_in = m.weight[0].numel()        # in_channels·k·k or in_features
        sigma = math.sqrt(2 * math.pi) / fan_in
        w = m.weight.detach().double()
        n = w.numel()
        # sample std within 5 standard errors of σ (SE of the std ≈ σ/√(2n)), mean within 5 SE (σ/√n)
        assert abs(w.std().item() - sigma) < 5 * sigma / math.sqrt(2 * n), (i, w.std().item(), sigma)
        assert abs(w.mean().item()) < 5 * sigma / math.sqrt(n), i
        if n >= 10_000:   # Gaussian, not uniform (kurtosis 3, not 1.8; standard error √(24/n) < 0.05)
            assert abs((w / sigma).pow(4).mean().item() - 3) < 0.3, i
    for key, value in net.state_dict().items():   # biases, BatchNorm and the last layer keep their values
        idx, name = key.split(".", 1)
        reinitialised = name == "weight" and isinstance(net[int(idx)], (nn.Conv2d, nn.Linear)) \
            and int(idx) != layers[-1][0]
        assert torch.equal(value, before[key]) != reinitialised, key


def test_initialize_dispatch_and_config_validation():
    torch.manual_seed(0)
    net = get_model("dm-small", (1, 28, 28), 10)
    w = net[6].weight.clone()          # Linear(3200, 100)
    initialize_(net, "default")
    assert torch.equal(net[6].weight, w)
    initialize_(net, "ibp")
    assert net[6].weight.std().item() == pytest.approx(math.sqrt(2 * math.pi) / 3200, rel=0.05)
    with pytest.raises(ValueError, match="unknown initialisation"):
        initialize_(net, "xavier")
    with pytest.raises(UserError, match="model.init must be one of default, ibp"):
        load_config(None, ["model.init=xavier"])
    assert load_config(None, ["model.name=dm-medium-bn", "model.init=ibp"]).model.init == "ibp"
