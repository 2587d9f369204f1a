"""evaluate_model / evaluate_run end to end on tiny models; the soundness check."""
import json
import math

import numpy as np
import pytest
import torch

from ctxbudget.budgets import LearnedBudget, UniformBudget
from ctxbudget.config import DataConfig, RunConfig
from ctxbudget.errors import SoundnessError, UserError
from ctxbudget.evaluate import evaluate_model, evaluate_run, parse_methods
from ctxbudget.models import BudgetGenerator
from ctxbudget.run import Run
from eval_helpers import SHAPE, engine_bound_fn, ibp_margin_bounds, make_images, tiny_conv

FAST = dict(attack_steps=10, liu_limit=6, liu_iters=20, liu_lr=0.05, batch_size=8)


def _setup(seed=0, eps0=0.03, n=16):
    torch.manual_seed(seed)
    model = tiny_conv(seed)
    threat = LearnedBudget(BudgetGenerator(SHAPE), eps0, 0.5, 2.0)
    x = make_images(n, seed=seed)
    y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 3                                         # three misclassified examples
    return model, threat, x, y


def _check_results(res, n):
    assert res["n"] == n and res["soundness_violations"] == 0
    fracs = [res["clean_err"], *res["verified_err"].values(), *res["attack_err"].values(),
             *[v for d in res["verified_err_by_method"].values() for v in d.values()]]
    assert all(isinstance(f, float) and 0.0 <= f <= 1.0 for f in fracs)
    for kind in ("learned", "uniform"):
        assert res["attack_err"][kind] <= res["verified_err"][kind]
        assert res["verified_err"][kind] >= res["clean_err"]
        assert res["verified_err"][kind] <= min(res["verified_err_by_method"][kind].values())
    assert res["verified_err"]["liu2019"] >= 3 / res["n_liu2019"]
    json.dumps(res)                                                 # JSON-safe


def test_end_to_end_with_reference_ibp():
    model, threat, x, y = _setup()
    res, rec = evaluate_model(model, threat, x, y, bound_fn=ibp_margin_bounds, return_records=True, **FAST)
    _check_results(res, 16)
    assert res["clean_err"] == pytest.approx(3 / 16)
    assert abs(res["mean_log_volume_learned_per_dim"] - math.log(0.03)) < 1e-4
    assert set(res["seconds"]) >= {"clean", "verify_learned", "attack_learned", "verify_uniform", "liu2019", "total"}
    assert all(len(v) == 16 for v in rec.values())
    assert not rec["verified_learned_any"][:3].any() and (rec["attack_margin_learned"][:3] < 0).all()
    assert np.isnan(rec["liu_log_volume"][6:]).all() and rec["liu_evaluated"].sum() == 6


def test_end_to_end_with_the_real_engine_no_violations():
    bound_fn = engine_bound_fn()
    for seed in (0, 1):
        model, threat, x, y = _setup(seed, eps0=0.05)
        res = evaluate_model(model, threat, x, y, methods=("ibp", "crown-ibp", "crown", "alpha-crown"), bound_fn=bound_fn,
                             **FAST)
        _check_results(res, 16)
        assert 0 < res["verified_err"]["uniform"] < 1 or 0 < res["verified_err"]["learned"] < 1


def test_default_bound_function_is_the_engine():
    engine = engine_bound_fn()
    model, threat, x, y = _setup(2)
    res = evaluate_model(model, threat, x, y, methods=["crown-ibp"], **FAST)
    _check_results(res, 16)
    # without bound_fn, every column (verified, attack, Liu et al.) is what the engine's bounds give
    with_engine = evaluate_model(model, threat, x, y, methods=["crown-ibp"], bound_fn=engine, **FAST)
    res.pop("seconds"), with_engine.pop("seconds")
    assert res == with_engine
    # and a different bound function changes the result: the comparison can fail
    other = evaluate_model(model, threat, x, y, methods=["crown-ibp"], bound_fn=ibp_margin_bounds, **FAST)
    other.pop("seconds")
    assert other != res


def test_broken_bounds_raise_soundness_error():
    model, threat, x, y = _setup(eps0=0.5)
    always = lambda m, lo, hi, y, method: torch.full((lo.shape[0], 2), math.inf)
    with pytest.raises(SoundnessError, match=r"example \d+ .*certified by ibp under learned"):
        evaluate_model(model, threat, x, y, methods=["ibp"], bound_fn=always, **FAST)
    res = evaluate_model(model, threat, x, y, methods=["ibp"], bound_fn=always, strict=False, **FAST)
    assert res["soundness_violations"] > 0


def test_uniform_threat_learned_equals_uniform():
    model, _, x, y = _setup()
    res = evaluate_model(model, UniformBudget(0.03), x, y, bound_fn=ibp_margin_bounds, **FAST)
    assert res["verified_err"]["learned"] == res["verified_err"]["uniform"]
    assert res["attack_err"]["learned"] == res["attack_err"]["uniform"]


def test_liu_skipped_and_bad_methods():
    model, threat, x, y = _setup()
    res = evaluate_model(model, threat, x, y, bound_fn=ibp_margin_bounds, **{**FAST, "liu_limit": 0})
    assert res["verified_err"]["liu2019"] is None and res["mean_log_volume_liu2019"] is None
    with pytest.raises(UserError, match="unknown bound method"):
        parse_methods("ibp,foo")
    assert parse_methods("IBP, crown-ibp,ibp") == ("ibp", "crown-ibp")


def test_evaluate_run_writes_files(tmp_path):
    model, threat, x, y = _setup()
    run = Run(run_dir=tmp_path, config=RunConfig(data=DataConfig(name="toy")), classifier=model, threat=threat,
              input_shape=SHAPE)
    res = evaluate_run(run, images=x, labels=y, limit=10, bound_fn=ibp_margin_bounds, **FAST)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == res and saved["n"] == 10 and saved["training"]["kind"] == "learned"
    assert saved["training"]["alpha_lo"] == 0.5 and saved["training"]["alpha_hi"] == 2.0 and saved["dataset"] == "toy"
    assert saved["checkpoint"] == {"file": None, "epoch": None, "step": None}
    rec = np.load(tmp_path / "per_example.npz")
    assert rec["index"].shape == (10,) and "verified_uniform_ibp" in rec and "liu_log_volume" in rec
