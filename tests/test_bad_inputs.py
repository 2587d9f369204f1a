"""Every bad input of the list below is one clear line and exit code 2 (CLI) or a
ValueError/TypeError (API) — no traceback, NaN, inverted box or silently wrong number."""
import json
import stat

import pytest
import torch
from torch import nn

from ctxbudget.budgets import LearnedBudget, input_box, project_budgets
from ctxbudget.cli import main
from ctxbudget.models import BudgetGenerator

TINY = ["data.name=mnist-sample", "data.train_limit=80", "data.test_limit=40", "optim.batch_size=40",
        "optim.epochs=2", "schedule.start=2", "schedule.length=1", "model.name=dm-small", "num_threads=1",
        "budget.eps0=0.1"]


def _sets(items):
    return sum((["--set", s] for s in items), [])


def _one_line(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("setting,needle", [
    ("data.train_limit=0", "data.train_limit"), ("data.train_limit=-5", "data.train_limit"),
    ("data.test_limit=0", "data.test_limit"), ("data.test_limit=-5", "data.test_limit"),
    ("num_threads=-1", "num_threads"), ("num_threads=0", "num_threads"),
    # tried beyond the list: accepted before, then a cryptic error, a traceback or a silent ascent
    ("eval.batch_size=0", "eval.batch_size"), ("optim.lr_decay=-1", "optim.lr_decay"),
    ("optim.weight_decay=-1", "optim.weight_decay"), ("optim.generator_lr=-1", "optim.generator_lr"),
    ("optim.grad_clip=.nan", "optim.grad_clip"), ("optim.lr_decay=.nan", "optim.lr_decay"),
])
def test_bad_config_values(setting, needle, capsys):
    assert main(["train", "--set", setting, "--print-config"]) == 2
    _one_line(capsys, needle)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, defaults_config):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--config", defaults_config, "--out", str(out), "--no-progress", "--device", "cpu"]
                + _sets(TINY)) == 0
    return out


def test_resume_cannot_change_what_was_trained(finished_run, capsys):
    before = (finished_run / "config.yaml").read_text()
    assert main(["train", "--resume", str(finished_run), "--set", "model.name=dm-medium", "--no-progress"]) == 2
    _one_line(capsys, "model.name")
    assert main(["train", "--resume", str(finished_run), "--set", "budget.eps0=0.5", "--no-progress"]) == 2
    _one_line(capsys, "budget.eps0")
    assert (finished_run / "config.yaml").read_text() == before


