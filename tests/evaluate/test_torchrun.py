"""``torchrun --nproc-per-node 2 -m ctxbudget evaluate RUN`` (CPU, gloo) writes the results of one
process, example by example (evaluate/ranks.py)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctxbudget.cli import main

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--limit", "21", "--batch-size", "4", "--liu-limit", "7", "--liu-iters", "5", "--attack-steps", "4",
        "--bounds", "ibp,crown-ibp,alpha-crown", "--no-progress", "--device", "cpu"]


def test_two_gloo_ranks_write_what_one_process_writes(trained_run, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(trained_run, one)
    shutil.copytree(trained_run, two)
    assert main(["evaluate", str(one)] + ARGS) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with socket.socket() as sock:                                # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "ctxbudget", "evaluate", str(two)] + ARGS
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1                      # rank 0 alone prints and writes
    a, b = np.load(one / "per_example.npz"), np.load(two / "per_example.npz")
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f"), name
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (one, two))
    for r in (ra, rb):
        r.pop("seconds")
        r.pop("run_dir")
    assert ra == rb
    assert ra["n_liu2019"] == 7 and 0 < ra["verified_err"]["learned"] < 1 and ra["clean_err"] < 0.5


@pytest.mark.parametrize("device", ["cuda:7", "tpu"])
def test_a_device_that_does_not_exist_is_one_line(trained_run, device, capsys):
    assert main(["evaluate", str(trained_run), "--device", device, "--limit", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and device in err[0]
