import pytest
import torch
from torch import nn

from ctxbudget.models import BudgetGenerator, Normalize, get_model
from ctxbudget.models.generator import DEFAULT_HEAD, RESOLUTIONS, coarse_grid, max_pool_same

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
    ("dm-small-px", "mnist"): (8 * 1 + 8) + (16 * 8 * 16 + 16) + (32 * 16 * 16 + 32) + (3200 * 100 + 100)
                              + (100 * 10 + 10),
    ("dm-medium", "mnist"): (32 * 9 + 32) + (32 * 512 + 32) + (64 * 288 + 64) + (64 * 1024 + 64)
                            + (1024 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10),
}


@pytest.mark.parametrize("name", ["dm-small", "dm-medium", "dm-large", "dm-small-px"])
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
    g = BudgetGenerator(shape, head="dense")
    out = g(torch.rand(2, *shape))
    assert out.shape == (2, *shape) and (out > 0).all() and (out < 1).all()
    c, h, w = shape
    expected = (c * 4 * 9 + 4) + (4 * 8 * 9 + 8) + (8 * h * w * c * h * w + c * h * w)
    assert sum(p.numel() for p in g.parameters()) == expected
    with pytest.raises(ValueError):
        g(torch.rand(2, c, h + 1, w))


@pytest.mark.parametrize("head", ["context", "conv", "dense"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 36, 56)])
def test_every_head_maps_images_to_scores(head, shape):
    g = BudgetGenerator(shape, head=head)
    out = g(torch.rand(3, *shape))
    assert out.shape == (3, *shape) and (out > 0).all() and (out < 1).all()


def test_default_head_is_context_and_unknown_heads_are_rejected():
    assert BudgetGenerator((1, 8, 8)).head_kind == "context" == DEFAULT_HEAD
    with pytest.raises(ValueError, match="generator head"):
        BudgetGenerator((1, 8, 8), head="mlp")


def _trained_like(g):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in g.parameters():
            p.normal_(0, 0.3)
    return g


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_context_head_cannot_store_a_position_fixed_map(resolution):
    """On a blank image every interior pixel gets the same score (no parity mask, no fixed map finer than
    the coarse cells): the local path is translation-equivariant, and the coarse map is smooth."""
    g = _trained_like(BudgetGenerator((1, 28, 28), head="context", resolution=resolution))
    with torch.no_grad():
        g.head.coarse.weight.zero_()
        g.head.coarse.bias.zero_()
        blank = g(torch.zeros(1, 1, 28, 28))[0, 0]
    interior = blank[6:-6, 6:-6]
    assert torch.allclose(interior, interior[0, 0].expand_as(interior), atol=1e-6)
    dense = _trained_like(BudgetGenerator((1, 28, 28), head="dense"))
    with torch.no_grad():
        d = dense(torch.zeros(1, 1, 28, 28))[0, 0, 6:-6, 6:-6]
    assert d.std() > 1e-2                                        # the paper's head stores a map


def test_context_head_follows_a_shifted_image_and_sees_distant_cues():
    g = _trained_like(BudgetGenerator((1, 28, 28), head="context"))
    x = torch.zeros(1, 1, 28, 28)
    x[:, :, 10:14, 9:12] = 1.0
    with torch.no_grad():
        film, coarse = g.head.film.weight.clone(), g.head.coarse.weight.clone()
        for layer in (g.head.film, g.head.coarse):
            layer.weight.zero_()
            layer.bias.zero_()
        shifted = torch.roll(x, shifts=(3, 4), dims=(2, 3))
        a, b = g(x), g(shifted)                      # local path alone: equivariant to shifts
        assert torch.allclose(torch.roll(a, shifts=(3, 4), dims=(2, 3))[..., 8:-8, 8:-8], b[..., 8:-8, 8:-8],
                              atol=1e-5)
        g.head.film.weight.copy_(film)
        g.head.coarse.weight.copy_(coarse)
        cue = x.clone()
        cue[:, :, 0:3, 25:28] = 1.0                   # a mark far outside the 9×9 field of pixel (20, 5)
        near, far = g(x)[0, 0, 20, 5], g(cue)[0, 0, 20, 5]
    assert abs(float(near - far)) > 1e-4             # the global context reaches every pixel
    fresh = BudgetGenerator((1, 28, 28), head="context")
    assert fresh.head.coarse.weight.abs().sum() == 0 and fresh.head.film.weight.abs().sum() == 0
    assert coarse_grid(28, 28) == (4, 4) and coarse_grid(36, 56) == (5, 8)