def test_config_that_does_not_match_the_checkpoint(finished_run, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(finished_run, other)
    text = (other / "config.yaml").read_text().replace("name: dm-small", "name: dm-medium")
    (other / "config.yaml").write_text(text)
    assert main(["evaluate", str(other), "--limit", "4", "--liu-limit", "0", "--no-progress"]) == 2
    _one_line(capsys, "does not match")
    assert main(["train", "--resume", str(other), "--no-progress"]) == 2
    _one_line(capsys, "does not match")


def test_resume_removes_stale_temporary_checkpoints(finished_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    stale = run / "checkpoints" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert not stale.exists()


def test_data_root_is_stored_as_given(tmp_path, monkeypatch, defaults_config):
    """config.yaml held the absolute data root of the machine that trained the run; now it
    holds the root as the user wrote it, or null when it came from $CTXBUDGET_DATA or the default."""
    import yaml

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CTXBUDGET_DATA", str(tmp_path / "env-data"))
    (tmp_path / "data").mkdir()
    base = ["train", "--config", defaults_config, "--no-progress", "--device", "cpu"] + _sets(TINY + ["optim.epochs=1"])
    for name, extra, expected in [("rel", ["--data-dir", "data"], "data"), ("env", [], None),
                                  ("set", ["--set", "data.root=./data/../data"], "./data/../data")]:
        assert main(base + ["--out", name] + extra) == 0
        assert yaml.safe_load((tmp_path / name / "config.yaml").read_text())["data"]["root"] == expected, name
    assert main(["train", "--resume", "rel", "--set", "optim.epochs=2", "--no-progress"]) == 0   # resumes as stored
    assert yaml.safe_load((tmp_path / "rel" / "config.yaml").read_text())["data"]["root"] == "data"


def test_files_written_atomically_get_the_usual_mode(finished_run, tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    expect = stat.S_IMODE(plain.stat().st_mode)
    for name in ["config.yaml", "final.pt", "checkpoints/last.pt"]:
        assert stat.S_IMODE((finished_run / name).stat().st_mode) == expect, name


def test_mean_eps_counts_only_perturbed_steps(finished_run):
    rows = [json.loads(r) for r in (finished_run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        if r["split"] == "train":
            assert r["min_eps"] - 1e-9 <= r["mean_eps"] <= r["max_eps"] + 1e-9, r


# ------------------------------------------------------------------ API
def _bad(t, where, value):
    t = t.clone()
    t.view(-1)[where] = value
    return t


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_project_budgets_rejects_non_finite_scores(value):
    g = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="finite"):
        project_budgets(_bad(g, 3, value), 0.3, 0.5, 2.0)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_learned_budget_rejects_non_finite_images(value):
    threat = LearnedBudget(BudgetGenerator((1, 6, 6)), 0.3, 0.5, 2.0)
    with pytest.raises(ValueError, match="finite"):
        threat(_bad(torch.rand(2, 1, 6, 6), 5, value))


def test_input_box_rejects_nan_and_negative_budgets():
    x, eps = torch.rand(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.1)
    with pytest.raises(ValueError, match="finite"):
        input_box(_bad(x, 0, float("nan")), eps)
    with pytest.raises(ValueError, match="finite"):
        input_box(x, _bad(eps, 0, float("nan")))
    with pytest.raises(ValueError, match="negative"):
        input_box(x, _bad(eps, 0, -0.05))


def test_bounds_reject_dropout_in_training_mode():
    from ctxbudget.bounds import compute_bounds

    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="Dropout"):
        compute_bounds(net, x - 0.1, x + 0.1, "ibp")
    net.eval()
    compute_bounds(net, x - 0.1, x + 0.1, "ibp")


def test_bounds_reject_batchnorm_without_running_stats_in_eval_mode():
    from ctxbudget.bounds import compute_bounds

    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.ReLU(),
                        nn.Linear(8, 3)).eval()
    x = torch.rand(4, 1, 4, 4)
    with pytest.raises(ValueError, match="track_running_stats"):
        compute_bounds(net, x - 0.1, x + 0.1, "ibp")
    net.train()
    compute_bounds(net, x - 0.1, x + 0.1, "ibp", x=x)        # training mode: the clean batch's statistics


def test_objective_passes_the_clean_batch_to_train_mode_batchnorm():
    from ctxbudget.bounds import robust_cross_entropy
    from ctxbudget.budgets import UniformBudget
    from ctxbudget.train.objective import Objective

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()
    x = torch.rand(6, 1, 4, 4)
    x[:, :, 0] = 0.0                                  # clipped box: its centre differs from x
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    obj = Objective(net, UniformBudget(0.0))
    loss, stats = obj(x, y, 0.2, kappa=0.0, beta=0.0, method="ibp")
    lo, hi = input_box(x, torch.full_like(x, 0.2))
    expect = robust_cross_entropy(net, lo, hi, y, method="ibp", beta=0.0, x=x).mean()
    assert torch.allclose(loss, expect)


def test_input_box_rejects_images_outside_the_unit_range():
    """Tried beyond the issue's list: 0..255 images gave a box clipped to [0, 1] far from x."""
    x = torch.rand(2, 1, 4, 4) * 255
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        input_box(x, torch.full_like(x, 0.1))


def test_resume_cannot_shrink_below_the_epochs_done(finished_run, capsys):
    """Tried beyond the issue's list: --set optim.epochs=1 on a 2-epoch run said "already finished"
    and rewrote config.yaml to 1 epoch."""
    before = (finished_run / "config.yaml").read_text()
    assert main(["train", "--resume", str(finished_run), "--set", "optim.epochs=1", "--no-progress"]) == 2
    _one_line(capsys, "optim.epochs")
    assert (finished_run / "config.yaml").read_text() == before


def test_visualize_stats_limit_must_be_positive(finished_run, capsys):
    assert main(["visualize", str(finished_run), "--stats-limit", "-1"]) == 2
    _one_line(capsys, "--stats-limit")
