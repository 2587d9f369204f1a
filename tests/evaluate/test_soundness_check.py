"""The soundness check catches a bound computed on a too-small box.

The injected bug shrinks the box to its middle half inside the bound function: the margins it
certifies are not true bounds, yet few or no certified examples are *broken* by PGD. The
invariant ``certified lower bound ≤ margin PGD reached + 2τ`` must flag it.
"""
import pytest

from ctxbudget.budgets import LearnedBudget
from ctxbudget.errors import SoundnessError
from ctxbudget.evaluate import evaluate_model, margin_lower_bounds
from ctxbudget.models import BudgetGenerator
from eval_helpers import SHAPE, make_images, tiny_conv

FAST = dict(attack_steps=10, liu_limit=0, batch_size=16, progress=False)


def middle_half(classifier, lo, hi, y, method):
    q = (hi - lo) / 4
    return margin_lower_bounds(classifier, lo + q, hi - q, y, method)


@pytest.mark.parametrize("eps0", [0.003, 0.01])   # the old check (certified & broken) found 0 here
def test_shrunken_box_is_a_soundness_violation(eps0):
    model = tiny_conv(0)
    threat = LearnedBudget(BudgetGenerator(SHAPE), eps0, 0.5, 2.0)
    x = make_images(32, seed=4)
    y = model(x).argmax(1)
    with pytest.raises(SoundnessError, match="exceeds the margin"):
        evaluate_model(model, threat, x, y, methods=["ibp", "crown"], bound_fn=middle_half, **FAST)
    res = evaluate_model(model, threat, x, y, methods=["ibp", "crown"], bound_fn=middle_half, strict=False, **FAST)
    # CROWN on every example under both budgets (IBP on half the box is still loose enough)
    assert res["soundness_violations"] == 64
    ok = evaluate_model(model, threat, x, y, methods=["ibp", "crown"], **FAST)   # the real engine: sound
    assert ok["soundness_violations"] == 0


def test_liu_certificates_are_attacked_with_the_configured_settings(monkeypatch):
    from ctxbudget.evaluate import steps

    seen = []
    real = steps.pgd_attack

    def spy(*args, **kwargs):
        seen.append((kwargs["restarts"], kwargs["loss"], len(args[1])))
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "pgd_attack", spy)
    model = tiny_conv(0)
    x = make_images(8, seed=5)
    y = model(x).argmax(1)
    evaluate_model(model, LearnedBudget(BudgetGenerator(SHAPE), 0.01, 0.5, 2.0), x, y, methods=["ibp"],
                   attack_steps=3, attack_restarts=2, attack_loss="ce", liu_limit=8, liu_iters=3, batch_size=8,
                   progress=False)
    assert len(seen) == 3                                  # learned, uniform, Liu et al.
    assert all(r == 2 and loss == "ce" for r, loss, _ in seen)