def test_runs_saved_before_the_generator_key_load_with_the_papers_head(tmp_path):
    import yaml

    from ctxbudget.config import load_config
    from ctxbudget.run import read_config, write_config

    write_config(tmp_path, load_config("quickstart"))
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert data["budget"]["generator"] == "context"
    del data["budget"]["generator"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    assert read_config(tmp_path).budget.generator == "dense"


def test_context_head_padding_decides_whether_border_pixels_know_where_they_are():
    for padding, flat in (("replicate", True), ("zeros", False)):
        g = _trained_like(BudgetGenerator((1, 28, 28), head="context", padding=padding))
        with torch.no_grad():
            for layer in (g.head.film, g.head.coarse):
                layer.weight.zero_()
                layer.bias.zero_()
            blank = g(torch.zeros(1, 1, 28, 28))[0, 0]
        assert torch.allclose(blank, blank[14, 14].expand_as(blank), atol=1e-6) == flat
    with pytest.raises(ValueError, match="padding"):
        BudgetGenerator((1, 28, 28), head="context", padding="reflect")


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 27, 29), (3, 36, 64)])
@pytest.mark.parametrize("k", [3, 5])
def test_max_pool_same_equals_torchs_stride_one_max_pool(shape, k):
    x = torch.rand(4, *shape)
    x[0, 0, 0, 0] = -1.0                               # negative values too: the padding is −inf, not 0
    assert torch.equal(max_pool_same(x, k), torch.nn.functional.max_pool2d(x, k, stride=1, padding=k // 2))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 27, 29), (3, 36, 64)])
@pytest.mark.parametrize("resolution", ["half", "low"])
def test_reduced_resolution_context_head(shape, resolution):
    """budget.generator_resolution=half: scores of the full size for even and odd sizes, the local path
    after its first convolution on pooled features, one extra 1×1 skip convolution (from the first
    convolution's 8 channels) started at zero; =low: every convolution of the local path on the pooled
    image, the skip from the image's C channels."""
    full = BudgetGenerator(shape, head="context")
    half = BudgetGenerator(shape, head="context", resolution=resolution)
    c, h, w = shape
    x = torch.rand(2, *shape)
    out = half(x)
    assert out.shape == (2, *shape) and (out > 0).all() and (out < 1).all()
    n_full, n_half = (sum(p.numel() for p in g.parameters()) for g in (full, half))
    assert n_half == n_full + (8 if resolution == "half" else c) * c + c
    assert half.head.skip.weight.abs().sum() == 0 and full.head.skip is None
    seen = []
    hooks = [half.head.local[i].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:]))) for i in (0, 4)]
    half(x)
    for hook in hooks:
        hook.remove()
    low = ((h + 1) // 2, (w + 1) // 2)
    assert seen == [(h, w) if resolution == "half" else low, low]


@pytest.mark.parametrize("resolution", ["half", "low"])
def test_reduced_resolution_context_head_follows_the_image(resolution):
    """Shifted by an even number of pixels (the pooling grid), the image's scores shift with it away from
    the border; the full-resolution skip makes single pixels matter."""
    g = _trained_like(BudgetGenerator((1, 28, 28), head="context", resolution=resolution))
    x = torch.zeros(1, 1, 28, 28)
    x[:, :, 10:14, 9:12] = 1.0
    with torch.no_grad():
        for layer in (g.head.film, g.head.coarse):
            layer.weight.zero_()
            layer.bias.zero_()
        a, b = g(x), g(torch.roll(x, shifts=(4, 2), dims=(2, 3)))
        assert torch.allclose(torch.roll(a, shifts=(4, 2), dims=(2, 3))[..., 10:-10, 10:-10], b[..., 10:-10, 10:-10],
                              atol=1e-5)
        y = x.clone()
        y[:, :, 20, 20] = 1.0
        assert float((g(y) - a)[0, 0, 20, 20].abs()) > 1e-4
    with pytest.raises(ValueError, match="resolution"):
        BudgetGenerator((1, 28, 28), head="context", resolution="quarter")


def test_runs_saved_before_the_resolution_key_load_with_a_full_resolution_head(tmp_path):
    import yaml

    from ctxbudget.config import load_config, stored_config_from_dict
    from ctxbudget.run import read_config, write_config

    write_config(tmp_path, load_config("quickstart", ["budget.generator_resolution=half"]))
    assert read_config(tmp_path).budget.generator_resolution == "half"
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del data["budget"]["generator_resolution"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    assert read_config(tmp_path).budget.generator_resolution == "full"
    assert stored_config_from_dict(data).budget.generator_resolution == "full"   # a registry entry alike
    assert data["budget"].get("generator_resolution") is None                     # the caller's dict unchanged


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 12, 10)])
def test_mix_head_equals_the_context_head_at_0_and_the_dense_head_at_1(shape):
    """budget.generator=mix: logits (1 − w)·context + w·dense; its ends are the two heads, value for value."""
    torch.manual_seed(0)
    x = torch.rand(4, *shape)
    context = _trained_like(BudgetGenerator(shape, head="context"))
    dense = _trained_like(BudgetGenerator(shape, head="dense"))
    mixes = {w: BudgetGenerator(shape, head="mix", mix=w) for w in (0.0, 0.3, 1.0)}
    for m in mixes.values():
        m.head.context.load_state_dict(context.head.state_dict())
        m.head.dense_features.load_state_dict(dense.features.state_dict())
        m.head.dense.load_state_dict(dense.head.state_dict())
    with torch.no_grad():
        assert torch.equal(mixes[0.0](x), context(x))
        assert torch.equal(mixes[1.0](x), dense(x))
        between = mixes[0.3].head(x)                                           # logits, before the Sigmoid
        expected = 0.7 * context.head(x) + 0.3 * dense.head(dense.features(x)).view_as(x)
        assert torch.allclose(between, expected, rtol=1e-6, atol=1e-5)
    # the dense head's layout is unchanged (runs saved with it still load)
    assert set(dense.state_dict()) == {"features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias",
                                       "head.weight", "head.bias"}
    with pytest.raises(ValueError, match="mix must lie in"):
        BudgetGenerator(shape, head="mix", mix=1.5)


