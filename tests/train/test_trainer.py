"""End-to-end tests of the trainer on a tiny slice of the embedded MNIST sample."""
import json

import pytest
import torch

import ctxbudget
from ctxbudget.cli import main
from ctxbudget.config import load_config
from ctxbudget.errors import UserError
from ctxbudget.train import resume, train

TINY = ["data.name=mnist-sample", "data.train_limit=120", "data.test_limit=60", "optim.batch_size=40",
        "optim.epochs=3", "schedule.start=2", "schedule.length=1", "model.name=dm-small", "num_threads=1"]


def tiny_config(*extra):
    return load_config(None, TINY + list(extra))


def run_test_images(run, n):
    from ctxbudget.data import get_dataset
    return get_dataset(run.dataset, "test").images[:n]


def _params(state):
    return torch.cat([v.flatten().double() for v in state.values()])


@pytest.mark.parametrize("kind", ["learned", "uniform"])
def test_train_writes_run_directory_and_load_run(tmp_path, kind):
    out = tmp_path / "run"
    train(tiny_config(f"budget.kind={kind}", "budget.eps0=0.1"), out, device="cpu", progress=False)
    for name in ["config.yaml", "metrics.jsonl", "train.log", "checkpoints/last.pt", "final.pt"]:
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in rows] == [(e, s) for e in (1, 2, 3) for s in ("train", "test")]
    for r in rows:
        assert isinstance(r["epoch"], int) and r["split"] in ("train", "test")
        for key in ("clean_err", "verified_err"):
            assert 0.0 <= r[key] <= 1.0
        assert r["verified_err"] >= r["clean_err"]
        assert r["loss"] > 0 and r["seconds"] >= 0 and "eps0" in r
    assert rows[0]["eps0"] == 0.0 and rows[-1]["eps0"] == pytest.approx(0.1)
    run = ctxbudget.load_run(out)
    assert run.kind == kind and run.eps0 == pytest.approx(0.1) and run.dataset == "mnist-sample"
    assert not run.classifier.training
    x = torch.rand(3, 1, 28, 28)
    eps = run.budgets(x)
    assert eps.shape == x.shape
    assert torch.allclose(eps.log().sum((1, 2, 3)).double(), torch.full((3,), 784 * torch.tensor(0.1).log().item(),
                                                                         dtype=torch.float64), rtol=1e-5)
    if kind == "learned":
        assert eps.min() >= 0.05 - 1e-6 and eps.max() <= 0.2 + 1e-6
        assert not torch.allclose(eps, torch.full_like(eps, 0.1))
    # contextuality on the test lines where budgets are learned and ε0 > 0 (not in the natural epoch)
    tests = [r for r in rows if r["split"] == "test"]
    assert "input_dependent_share" not in tests[0]
    if kind == "learned":
        from ctxbudget.contextuality import budget_contextuality
        ctx = budget_contextuality(run.budgets, run_test_images(run, 60))
        assert tests[-1]["input_dependent_share"] == pytest.approx(ctx["input_dependent_share"], rel=1e-6)
        assert tests[-1]["ratio_stroke_vs_background"] == pytest.approx(ctx["stroke_vs_background"]["ratio"], rel=1e-6)
    else:
        assert all("input_dependent_share" not in r for r in tests)


def test_deterministic_for_fixed_seed(tmp_path):
    cfg = tiny_config("optim.epochs=2")
    a = train(cfg, tmp_path / "a", device="cpu", progress=False)
    b = train(cfg, tmp_path / "b", device="cpu", progress=False)
    assert torch.equal(_params(a.classifier.state_dict()), _params(b.classifier.state_dict()))
    assert torch.equal(_params(a.threat.state_dict()), _params(b.threat.state_dict()))


def test_interrupted_run_resumes_exactly(tmp_path, interrupt_at_epoch):
    cfg = tiny_config()
    straight = train(cfg, tmp_path / "straight", device="cpu", progress=False)

    with interrupt_at_epoch(3):
        train(cfg, tmp_path / "cut", device="cpu", progress=False)
    rows = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4 and not (tmp_path / "cut" / "final.pt").exists()   # 2 epochs kept
    resumed = resume(tmp_path / "cut", device="cpu", progress=False)
    assert resumed.epoch == 3 and resumed.step == straight.step
    assert torch.equal(_params(straight.classifier.state_dict()), _params(resumed.classifier.state_dict()))
    assert torch.equal(_params(straight.threat.state_dict()), _params(resumed.threat.state_dict()))
    rows = [json.loads(r) for r in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 1, 2, 2, 3, 3]


def test_resume_drops_metric_lines_past_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    train(tiny_config("optim.epochs=1"), out, device="cpu", progress=False)
    with open(out / "metrics.jsonl", "a") as fh:   # an epoch logged but never checkpointed
        fh.write(json.dumps({"epoch": 2, "split": "train"}) + "\n")
    resume(out, overrides={"optim": {"epochs": 2}}, device="cpu", progress=False)
    epochs = [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 1, 2, 2]


def test_out_dir_with_a_run_is_refused(tmp_path):
    out = tmp_path / "run"
    train(tiny_config("optim.epochs=1"), out, device="cpu", progress=False)
    with pytest.raises(UserError, match="already holds a run"):
        train(tiny_config("optim.epochs=1"), out, device="cpu", progress=False)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    train(tiny_config("optim.epochs=1"), out, device="cpu", progress=False)
    (out / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        resume(out, device="cpu", progress=False)


def test_cli_train_needs_a_config(tmp_path, capsys):
    """Without --config (and without --resume) train used to start the 100-epoch defaults."""
    assert main(["train", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert "--config quickstart" in err and "ctxbudget configs" in err
    assert not (tmp_path / "r").exists()
    assert main(["train", "--print-config"]) == 0                     # --print-config still shows the defaults
    assert "epochs: 100" in capsys.readouterr().out


def test_cli_train_and_errors(tmp_path, capsys, defaults_config):
    out = tmp_path / "cli"
    args = ["train", "--config", defaults_config, "--out", str(out), "--no-progress", "--device", "cpu"] + sum(
        (["--set", s] for s in TINY), [])
    assert main(args + ["--set", "optim.epochs=1"]) == 0
    assert (out / "final.pt").is_file()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--config", defaults_config, "--set", "optim.lrr=1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--config", defaults_config, "--set", "data.name=mnist", "--set", f"data.root={tmp_path}",
                 "--out", str(tmp_path / "y")]) == 2
    assert "mnist" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--set", "optim.epochs=2", "--no-progress"]) == 0
    assert ctxbudget.load_run(out).meta["epoch"] == 2
