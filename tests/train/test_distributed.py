"""DDP equivalence on CPU (gloo): 2 processes × batch B/2 give the parameters of 1 process × batch B."""
import json
import os
import subprocess
import sys

import pytest
import torch

SETTINGS = ["--set", "data.train_limit=120", "--set", "data.test_limit=60", "--set", "optim.batch_size=40",
            "--set", "optim.epochs=3", "--set", "schedule.start=2", "--set", "schedule.length=1",
            "--set", "num_threads=1", "--set", "budget.eps0=0.2", "--no-progress", "--device", "cpu",
            # float32 generator: bf16 rounds the per-rank weight gradients before they are averaged,
            # so 2 ranks and 1 process would agree only to bf16 precision (~1e-2 after Adam)
            "--set", "budget.generator_precision=float32"]


def _weights(path):
    state = torch.load(path, weights_only=False)
    parts = [state["classifier"]] + ([state["generator"]] if state["generator"] else [])
    return torch.cat([v.flatten().double() for part in parts for v in part.values()])


def _run(args, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, **kw)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow   # five training subprocesses, two of them under torchrun
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
@pytest.mark.parametrize("kind", ["learned", "uniform"])
def test_two_ranks_match_one_process(tmp_path, kind, defaults_config):
    # the uniform case also covers augmentation (drawn for the global batch, then split by rank)
    extra = ["--set", "data.augment=true"] if kind == "uniform" else []
    base = [sys.executable, "-m", "ctxbudget", "train", "--config", defaults_config, "--set", f"budget.kind={kind}"
            ] + extra + SETTINGS
    _run(base + ["--out", str(tmp_path / "one")])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "ctxbudget", "train"]
    torchrun = launcher + ["--config", defaults_config, "--set", f"budget.kind={kind}"] + extra + SETTINGS
    proc = _run(torchrun + ["--out", str(tmp_path / "two")])
    assert "world size 2" in (tmp_path / "two" / "train.log").read_text()
    assert proc.stdout.count("run written to") == 1          # only rank 0 writes and prints
    one, two = _weights(tmp_path / "one" / "final.pt"), _weights(tmp_path / "two" / "final.pt")
    diff = (one - two).abs()
    # Adam turns float rounding noise in near-zero gradients into steps of size ~lr (5e-4), so a
    # handful of weights may differ by a few lr steps; all others agree to float precision.
    assert diff.max() < 2e-3, diff.max()
    assert (diff > 1e-5).double().mean() < 1e-4, int((diff > 1e-5).sum())
    # metrics agree too (errors are reduced over ranks)
    log1 = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    log2 = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(log1) == len(log2) == 6
    for a, b in zip(map(json.loads, log1), map(json.loads, log2)):
        assert a["clean_err"] == pytest.approx(b["clean_err"]) and a["verified_err"] == pytest.approx(b["verified_err"])
    if kind == "uniform":
        return
    # the comparison is discriminating: another seed changes most weights by far more
    _run(base + ["--out", str(tmp_path / "seed1"), "--set", "seed=1"])
    other = (one - _weights(tmp_path / "seed1" / "final.pt")).abs()
    assert other.max() > 1e-2 and (other > 1e-5).double().mean() > 0.5
    # resume under torchrun works the same way
    _run(launcher + ["--resume", str(tmp_path / "two"), "--set", "optim.epochs=4", "--no-progress", "--device", "cpu"])
    assert torch.load(tmp_path / "two" / "final.pt", weights_only=False)["epoch"] == 4


_EXIT_SCRIPT = """
import atexit, sys
from ctxbudget.train.distributed import exit_rank
atexit.register(lambda: print("finalised"))
sys.stdout.write("written, no newline")
exit_rank(3)
"""


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_exit_rank_skips_finalisation_only_under_torchrun(world_size):
    # a torchrun rank leaves with os._exit after flushing (gloo's threads can abort a rank during
    # the interpreter's finalisation); a plain process exits normally, atexit handlers included
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["WORLD_SIZE"] = world_size
    proc = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("written, no newline")
    assert ("finalised" in proc.stdout) == (world_size == "1")
