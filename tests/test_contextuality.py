"""Contextuality statistics of budget maps (ctxbudget.contextuality)."""
import math

import pytest
import torch

from ctxbudget.contextuality import budget_contextuality, input_dependent_share, region_masks


def test_share_is_zero_for_one_fixed_map_and_one_for_zero_mean_maps():
    fixed = torch.randn(1, 1, 5, 5).expand(7, 1, 5, 5)
    assert input_dependent_share(fixed) == pytest.approx(0.0, abs=1e-12)
    per_image = torch.randn(8, 1, 5, 5)
    per_image = per_image - per_image.mean(dim=0, keepdim=True)   # per-dimension mean is 0 everywhere
    assert input_dependent_share(per_image) == pytest.approx(1.0)


def test_share_matches_the_formula_on_a_mixture():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 30, generator=g) * 3
    noise = torch.randn(50, 30, generator=g)
    L = base + noise
    expected = ((L - L.mean(0)) ** 2).sum() / ((L - L.mean()) ** 2).sum()
    assert input_dependent_share(L) == pytest.approx(float(expected))
    assert 0.0 < input_dependent_share(L) < 0.5                     # mostly the fixed map


def test_share_of_constant_budgets_is_zero_and_bad_input_is_rejected():
    assert input_dependent_share(torch.full((4, 10), math.log(0.3))) == 0.0
    # a generator saturated at one budget: float32 rounding noise is not an input-dependent map
    saturated = torch.full((64, 784), 0.8) * (1 + 1e-7 * torch.randn(64, 784))
    assert input_dependent_share(saturated.float().log()) == 0.0
    # a real spread, however small in share, still counts
    assert input_dependent_share(torch.randn(64, 784) * 1e-3) > 0.9
    with pytest.raises(ValueError, match="at least 2"):
        input_dependent_share(torch.zeros(1, 10))
    with pytest.raises(ValueError, match="finite"):
        input_dependent_share(torch.tensor([[0.0, -math.inf], [0.0, 0.0]]))


def test_watermark_and_stroke_statistics_follow_the_masks():
    n = 6
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 10:18, 10:18] = 1.0                                 # "stroke"
    regions = torch.zeros(n, 1, 28, 28, dtype=torch.bool)
    regions[:, :, 0:8, 0:8] = True                                   # watermark box
    images[:, :, 2:6, 2:6] = 0.3                                     # lit mark pixels inside the box

    def budgets(x):                                                  # small on lit mark, large on stroke
        eps = torch.full_like(x, 0.4)
        eps[:, :, 2:6, 2:6] = 0.1
        eps[:, :, 10:18, 10:18] = 0.8
        return eps

    ctx = budget_contextuality(budgets, images, dataset_name="watermarked-mnist", regions=regions)
    wm = ctx["watermark_vs_elsewhere"]
    assert wm["mean"] == pytest.approx(0.1) and wm["count"] == n * 16
    outside = (28 * 28 - 64 - 64) * 0.4 + 64 * 0.8                   # every pixel outside the 8×8 box
    assert wm["mean_other"] == pytest.approx(outside / (28 * 28 - 64))
    st = ctx["stroke_vs_background"]
    assert st["mean"] == pytest.approx(0.8)
    assert ctx["input_dependent_share"] == pytest.approx(0.0, abs=1e-9)  # same map for every image


def test_doubled_regions_leave_the_border_out():
    images = torch.rand(3, 3, 36, 64)
    regions = torch.zeros(3, 1, 36, 64, dtype=torch.bool)
    regions[:, :, :4, :] = True
    regions[:, :, 4:, :32] = True
    masks = region_masks("doubled-mnist", images, regions)
    attended, ignored = masks["attended_vs_ignored"]
    assert int(attended[0].sum()) == 3 * 32 * 32 and int(ignored[0].sum()) == 3 * 32 * 32
    assert not attended[:, :, :4].any() and not ignored[:, :, :4].any()


def test_batches_do_not_run_past_the_end():
    images = torch.rand(300, 1, 4, 4)
    seen = []

    def budgets(x):
        seen.append(len(x))
        return torch.full_like(x, 0.2)

    ctx = budget_contextuality(budgets, images, batch_size=256)
    assert seen == [256, 44] and ctx["n"] == 300


def test_accumulator_over_batches_equals_the_whole_set_and_merges_like_ranks():
    from ctxbudget.contextuality import ContextualityAccumulator, contextuality_of

    g = torch.Generator().manual_seed(1)
    images = torch.rand(37, 1, 8, 8, generator=g)
    regions = torch.zeros(37, 1, 8, 8, dtype=torch.bool)
    regions[:, :, 2:6, :3] = True
    eps = 0.3 * torch.exp(torch.randn(1, 1, 8, 8, generator=g) + 0.5 * torch.randn(37, 1, 8, 8, generator=g))
    whole = contextuality_of(eps, images, dataset_name="watermarked-mnist", regions=regions)
    L = eps.double().log().reshape(37, -1)
    expected = float(((L - L.mean(0)) ** 2).sum() / ((L - L.mean()) ** 2).sum())
    assert whole["input_dependent_share"] == pytest.approx(expected, rel=1e-9)
    ranks = [ContextualityAccumulator((1, 8, 8), dataset_name="watermarked-mnist", regions=True, shift=math.log(0.3))
             for _ in range(2)]
    for i in range(0, 37, 5):                                        # batches dealt to two "ranks"
        ranks[(i // 5) % 2].update(eps[i:i + 5], images[i:i + 5], regions[i:i + 5])
    ranks[0].load_sums(ranks[0].sums() + ranks[1].sums())
    merged = ranks[0].result()
    assert merged["n"] == 37
    assert merged["input_dependent_share"] == pytest.approx(expected, rel=1e-9)
    for key in ("stroke_vs_background", "watermark_vs_elsewhere"):
        for stat in ("mean", "mean_other", "ratio"):
            assert merged[key][stat] == pytest.approx(whole[key][stat], rel=1e-9)
        assert merged[key]["count"] == whole[key]["count"]
    with pytest.raises(ValueError, match="regions"):
        ranks[1].update(eps[:2], images[:2])


def test_contextuality_row_flattens_share_and_ratios():
    from ctxbudget.contextuality import contextuality_row

    ctx = {"n": 3, "mean_eps": 0.2, "input_dependent_share": 0.25,
           "stroke_vs_background": {"mean": 0.1, "mean_other": 0.4, "ratio": 0.25}}
    assert contextuality_row(ctx) == {"input_dependent_share": 0.25, "ratio_stroke_vs_background": 0.25}


def test_log_eps_std_says_how_far_budgets_spread_beside_the_share():
    images = torch.rand(10, 1, 4, 4)
    flat_but_one = torch.full((10, 1, 4, 4), 0.8)
    flat_but_one[3, 0, 0, 0] = 0.4                               # one image, one pixel differs
    ctx = budget_contextuality(lambda x: flat_but_one[: len(x)], images)
    assert ctx["input_dependent_share"] > 0.8                   # all the (tiny) variance is input-dependent
    L = flat_but_one.log()
    assert ctx["log_eps_std"] == pytest.approx(float(L.std(unbiased=False)), rel=1e-6)
    assert ctx["log_eps_std"] < 0.1
    assert budget_contextuality(lambda x: torch.full_like(x, 0.3), images)["log_eps_std"] == pytest.approx(0.0, abs=1e-12)
