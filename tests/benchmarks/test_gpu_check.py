"""benchmarks/gpu_check.sh on a machine without CUDA: the CUDA parts are skipped, the CPU soundness part runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow   # the script's CPU soundness part (up to 5 minutes under its own timeout)
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path of the script")
def test_gpu_check_runs_on_cpu_and_says_what_it_skipped(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "data"), str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "no CUDA device" in report and "skipped" in report
    assert "## soundness-cpu (exit 0" in report and "all bounds sound" in report
    assert "VIOLATION" not in report


def test_gpu_check_needs_a_data_dir():
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert res.returncode != 0 and "usage" in res.stderr
