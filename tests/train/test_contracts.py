"""The typed contracts between objective, trainer, metrics file and checkpoints."""
from dataclasses import fields

import pytest
import torch

from ctxbudget.errors import UserError
from ctxbudget.run import Checkpoint, atomic_torch_save
from ctxbudget.train.metrics import EpochRow
from ctxbudget.train.objective import StepSums


def _sums(*values):
    return StepSums(*(torch.tensor(float(v)) for v in values))


def test_step_sums_add_and_pack_in_field_order():
    a, b = _sums(1, 2, 3, 4, 5, 6, 7), _sums(10, 20, 30, 40, 50, 60, 70)
    total = a + b
    packed = total.to_tensor("cpu")
    assert packed.dtype == torch.float64 and packed.tolist() == [11, 22, 33, 44, 55, 66, 77]
    assert [f.name for f in fields(StepSums)] == ["n", "clean_wrong", "verified_wrong", "loss", "robust",
                                                  "eps_sum", "eps_n"]
    back = StepSums.from_tensor(packed)
    assert float(back.n) == 11 and float(back.eps_n) == 77 and float(back.robust) == 55


def test_metrics_rows_keep_the_jsonl_keys_and_order():
    common = dict(step=4, eps0=0.1, loss=0.5, clean_err=0.1, verified_err=0.2, mean_eps=0.1, min_eps=0.05,
                  max_eps=0.2, seconds=1.5)
    train = EpochRow(epoch=1, split="train", robust_loss=0.7, lr=1e-3, kappa=0.5, beta=1.0, **common).to_json()
    assert list(train) == ["epoch", "split", "step", "eps0", "loss", "robust_loss", "clean_err", "verified_err",
                           "mean_eps", "min_eps", "max_eps", "lr", "kappa", "beta", "seconds"]
    test = EpochRow(epoch=1, split="test", method="ibp", **common).to_json()
    assert list(test) == ["epoch", "split", "step", "eps0", "loss", "clean_err", "verified_err", "mean_eps",
                          "min_eps", "max_eps", "method", "seconds"]
    ctx = {"input_dependent_share": 0.3, "ratio_object_background": 1.2}
    test = EpochRow(epoch=1, split="test", method="ibp", contextuality=ctx, **common).to_json()
    assert list(test)[-4:] == ["method", "input_dependent_share", "ratio_object_background", "seconds"]
    assert test["ratio_object_background"] == 1.2 and test["seconds"] == 1.5


def _last(**kw):
    return Checkpoint(classifier={"w": torch.ones(2)}, generator=None, optimizer={"state": {}}, epoch=3, step=30,
                      best=0.25, config={"seed": 0}, torch_rng=torch.get_rng_state(), **kw)


def test_checkpoint_writes_the_format_1_keys(tmp_path):
    _last().save(tmp_path / "last.pt")
    raw = torch.load(tmp_path / "last.pt", weights_only=False)
    assert list(raw) == ["classifier", "generator", "optimizer", "epoch", "step", "best", "config", "torch_rng",
                         "format"]
    final = Checkpoint(classifier={"w": torch.ones(2)}, generator={"g": torch.zeros(1)}, epoch=3, step=30,
                       config={"seed": 0})
    final.save(tmp_path / "final.pt")
    raw = torch.load(tmp_path / "final.pt", weights_only=False)
    assert list(raw) == ["classifier", "generator", "epoch", "step", "config", "format"] and raw["format"] == 1


def test_checkpoint_reads_files_written_as_plain_dicts(tmp_path):
    """Checkpoints written before the dataclass (plain dicts) load unchanged."""
    rng = torch.get_rng_state()
    atomic_torch_save({"classifier": {"w": torch.ones(2)}, "generator": None, "optimizer": {"state": {}},
                       "epoch": 3, "step": 30, "best": float("inf"), "config": {"seed": 0}, "torch_rng": rng,
                       "format": 1}, tmp_path / "old.pt")
    ck = Checkpoint.load(tmp_path / "old.pt")
    assert ck.epoch == 3 and ck.step == 30 and ck.best == float("inf") and torch.equal(ck.torch_rng, rng)
    atomic_torch_save({"classifier": {"w": torch.ones(2)}}, tmp_path / "bare.pt")     # weights only
    bare = Checkpoint.load(tmp_path / "bare.pt")
    assert bare.generator is None and bare.epoch is None and bare.optimizer is None
    atomic_torch_save({"generator": None}, tmp_path / "none.pt")
    with pytest.raises(UserError, match="no classifier"):
        Checkpoint.load(tmp_path / "none.pt")


def test_load_run_exposes_the_typed_config_and_input_shape(tiny_run_dir):
    from ctxbudget.config import RunConfig
    from ctxbudget.run import load_run

    run = load_run(tiny_run_dir)
    assert isinstance(run.config, RunConfig) and run.config.budget.eps0 == pytest.approx(0.3)
    assert run.config_dict == run.config.to_dict() and run.config_dict["data"]["name"] == "mnist-sample"
    assert run.dataset == "mnist-sample" and run.data_root is None and run.input_shape == (1, 28, 28)
    assert run.meta["checkpoint"].endswith("final.pt") and "epoch" not in run.meta
