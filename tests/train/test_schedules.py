import pytest

from ctxbudget.train.schedules import RampSchedule, learning_rate, mixing_weight


def test_linear_ramp_matches_auto_lirpa_convention():
    r = RampSchedule("linear", start=2, length=4, steps_per_epoch=10)
    assert r(0) == 0 and r(9) == 0 and r(10) == 0          # epoch 1 natural; ramp starts at epoch 2
    assert r(11) == pytest.approx(1 / 40)
    assert r(30) == pytest.approx(0.5)
    assert r(50) == 1.0 and r(1000) == 1.0                  # full at the first step of epoch 6
    values = [r(s) for s in range(60)]
    assert values == sorted(values)


def test_smoothed_ramp_is_monotone_continuous_and_polynomial_first():
    r = RampSchedule("smoothed", start=32, length=160, steps_per_epoch=10)
    init, final = r.init_step, r.final_step
    mid = init + int((final - init) * 0.25)
    vals = [r(s) for s in range(init, final + 2)]
    assert vals == sorted(vals) and vals[0] == 0 and vals[-1] == 1.0
    # x^4 growth: doubling the distance from init multiplies by 16 in the polynomial part
    assert r(init + 200) == pytest.approx(16 * r(init + 100))
    # slope continuous at mid (left and right finite differences agree)
    left, right = r(mid) - r(mid - 1), r(mid + 1) - r(mid)
    assert left == pytest.approx(right, rel=0.02)
    assert max(abs(b - a) for a, b in zip(vals, vals[1:])) < 0.01


def test_mixing_and_lr():
    assert mixing_weight(0.0, 0.5) == 1.0 and mixing_weight(1.0, 0.5) == 0.5 and mixing_weight(0.5, 0.0) == 0.5
    assert learning_rate(1.0, 1, [130, 190], 0.1) == 1.0
    assert learning_rate(1.0, 131, [130, 190], 0.1) == pytest.approx(0.1)
    assert learning_rate(1.0, 191, [130, 190], 0.1) == pytest.approx(0.01)


def test_invalid_ramp():
    with pytest.raises(ValueError):
        RampSchedule("cosine", 1, 1, 1)
