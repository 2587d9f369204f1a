"""Pretrained models by name: the final-weights file, registering, the registry's checks, every
command on a model name, and the packaged registry (the quick-start models, the size budget).

A tiny run (DM-small, 80 training images, 2 epochs) is trained, evaluated and visualized once per
module and registered into a registry in a temporary folder (``$CTXBUDGET_MODELS``)."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import ctxbudget
from ctxbudget.cli import main
from ctxbudget.config import load_config
from ctxbudget.errors import RegistryError
from ctxbudget.final_weights import FINAL_WEIGHTS, FINAL_WEIGHTS_INFO
from ctxbudget.registry import MODELS_ENV, SIZE_BUDGET, Registry, get_model, load_model, packaged_root, read_weights, register_run
from ctxbudget.run import Checkpoint
from ctxbudget.train.trainer import train

TINY = ["data.name=mnist-sample", "data.train_limit=80", "data.test_limit=40", "optim.batch_size=40",
        "optim.epochs=2", "schedule.start=2", "schedule.length=1", "model.name=dm-small", "num_threads=1",
        "budget.eps0=0.1"]
NAME = "tiny-learned"


def _sets(items):
    return sum((["--set", s] for s in items), [])


def _one_line(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One thread (the root conftest's ``one_thread``)."""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, defaults_config):
    """A finished, evaluated and visualized tiny learned-budget run."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--config", defaults_config, "--out", str(out), "--no-progress", "--device", "cpu"]
                + _sets(TINY)) == 0
    assert main(["evaluate", str(out), "--limit", "8", "--liu-limit", "2", "--liu-iters", "3", "--attack-steps", "2",
                 "--no-progress"]) == 0
    assert main(["visualize", str(out), "--num", "2", "--stats-limit", "8"]) == 0
    return out


@pytest.fixture
def registry(finished_run, tmp_path, monkeypatch):
    """A registry in a temporary folder ($CTXBUDGET_MODELS) holding the tiny run as ``tiny-learned``."""
    root = tmp_path / "registry"
    monkeypatch.setenv(MODELS_ENV, str(root))
    register_run(finished_run, NAME, description="tiny test model")
    return root


# ------------------------------------------------------------------------------- the final-weights file
def test_train_writes_a_registrable_final_weights_file(finished_run):
    data = (finished_run / FINAL_WEIGHTS).read_bytes()
    info = json.loads((finished_run / FINAL_WEIGHTS_INFO).read_text())
    assert info["sha256"] == hashlib.sha256(data).hexdigest() and info["size"] == len(data)
    assert info["epoch"] == 2 and info["dtype"] == "float32"
    payload = torch.load(finished_run / FINAL_WEIGHTS, weights_only=True)       # plain tensors, no pickled objects
    assert "optimizer" not in payload and payload["epoch"] == 2
    final = Checkpoint.load(finished_run / "final.pt")
    for key in ("classifier", "generator"):
        assert payload[key].keys() == getattr(final, key).keys()
        for name, t in payload[key].items():
            assert (t.dtype == torch.float32) == t.is_floating_point()
            assert torch.equal(t, getattr(final, key)[name].float())


# ----------------------------------------------------------------------------------- register, list, show
def test_register_copies_weights_config_results_and_stats(registry, finished_run):
    entry = get_model(NAME)
    assert entry.stored and entry.source["weights_from"] == FINAL_WEIGHTS
    assert entry.weights["sha256"] == json.loads((finished_run / FINAL_WEIGHTS_INFO).read_text())["sha256"]
    assert entry.weights_path.read_bytes() == (finished_run / FINAL_WEIGHTS).read_bytes()
    assert entry.config == yaml.safe_load((finished_run / "config.yaml").read_text())
    results = json.loads((finished_run / "results.json").read_text())
    assert {**entry.results, "run_dir": None} == {**results, "run_dir": None}
    # the manifest records no absolute path of this machine (the run lies outside the working directory)
    assert entry.results["run_dir"] == entry.source["run_dir"] == Path(*finished_run.parts[-3:]).as_posix()
    assert entry.budget_stats == json.loads((finished_run / "figures" / "budget_stats.json").read_text())
    assert entry.dataset == "mnist-sample" and entry.head == "context" and entry.epoch == 2
    assert entry.command.startswith("ctxbudget train --config ") and "optim.epochs=2" in entry.command
    assert sorted(p.name for p in registry.iterdir()) == sorted(["manifest.json", entry.weights["file"]])


def test_register_falls_back_to_final_pt_then_last_checkpoint(finished_run, tmp_path):
    """Runs finished before final_weights.pt existed: the same bytes are extracted from their checkpoints."""
    old = tmp_path / "old-run"
    shutil.copytree(finished_run, old)
    (old / FINAL_WEIGHTS).unlink()
    (old / FINAL_WEIGHTS_INFO).unlink()
    want = json.loads((finished_run / FINAL_WEIGHTS_INFO).read_text())["sha256"]
    a = register_run(old, "from-final", root=tmp_path / "reg")
    assert a.source["weights_from"] == "final.pt" and a.weights["sha256"] == want
    (old / "final.pt").unlink()
    b = register_run(old, "from-last", root=tmp_path / "reg")
    assert b.source["weights_from"] == "checkpoints/last.pt" and b.weights["sha256"] == want
    assert a.weights_path.read_bytes() == b.weights_path.read_bytes() == (finished_run / FINAL_WEIGHTS).read_bytes()
    (old / "checkpoints" / "last.pt").unlink()
    with pytest.raises(RegistryError, match="not finished: it holds no final weights"):
        register_run(old, "nothing", root=tmp_path / "reg")


def test_models_list_and_show(registry, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    for column in ("name", "data set", "ε0", "budgets", "head", "clean %", "verified %", "size", "stored"):
        assert column in header
    entry = get_model(NAME)
    for cell in (NAME, "mnist-sample", "0.1", "learned", "context", f"{100 * entry.clean_err:.2f}",
                 f"{100 * entry.verified_err:.2f}", "MB", "yes"):
        assert cell in row, (cell, row)
    assert main(["models", "show", NAME]) == 0
    out = capsys.readouterr().out
    for needle in (entry.weights["sha256"], "file verified", entry.command, "tiny test model", "mnist-sample",
                   "eps0: 0.1"):
        assert needle in out, needle
    assert main(["models", "show", NAME, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"]["sha256"] == entry.weights["sha256"]


# ------------------------------------------------------------------------------------ refusals, one line
def test_register_refuses_an_unfinished_run(tmp_path, interrupt_at_epoch, capsys, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "reg"))
    run = tmp_path / "cut"
    with interrupt_at_epoch(2):
        train(load_config(None, TINY), run, device="cpu", progress=False)
    assert main(["models", "register", str(run), "--name", "cut"]) == 2
    _one_line(capsys, "no results.json", "ctxbudget evaluate")
    assert main(["evaluate", str(run), "--limit", "4", "--liu-limit", "0", "--attack-steps", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["models", "register", str(run), "--name", "cut"]) == 2
    _one_line(capsys, "not finished", "epoch 1 of 2", "--resume")
    assert not (tmp_path / "reg").exists()


def test_register_refuses_stale_results_taken_names_and_bad_names(registry, finished_run, tmp_path, capsys):
    stale = tmp_path / "stale"
    shutil.copytree(finished_run, stale)
    results = json.loads((stale / "results.json").read_text())
    results["checkpoint"]["epoch"] = 1
    (stale / "results.json").write_text(json.dumps(results))
    assert main(["models", "register", str(stale), "--name", "stale"]) == 2
    _one_line(capsys, "evaluates epoch 1", "epoch 2")
    assert main(["models", "register", str(finished_run), "--name", NAME]) == 2
    _one_line(capsys, "already registered", "--replace")
    assert main(["models", "register", str(finished_run), "--name", "Bad/Name"]) == 2
    _one_line(capsys, "model name")
    assert main(["models", "register", str(tmp_path), "--name", "x"]) == 2
    _one_line(capsys, "not a run directory")


def test_replace_keeps_one_file_per_model(registry, finished_run):
    before = get_model(NAME).weights["file"]
    entry = register_run(finished_run, NAME, description="again", replace=True)
    assert entry.description == "again" and entry.weights["file"] == before
    assert len(list(registry.glob("*.pt"))) == 1


@pytest.mark.parametrize("damage,needle", [
    (lambda b: b[:-100], "truncated"),
    (lambda b: b[:500] + bytes([b[500] ^ 1]) + b[501:], "sha256"),
])
def test_damaged_weights_are_one_clear_line(registry, capsys, tmp_path, damage, needle):
    path = get_model(NAME).weights_path
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=needle):              # the API: a ValueError (RegistryError)
        ctxbudget.load_run(NAME)
    np_digit = tmp_path / "d.npy"
    np.save(np_digit, np.zeros((28, 28), np.float32))
    assert main(["certify", NAME, str(np_digit), "--out", str(tmp_path / "maps")]) == 2
    _one_line(capsys, needle, NAME)
    assert main(["models", "show", NAME]) == 2
    _one_line(capsys, needle)


def test_missing_weights_file_and_unknown_names(registry, capsys):
    assert main(["evaluate", "no-such-model"]) == 2
    _one_line(capsys, "no run directory or registered model named no-such-model", "ctxbudget models list")
    with pytest.raises(ValueError, match="no run directory or registered model named nope"):
        ctxbudget.load_run("nope")
    assert main(["models", "show", "nope"]) == 2
    _one_line(capsys, "no registered model named nope", NAME)
    get_model(NAME).weights_path.unlink()
    assert main(["export", NAME, "--format", "torchscript", "--out", "x"]) == 2
    _one_line(capsys, "missing")


def test_not_stored_models_are_listed_with_how_to_train_them(finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "reg"))
    assert main(["models", "register", str(finished_run), "--name", "big", "--not-stored",
                 "--command", "ctxbudget train --config mnist-learned-0.4"]) == 0
    assert [p.name for p in (tmp_path / "reg").iterdir()] == ["manifest.json"]
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.startswith("big") and row.rstrip().endswith("no")
    assert main(["certify", "big", "x.npy"]) == 2
    _one_line(capsys, "not stored", "ctxbudget train --config mnist-learned-0.4")
    assert main(["report", "big"]) == 0                        # the committed results need no weights


# ------------------------------------------------------------------------------ every command on a name
def test_load_run_by_name_gives_the_trained_model(registry, finished_run):
    by_name, by_dir = ctxbudget.load_run(NAME), ctxbudget.load_run(finished_run)
    assert by_name.model == NAME and by_dir.model is None and by_name.run_dir == registry
    assert by_name.config.data.root is None and by_name.meta["epoch"] == 2
    assert by_name.output_dir == Path("runs") / NAME and by_name.metrics() == []
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(by_name.classifier(x), by_dir.classifier(x))
    assert torch.equal(by_name.budgets(x), by_dir.budgets(x))
    assert load_model(NAME, root=registry).eps0 == by_dir.eps0 == 0.1


def test_every_command_takes_a_model_name_and_never_writes_the_registry(registry, tmp_path, monkeypatch, capsys):
    before = _digest(registry)
    work = tmp_path / "user"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("CTXBUDGET_DATA", str(tmp_path / "no-data"))   # the packaged sample needs no data root
    assert main(["evaluate", NAME, "--limit", "6", "--liu-limit", "0", "--attack-steps", "2", "--no-progress"]) == 0
    results = json.loads((work / "runs" / NAME / "results.json").read_text())
    assert results["model"] == NAME and results["n"] == 6 and (work / "runs" / NAME / "per_example.npz").is_file()
    assert main(["evaluate", NAME, "--limit", "4", "--liu-limit", "0", "--attack-steps", "0", "--no-progress",
                 "--out", "elsewhere"]) == 0
    assert json.loads((work / "elsewhere" / "results.json").read_text())["n"] == 4
    assert main(["visualize", NAME, "--num", "2", "--stats-limit", "4"]) == 0
    assert (work / "runs" / NAME / "figures" / "budget_maps.png").is_file()
    assert (work / "runs" / NAME / "figures" / "budget_stats.json").is_file()
    np.save(work / "digit.npy", np.zeros((28, 28), np.float32))
    capsys.readouterr()
    assert main(["certify", NAME, "digit.npy", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == NAME and (work / "certify-maps" / "digit-budgets.png").is_file()
    assert main(["export", NAME, "--format", "torchscript", "--out", "exp"]) == 0
    assert (work / "exp" / "model.pt").is_file()
    assert main(["report", NAME, f"runs/{NAME}", "--out", "table.md"]) == 0
    table = (work / "table.md").read_text()
    assert table.count(NAME) >= 3 and "| 8 (Liu et al.: first 2) |" in table and "| 6 |" in table
    capsys.readouterr()
    assert main(["visualize", NAME, "--out", str(registry / "figures")]) == 2
    _one_line(capsys, "never written")
    assert _digest(registry) == before


def test_a_run_directory_wins_over_a_name(registry, finished_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(finished_run, tmp_path / NAME)
    assert ctxbudget.load_run(NAME).model is None
    (tmp_path / "runs").mkdir()
    shutil.copytree(finished_run, tmp_path / "runs" / NAME)       # runs/NAME is a training run of its own
    shutil.rmtree(tmp_path / NAME)
    assert main(["evaluate", NAME, "--limit", "4", "--liu-limit", "0", "--no-progress"]) == 2
    _one_line(capsys, "holds a training run", "--out")


# ----------------------------------------------------------------------------- the packaged registry
QUICKSTART = ("quickstart-learned", "quickstart-uniform")


def test_packaged_registry_fits_the_size_budget_and_verifies(monkeypatch):
    monkeypatch.delenv(MODELS_ENV, raising=False)
    reg = Registry.load()
    assert reg.root == packaged_root()
    files = sorted(p.name for p in reg.root.glob("*.pt"))
    stored = [m for m in reg.models if m.stored]
    assert files == sorted(m.weights["file"] for m in stored)       # no stray or missing files
    total = sum(p.stat().st_size for p in reg.root.glob("*.pt"))
    assert total == reg.stored_bytes() <= SIZE_BUDGET, f"{total / 1e6:.1f} MB of weights (budget {SIZE_BUDGET / 1e6} MB)"
    for m in stored:
        read_weights(m)                                              # size and sha256 as the manifest says
        assert m.results and m.config and m.command.startswith("ctxbudget ")
    for m in reg.models:                                             # no path of the machine that registered it
        paths = [m.config["data"]["root"], m.results.get("run_dir"), m.source.get("run_dir")]
        assert not any(p and Path(p).is_absolute() for p in paths), (m.name, paths)
    assert set(QUICKSTART) <= {m.name for m in stored}


def test_packaged_quickstart_models_certify_without_data(monkeypatch, tmp_path, capsys):
    from ctxbudget.data import get_dataset

    monkeypatch.delenv(MODELS_ENV, raising=False)
    monkeypatch.setenv("CTXBUDGET_DATA", str(tmp_path / "no-data"))
    digit = get_dataset("mnist-sample", "test").images[0, 0].numpy()
    np.save(tmp_path / "digit.npy", digit)
    for name in QUICKSTART:
        entry = get_model(name)
        assert entry.dataset == "mnist-sample" and entry.eps0 == 0.3 and entry.epoch == 16
        assert main(["certify", name, str(tmp_path / "digit.npy"), "--out", str(tmp_path / "maps"), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["images"][0]["prediction"] == int(get_dataset("mnist-sample", "test").labels[0])


def test_register_into_the_packaged_registry_only_from_a_checkout_and_within_budget(finished_run, tmp_path, monkeypatch):
    import ctxbudget.registry.register as reg

    monkeypatch.delenv(MODELS_ENV, raising=False)
    installed = tmp_path / "site-packages" / "ctxbudget" / "pretrained"
    monkeypatch.setattr(reg, "packaged_root", lambda: installed)
    monkeypatch.setattr("ctxbudget.registry.manifest.packaged_root", lambda: installed)
    with pytest.raises(RegistryError, match="installed package"):
        register_run(finished_run, "x")
    checkout = tmp_path / "repo" / "src" / "ctxbudget" / "pretrained"
    checkout.mkdir(parents=True)
    (tmp_path / "repo" / "pyproject.toml").write_text("")
    monkeypatch.setattr(reg, "packaged_root", lambda: checkout)
    monkeypatch.setattr("ctxbudget.registry.manifest.packaged_root", lambda: checkout)
    monkeypatch.setattr(reg, "SIZE_BUDGET", 1000)
    with pytest.raises(RegistryError, match="budget .*--not-stored"):
        register_run(finished_run, "x")
    assert register_run(finished_run, "x", stored=False).root == checkout
    assert not list(checkout.glob("*.pt"))
