"""Fixtures shared by every test folder: the real MNIST when it is available (never downloaded),
and a tiny untrained run directory for the export and certify tests.

Slow tests: one switch. A test that takes more than a few seconds (builds and installs a wheel, trains
end to end in subprocesses or over several runs, runs the CPU part of benchmarks/gpu_check.sh, checks full
CROWN on every golden sample) carries ``@pytest.mark.slow`` and nothing else. The marker is the label,
``CTXBUDGET_SLOW_TESTS=1`` is the switch:

- without ``CTXBUDGET_SLOW_TESTS=1`` every test marked slow is skipped (``pytest_collection_modifyitems``
  below), so ``pytest`` and ``pytest -m "not slow"`` run the same tests (the latter deselects instead of skipping);
- with ``CTXBUDGET_SLOW_TESTS=1`` (as in CI) they run; ``-m slow`` then runs only them.

No test reads ``CTXBUDGET_SLOW_TESTS`` itself: mark it slow instead."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
SLOW_TESTS = os.environ.get("CTXBUDGET_SLOW_TESTS") == "1"
MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shuffle", type=int, default=None, metavar="SEED",
                     help="run the tests in an order shuffled with SEED (no test may depend on another's state)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked slow unless ``CTXBUDGET_SLOW_TESTS=1`` (see the module docstring);
    ``--shuffle SEED`` shuffles the order."""
    seed = config.getoption("--shuffle")
    if seed is not None:
        import random

        random.Random(seed).shuffle(items)
    if SLOW_TESTS:
        return
    skip = pytest.mark.skip(reason="slow: set CTXBUDGET_SLOW_TESTS=1 to run it")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


def torch_global_state() -> dict:
    """The process-wide torch settings a test could leave changed."""
    import torch

    return {"num_threads": torch.get_num_threads(), "default_dtype": torch.get_default_dtype(),
            "grad_enabled": torch.is_grad_enabled(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled()}


@pytest.fixture(autouse=True)
def _restore_torch_global_state():
    """Every test leaves torch's thread count, default dtype, grad mode and determinism flags, and
    ctxbudget's fused-ReLU switch, as it found them (training in-process sets ``num_threads`` and
    ``fused_relu`` from its config): a test's outcome must not
    depend on the tests before it (``pytest --shuffle SEED`` runs them in another order)."""
    import torch

    from ctxbudget.bounds import relu

    before = torch_global_state()
    fused = relu.fused_relu()
    yield
    relu.set_fused_relu(fused)                 # training in-process sets it from its config
    torch.set_num_threads(before["num_threads"])
    torch.set_default_dtype(before["default_dtype"])
    torch.set_grad_enabled(before["grad_enabled"])
    torch.use_deterministic_algorithms(before["deterministic"], warn_only=before["deterministic_warn_only"])


@pytest.fixture
def one_thread():
    """One intra-op thread for this test (small networks: no OpenMP overhead, no contention on a
    loaded 2-core machine); the thread count is given back afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def find_real_data_root() -> Optional[Path]:
    """A data root holding the full MNIST: ``$CTXBUDGET_DATA`` or ``<repo>/../shared/data``."""
    candidates = []
    if os.environ.get("CTXBUDGET_DATA"):
        candidates.append(Path(os.environ["CTXBUDGET_DATA"]).expanduser())
    candidates.append(REPO.parent / "shared" / "data")
    for root in candidates:
        folder = root / "mnist"
        if all((folder / n).is_file() or (folder / (n + ".gz")).is_file() for n in MNIST_NAMES):
            return root
    return None


@pytest.fixture(scope="session")
def real_root() -> Path:
    root = find_real_data_root()
    if root is None:
        pytest.skip("full MNIST not found (set CTXBUDGET_DATA to a folder containing mnist/, "
                    "or place it at <repo>/../shared/data/mnist)")
    return root



def write_untrained_run(out: Path, eps0: float) -> Path:
    """An untrained learned-budget run on mnist-sample (DM-small, α = 0.5 / 2.0) written with ctxbudget.run."""
    import torch

    from ctxbudget.config import config_from_dict
    from ctxbudget.data import get_info
    from ctxbudget.run import FINAL, Checkpoint, build_models, write_config

    torch.manual_seed(0)
    cfg = config_from_dict({"data": {"name": "mnist-sample"}, "model": {"name": "dm-small"},
                            "budget": {"kind": "learned", "eps0": eps0, "alpha_lo": 0.5, "alpha_hi": 2.0}})
    info = get_info("mnist-sample")
    classifier, threat = build_models(cfg, info.input_shape, info.num_classes, info.mean, info.std)
    out.mkdir(parents=True)
    write_config(out, cfg)
    # untrained: no epoch or step (evaluation reports them as unknown)
    Checkpoint(classifier=classifier.state_dict(), generator=threat.generator.state_dict(),
               config=cfg.to_dict()).save(out / FINAL)
    return out


@pytest.fixture(scope="session")
def defaults_config(tmp_path_factory) -> str:
    """A config file holding no key (every setting at its default): ``train`` needs ``--config``."""
    path = tmp_path_factory.mktemp("configs") / "defaults.yaml"
    path.write_text("{}\n")
    return str(path)


@pytest.fixture
def untrained_run():
    """``untrained_run(out, eps0)``: write an untrained learned-budget run (see ``write_untrained_run``)."""
    return write_untrained_run


@pytest.fixture
def tiny_run_dir(tmp_path):
    """An untrained learned-budget run on mnist-sample (DM-small, ε0 = 0.3) written with ctxbudget.run."""
    return write_untrained_run(tmp_path / "run", 0.3)


@pytest.fixture
def interrupt_at_epoch(monkeypatch):
    """``with interrupt_at_epoch(E): train(...)`` — the trainer raises KeyboardInterrupt (as Ctrl-C
    would) when it starts epoch E; the block must be interrupted, and the trainer is restored after it."""
    from contextlib import contextmanager

    from ctxbudget.train.trainer import Trainer

    @contextmanager
    def interrupted_at(epoch: int):
        original = Trainer.train_epoch

        def train_epoch(self, e):
            if e == epoch:
                raise KeyboardInterrupt
            return original(self, e)

        monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(Trainer, "train_epoch", original)

    return interrupted_at

