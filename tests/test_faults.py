"""Faults: ``evaluate``, ``export`` and ``reproduce`` killed with SIGKILL at random points and run again
give what an uninterrupted run gives, and nothing half-written is ever read as complete; a write that
fails (disk full: ``OSError(ENOSPC)``) leaves the previous file intact and says so in one line."""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ctxbudget.cli import main

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _kill_at_random(cmd: list[str], times: int, seed: int, check, low: float = 0.5, high: float = 8.0) -> int:
    """Start ``cmd`` ``times`` times, SIGKILL it after a random delay (unless it ends first), call
    ``check()`` after each kill (nothing half-written may look complete). Returns how many were killed."""
    rng = random.Random(seed)
    killed = 0
    for _ in range(times):
        proc = subprocess.Popen([sys.executable, "-m", "ctxbudget", *cmd], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + rng.uniform(low, high)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        check()
    return killed


def _results(folder: Path) -> dict:
    r = json.loads((folder / "results.json").read_text())
    for k in ("seconds", "run_dir"):
        r.pop(k, None)
    return r


def _evaluated_consistently(folder: Path) -> None:
    """results.json, when present, is whole and has its per_example.npz beside it (written first)."""
    if (folder / "results.json").exists():
        n = json.loads((folder / "results.json").read_text())["n"]
        assert len(np.load(folder / "per_example.npz")["index"]) == n


EVAL = ["--limit", "48", "--liu-limit", "6", "--liu-iters", "10", "--attack-steps", "10", "--no-progress", "--device", "cpu"]


def test_evaluate_killed_at_random_points_then_rerun_equals_one_run(tiny_run_dir, tmp_path):
    ref, hit = tmp_path / "ref", tmp_path / "hit"
    shutil.copytree(tiny_run_dir, ref)
    shutil.copytree(tiny_run_dir, hit)
    assert main(["evaluate", str(ref), *EVAL]) == 0
    _kill_at_random(["evaluate", str(hit), *EVAL], times=4, seed=1, check=lambda: _evaluated_consistently(hit))
    assert main(["evaluate", str(hit), *EVAL]) == 0
    assert _results(hit) == _results(ref)
    a, b = np.load(ref / "per_example.npz"), np.load(hit / "per_example.npz")
    assert all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a.files)


def _export_consistent(out: Path) -> None:
    """A manifest, when present, is whole and every file it lists exists with its sha256."""
    import hashlib

    if (out / "manifest.json").exists():
        manifest = json.loads((out / "manifest.json").read_text())
        for ex in manifest["examples"]:
            for kind, name in ex["files"].items():
                assert hashlib.sha256((out / name).read_bytes()).hexdigest() == ex["sha256"][kind]