def test_mix_head_config_and_table_name():
    from ctxbudget.config import load_config
    from ctxbudget.errors import UserError
    from ctxbudget.reproduce.runner import head_name

    cfg = load_config(None, ["budget.generator=mix", "budget.generator_mix=0.25"])
    assert cfg.budget.generator_mix == 0.25 and cfg.inert_keys() == set()
    assert head_name(cfg) == "mix (w = 0.25)"
    assert ("budget", "generator_mix") in load_config(None, []).inert_keys()
    with pytest.raises(UserError, match="budget.generator_mix must be a number in"):
        load_config(None, ["budget.generator=mix", "budget.generator_mix=1.5"])
    from ctxbudget.run import build_models
    _, threat = build_models(cfg, (1, 28, 28), 10, (0.1,), (0.3,))
    assert threat.generator.head.mix == 0.25


def test_mix_range_bounds_the_dense_part_of_the_logits():
    """budget.generator_mix_range = R: the dense logits d enter as R·tanh(d/R), so the position-fixed
    part moves the logits by at most w·R; without it (None) the mix head is unchanged."""
    shape = (1, 28, 28)
    torch.manual_seed(0)
    x = torch.rand(4, *shape)
    free = _trained_like(BudgetGenerator(shape, head="mix", mix=0.5))
    with torch.no_grad():
        free.head.dense.bias.fill_(40.0)                      # a dense part far beyond any bound
        bounded = BudgetGenerator(shape, head="mix", mix=0.5, mix_range=2.0)
        bounded.load_state_dict(free.state_dict())
        ctx = free.head.context(x)
        d = free.head.dense(free.head.dense_features(x)).view_as(x)
        assert torch.allclose(free.head(x), 0.5 * ctx + 0.5 * d, rtol=1e-6, atol=1e-4)
        assert torch.allclose(bounded.head(x), 0.5 * ctx + 0.5 * 2.0 * torch.tanh(d / 2.0), rtol=1e-6, atol=1e-5)
        assert float((bounded.head(x) - 0.5 * ctx).abs().max()) <= 1.0 + 1e-6
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="mix_range must be a positive number"):
            BudgetGenerator(shape, head="mix", mix=0.5, mix_range=bad)


def test_mix_range_config_and_table_name():
    from ctxbudget.config import load_config
    from ctxbudget.errors import UserError
    from ctxbudget.reproduce.runner import head_name
    from ctxbudget.run import build_models

    cfg = load_config(None, ["budget.generator=mix", "budget.generator_mix=0.5", "budget.generator_mix_range=2"])
    assert head_name(cfg) == "mix (w = 0.5, dense part within ±2)"
    _, threat = build_models(cfg, (1, 28, 28), 10, (0.1,), (0.3,))
    assert threat.generator.head.mix_range == 2.0
    assert ("budget", "generator_mix_range") in load_config(None, []).inert_keys()
    for bad in ("0", "-1", "true", "abc"):
        with pytest.raises(UserError, match="budget.generator_mix_range must be a (positive )?number"):
            load_config(None, ["budget.generator=mix", f"budget.generator_mix_range={bad}"])
