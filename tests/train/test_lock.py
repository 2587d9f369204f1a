"""One process per run directory: a second trainer (or reproduce) on a run in use is refused."""
import os

import pytest

from ctxbudget import run as rundir
from ctxbudget.config import load_config
from ctxbudget.errors import UserError
from ctxbudget.train.trainer import resume, train

TINY = ["data.name=mnist-sample", "data.train_limit=40", "data.test_limit=20", "optim.batch_size=20",
        "optim.epochs=1", "num_threads=1"]


def test_a_run_in_use_is_refused_and_free_again_afterwards(tmp_path):
    out = tmp_path / "run"
    cfg = load_config("quickstart", TINY)
    with rundir.exclusive(out):
        with pytest.raises(UserError, match=rf"in use by another ctxbudget process \(pid {os.getpid()}\)"):
            train(cfg, out, progress=False)
        assert not rundir.is_run_dir(out)                     # nothing was written
    train(cfg, out, progress=False)                           # released: trains
    assert (out / rundir.FINAL).is_file()
    with rundir.exclusive(out):
        with pytest.raises(UserError, match="in use"):
            resume(out, progress=False)
    resume(out, progress=False)                               # finished run: nothing to do, no error