def test_export_killed_at_random_points_then_rerun_equals_one_export(tiny_run_dir, tmp_path):
    pytest.importorskip("onnx")
    args = ["export", str(tiny_run_dir), "--format", "vnnlib", "--limit", "6", "--budget", "both", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    hit = tmp_path / "hit"
    _kill_at_random([*args, "--out", str(hit)], times=4, seed=2, check=lambda: _export_consistent(hit))
    assert main([*args, "--out", str(hit)]) == 0
    for f in sorted((tmp_path / "ref").rglob("*")):
        if f.is_file() and f.name not in ("abcrown.yaml", "model.onnx"):     # these name their own folder
            got = (hit / f.relative_to(tmp_path / "ref")).read_text()
            assert got.replace(str(hit), "X") == f.read_text().replace(str(tmp_path / "ref"), "X"), f.name


REPRO = ["reproduce", "table1", "--rows", "learned-0.4", "--schedule", "cpu", "--eval-limit", "40", "--liu-limit", "4",
         "--set", "data.train_limit=600", "--set", "data.test_limit=100", "--set", "optim.epochs=4",
         "--set", "schedule.start=2", "--set", "schedule.length=2", "--set", "optim.lr_milestones=[3]",
         "--set", "num_threads=1", "--device", "cpu"]


@pytest.mark.slow   # four interrupted and two whole tiny reproductions (about a minute)
def test_reproduce_killed_at_random_points_then_rerun_equals_one_run(real_root, tmp_path):
    common = [*REPRO, "--data-dir", str(real_root)]
    assert main([*common, "--out", str(tmp_path / "ref")]) == 0
    hit = tmp_path / "hit"
    row = hit / "table1" / "learned-0.4"
    _kill_at_random([*common, "--out", str(hit)], times=5, seed=3, check=lambda: _evaluated_consistently(row),
                    low=2.0, high=20.0)
    assert main([*common, "--out", str(hit)]) == 0
    assert _results(row) == _results(tmp_path / "ref" / "table1" / "learned-0.4")
    ref_md = (tmp_path / "ref" / "table1.md").read_text().replace(str(tmp_path / "ref"), "X")
    assert (hit / "table1.md").read_text().replace(str(hit), "X") == ref_md


# ------------------------------------------------------------------------------ disk full
def _disk_full(monkeypatch, target: str):
    """Every os.replace onto a file named ``target`` fails as a full disk would."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in needles), err
    return err[0]


def test_disk_full_while_evaluating_keeps_the_previous_results(tiny_run_dir, monkeypatch, capsys):
    assert main(["evaluate", str(tiny_run_dir), *EVAL]) == 0
    before = (tiny_run_dir / "results.json").read_bytes()
    capsys.readouterr()
    _disk_full(monkeypatch, "results.json")
    assert main(["evaluate", str(tiny_run_dir), *EVAL[:2], "--liu-limit", "0", "--no-progress"]) == 2
    _one_line(capsys, "results.json", "No space left", "left as it was")
    assert (tiny_run_dir / "results.json").read_bytes() == before
    assert not list(tiny_run_dir.glob(".results.json.*.tmp"))


TINY_TRAIN = ["--set", "data.name=mnist-sample", "--set", "data.train_limit=100", "--set", "data.test_limit=20",
              "--set", "optim.batch_size=50", "--set", "schedule.start=1", "--set", "schedule.length=1",
              "--set", "budget.eps0=0.05", "--set", "num_threads=1", "--no-progress", "--device", "cpu"]


def test_disk_full_while_training_keeps_the_previous_checkpoint(tmp_path, defaults_config, monkeypatch, capsys):
    import torch

    out = tmp_path / "run"
    real, writes = os.replace, []

    def replace(src, dst, *a, **k):                     # the second checkpoint (epoch 2) meets a full disk
        if Path(dst).name == "last.pt":
            writes.append(dst)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["train", "--config", defaults_config, "--out", str(out), "--set", "optim.epochs=2", *TINY_TRAIN]) == 2
    _one_line(capsys, "last.pt", "No space left", "left as it was")
    last = out / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=False)["epoch"] == 1 and not (out / "final.pt").exists()
    assert not list(last.parent.glob(".last.pt.*.tmp"))
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0       # and the run goes on from epoch 1
    assert torch.load(out / "final.pt", weights_only=False)["epoch"] == 2


def test_disk_full_while_caching_an_image_folder_decodes_and_keeps_going(tmp_path, monkeypatch):
    from PIL import Image

    from ctxbudget.data import get_dataset

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(2):
                pixels = np.full((4, 4), 40 * i + (c == "b") * 100, np.uint8)
                Image.fromarray(pixels).save(tmp_path / "imgs" / split / c / f"{i}.png")
    monkeypatch.setenv("CTXBUDGET_CACHE", str(tmp_path / "cache"))
    real = os.replace

    def full(src, dst, *a, **k):
        if str(dst).startswith(str(tmp_path / "cache")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full)
    with pytest.warns(UserWarning, match="cannot write the decoded copy"):
        ds = get_dataset("image-folder", "train", path=str(tmp_path / "imgs"))
    assert len(ds) == 4
    cache = tmp_path / "cache"
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


def test_disk_full_while_registering_keeps_the_registry(tmp_path, defaults_config, monkeypatch, capsys):
    run, reg = tmp_path / "run", tmp_path / "registry"
    assert main(["train", "--config", defaults_config, "--out", str(run), "--set", "optim.epochs=1", *TINY_TRAIN]) == 0
    assert main(["evaluate", str(run), *EVAL[:2], "--liu-limit", "0", "--attack-steps", "2", "--no-progress"]) == 0
    assert main(["models", "register", str(run), "--name", "tiny-a", "--registry", str(reg)]) == 0
    manifest = (reg / "manifest.json").read_bytes()
    capsys.readouterr()
    _disk_full(monkeypatch, "manifest.json")
    assert main(["models", "register", str(run), "--name", "tiny-b", "--registry", str(reg)]) == 2
    _one_line(capsys, "manifest.json", "No space left", "left as it was")
    assert (reg / "manifest.json").read_bytes() == manifest
    assert [p.name.startswith("tiny-a") for p in reg.glob("*.pt")] == [True]    # no orphan weights
    monkeypatch.undo()
    assert main(["models", "list", "--registry", str(reg)]) == 0
    listed = capsys.readouterr().out
    assert "tiny-a" in listed and "tiny-b" not in listed
