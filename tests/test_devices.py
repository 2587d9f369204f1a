"""``--device`` on every command that runs a model: the same values as ``train``; a device that does
not exist is one line with exit code 2; ``cpu`` runs there (CUDA is checked by benchmarks/gpu_check.sh)."""
from __future__ import annotations

import pytest
import torch

from ctxbudget.cli import main
from ctxbudget.devices import resolve
from ctxbudget.errors import UserError
from ctxbudget.run import load_run

COMMANDS = {
    "evaluate": ["--limit", "2", "--liu-limit", "0", "--attack-steps", "1", "--no-progress"],
    "visualize": ["--num", "2", "--stats-limit", "4"],
    "certify": ["IMAGE"],
    "export": ["--format", "vnnlib", "--limit", "1", "--out", "OUT"],
}


def _args(command: str, run_dir, tmp_path) -> list[str]:
    import numpy as np
    from PIL import Image

    img = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype("uint8")).save(img)
    extra = [str(img) if a == "IMAGE" else str(tmp_path / "out") if a == "OUT" else a for a in COMMANDS[command]]
    if command == "certify":
        return [command, str(run_dir), *extra, "--out", str(tmp_path / "cert")]
    if command == "visualize":
        return [command, str(run_dir), *extra, "--out", str(tmp_path / "fig")]
    return [command, str(run_dir), *extra]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("device", ["cuda:9", "tpu"])
def test_a_device_that_does_not_exist_is_one_line(command, device, tiny_run_dir, tmp_path, capsys):
    if device.startswith("cuda") and torch.cuda.device_count() > 9:
        pytest.skip("this machine has a tenth GPU")
    assert main(_args(command, tiny_run_dir, tmp_path) + ["--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and device in err[0], err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_runs_on_the_cpu_when_told(command, tiny_run_dir, tmp_path):
    assert main(_args(command, tiny_run_dir, tmp_path) + ["--device", "cpu"]) == 0


def test_auto_is_cuda_when_available_else_cpu():
    assert resolve("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="does not exist|not available"):
        resolve("cuda:99")


def test_a_run_loaded_on_a_device_computes_there_and_answers_on_the_callers(tiny_run_dir):
    run = load_run(tiny_run_dir, device="cpu")
    x = torch.rand(3, 1, 28, 28)
    assert run.device == torch.device("cpu")
    assert run.budgets(x).device == x.device and run.predict(x).shape == (3,)
