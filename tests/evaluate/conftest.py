"""Evaluation tests run on tiny models: one intra-op thread avoids oversubscription on small CPUs.
``trained_run``: a run trained for a few seconds on mnist-sample (a mix of verdicts to compare)."""
import pytest

from ctxbudget.cli import main

# natural training for 2 epochs, then ε0 ramps to 0.05 over 3: about 10 % clean and 20-30 % verified error
TRAIN = ["data.name=mnist-sample", "data.train_limit=1000", "data.test_limit=40", "optim.batch_size=50",
         "optim.epochs=6", "schedule.start=3", "schedule.length=3", "model.name=dm-small", "num_threads=1",
         "budget.eps0=0.05", "optim.lr=0.002"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread (the root conftest's ``one_thread``)."""


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, defaults_config):
    """A learned-budget run (DM-small, ε0 = 0.05) trained for 6 short epochs; do not write into it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    sets = sum((["--set", s] for s in TRAIN), [])
    assert main(["train", "--config", defaults_config, "--out", str(out), "--no-progress", "--device", "cpu"] + sets) == 0
    return out
