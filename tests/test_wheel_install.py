"""From a built wheel to a certificate, outside the repository (the README's first commands).

Builds the wheel from a copy of the sources, installs it with ``--no-deps`` into a fresh venv that
reuses this interpreter's site-packages for torch & co. (no download; the test environment's own
ctxbudget is not visible there: only plain paths of that folder are added, not its ``.pth`` hooks),
and runs ``configs``, a one-epoch quick start, ``evaluate``, ``visualize``, ``report``, ``export``
and ``certify`` from a directory outside the repository, then lists the pretrained models the wheel
ships and certifies with one of them (no training, no data). Slow (about a minute): runs with ``CTXBUDGET_SLOW_TESTS=1``
(as in CI).
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow   # builds and installs a wheel (about a minute)


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_wheel_quickstart_outside_the_repository(tmp_path):
    src = tmp_path / "src-copy"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CTXBUDGET_MODELS")}
    env["OMP_NUM_THREADS"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
         tmp_path, env)
    wheel = next(dist.glob("ctxbudget-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ctxbudget/configs/quickstart.yaml" in names and "ctxbudget/py.typed" in names
    assert "ctxbudget/data/mnist_sample.npz" in names
    assert "ctxbudget/pretrained/manifest.json" in names
    assert any(n.startswith("ctxbudget/pretrained/quickstart-learned-") and n.endswith(".pt") for n in names)
    assert not any(n.startswith(("tests/", "configs/")) for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "reuse_test_env.pth").write_text("".join(p + "\n" for p in sorted(deps)))
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)], tmp_path, env)

    work = tmp_path / "user"                       # outside the repository: no configs/ folder here
    work.mkdir()
    where = _run([str(py), "-c", "import ctxbudget; print(ctxbudget.__file__)"], work, env)
    assert where.startswith(str(site)), where      # the wheel's copy, not the source tree
    exe = str(env_dir / "bin" / "ctxbudget")
    assert "quickstart" in _run([exe, "configs"], work, env)
    _run([exe, "train", "--config", "quickstart", "--out", "runs/quick", "--no-progress",
          "--set", "optim.epochs=1", "--set", "data.test_limit=200"], work, env)
    assert (work / "runs/quick/final.pt").is_file()
    _run([exe, "evaluate", "runs/quick", "--limit", "50", "--liu-limit", "2", "--liu-iters", "5"], work, env)
    assert (work / "runs/quick/results.json").is_file()
    _run([exe, "visualize", "runs/quick"], work, env)
    _run([exe, "report", "runs/quick", "--out", "table.md"], work, env)
    assert (work / "table.md").read_text().count("|") > 10
    if importlib.util.find_spec("onnx") is not None:  # the [export] extra (installed by make test)
        _run([exe, "export", "runs/quick", "--format", "vnnlib", "--limit", "2", "--budget", "both", "--out", "export"],
             work, env)
        assert len(list((work / "export/vnnlib").glob("*.vnnlib"))) == 4
    _run([str(py), "-c", "import numpy as np, ctxbudget.data as d; "
          "np.save('digit.npy', d.get_dataset('mnist-sample', 'test').images[0, 0].numpy())"], work, env)
    out = _run([exe, "certify", "runs/quick", "digit.npy", "--out", "maps"], work, env)
    assert "prediction" in out and (work / "maps/digit-budgets.png").is_file()

    listed = _run([exe, "models", "list"], work, env)             # the registry inside the installed wheel
    for name in ("quickstart-learned", "quickstart-uniform"):
        assert name in listed
    assert str(site) in listed
    out = _run([exe, "certify", "quickstart-learned", "digit.npy", "--out", "pretrained-maps"], work, env)
    assert "CERTIFIED" in out and (work / "pretrained-maps/digit-budgets.png").is_file()
