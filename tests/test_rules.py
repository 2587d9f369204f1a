"""Each rule has one home: the copies elsewhere are the same objects."""
import importlib

import pytest

from ctxbudget import budgets, config
from ctxbudget.bounds import engine, verify
from ctxbudget.errors import UserError
from ctxbudget.evaluate import liu2019, result
from ctxbudget.export import vnnlib
from ctxbudget.train import schedules


def test_method_lists_come_from_the_engine():
    assert engine.METHODS == ("ibp", "crown-ibp", "crown", "alpha-crown")
    assert engine.DIFFERENTIABLE_METHODS == ("ibp", "crown-ibp", "crown")
    assert config.EVAL_METHODS is engine.DIFFERENTIABLE_METHODS is liu2019.LIU_METHODS
    assert not hasattr(liu2019, "METHODS")
    assert liu2019.margin_lower_bounds is verify.margin_lower_bounds
    assert not hasattr(liu2019, "_num_classes")


def test_kinds_come_from_their_modules():
    assert budgets.BUDGET_KINDS == ("learned", "uniform")
    report = importlib.import_module("ctxbudget.evaluate.report")    # the package exports a function of that name
    assert result.KINDS is vnnlib.KINDS is report.BUDGET_KINDS is budgets.BUDGET_KINDS
    assert schedules.RAMP_KINDS == ("linear", "smoothed")


@pytest.mark.parametrize("key, value, message", [
    ("budget.kind", "box", "budget.kind must be 'learned' or 'uniform', got 'box'"),
    ("schedule.kind", "cosine", "schedule.kind must be 'linear' or 'smoothed', got 'cosine'"),
    ("eval.method", "alpha-crown", "eval.method must be ibp, crown-ibp or crown, got 'alpha-crown'"),
])
def test_config_messages_name_the_shared_lists(key, value, message):
    with pytest.raises(UserError) as err:
        config.load_config(None, [f"{key}={value}"])
    assert str(err.value) == message


def test_liu_rejects_alpha_crown_by_one_rule():
    liu2019.check_liu_method("crown")
    with pytest.raises(ValueError, match="alpha-crown"):
        liu2019.check_liu_method("alpha-crown")
