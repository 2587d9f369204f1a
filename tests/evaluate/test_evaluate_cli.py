"""End to end through the CLI on a run directory written with ctxbudget.run (untrained weights)."""
import json

import pytest

from ctxbudget.cli import main


@pytest.fixture
def run_dir(tmp_path, untrained_run):
    out = untrained_run(tmp_path / "run", 0.05)
    (out / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "split": "test", "clean_err": 0.5,
                                                           "verified_err": 0.9, "eps0": 0.05 * e / 2}) + "\n"
                                               for e in (1, 2)))
    return out


def test_evaluate_visualize_report(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--limit", "8", "--liu-limit", "4", "--liu-iters", "5",
                 "--attack-steps", "5", "--no-progress"]) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["n"] == 8 and res["n_liu2019"] == 4 and res["soundness_violations"] == 0
    assert res["training"] == {"kind": "learned", "eps0": 0.05, "alpha_lo": 0.5, "alpha_hi": 2.0}
    assert (run_dir / "per_example.npz").is_file()
    assert "soundness violations: 0" in capsys.readouterr().out
    assert main(["visualize", str(run_dir), "--indices", "0,3", "--stats-limit", "16"]) == 0
    assert (run_dir / "figures" / "budget_maps.png").stat().st_size > 1000
    assert (run_dir / "figures" / "training_curves.png").is_file()
    assert main(["report", str(run_dir)]) == 0
    assert "| 0.05 | learned 0.05 |" in capsys.readouterr().out


def test_user_errors_exit_2(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(run_dir), "--bounds", "ibp,nope"]) == 2
    assert main(["visualize", str(run_dir), "--indices", "99999"]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert "ctxbudget evaluate" in capsys.readouterr().err


def test_results_name_the_checkpoint_and_epoch(run_dir, capsys):
    """With no final.pt the last checkpoint is evaluated, and results say so."""
    from dataclasses import replace

    from ctxbudget.run import FINAL, LAST, Checkpoint

    state = Checkpoint.load(run_dir / FINAL)
    (run_dir / FINAL).unlink()
    replace(state, epoch=2, step=20).save(run_dir / LAST)
    assert main(["evaluate", str(run_dir), "--limit", "4", "--liu-limit", "0", "--attack-steps", "2",
                 "--no-progress"]) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["checkpoint"] == {"file": "checkpoints/last.pt", "epoch": 2, "step": 20}
    assert "checkpoint: checkpoints/last.pt, epoch 2" in capsys.readouterr().out


def test_attack_targets_option(run_dir, capsys):
    """Targeted runs by default (3), recorded in results.json; --attack-targets 0 turns them off."""
    assert main(["evaluate", str(run_dir), "--limit", "2", "--liu-limit", "0", "--attack-steps", "2",
                 "--no-progress"]) == 0
    assert json.loads((run_dir / "results.json").read_text())["attack"] == {
        "steps": 2, "restarts": 1, "targets": 3, "loss": "margin", "seed": 0, "precision": "float32"}
    assert main(["evaluate", str(run_dir), "--limit", "2", "--liu-limit", "0", "--attack-steps", "2",
                 "--attack-targets", "0", "--no-progress"]) == 0
    assert json.loads((run_dir / "results.json").read_text())["attack"]["targets"] == 0
    assert main(["evaluate", str(run_dir), "--attack-targets", "-1"]) == 2
    assert "--attack-targets" in capsys.readouterr().err


def test_attack_precision_option(run_dir, capsys):
    """--attack-precision picks the attack's dtype (recorded as resolved); the verified columns do not
    depend on it; an unknown one is a one-line error."""
    verified = {}
    from ctxbudget.runtime import fast_bf16

    for precision in ("float32", "bfloat16", "auto"):
        assert main(["evaluate", str(run_dir), "--limit", "6", "--liu-limit", "0", "--attack-steps", "3",
                     "--attack-precision", precision, "--no-progress"]) == 0
        res = json.loads((run_dir / "results.json").read_text())
        chosen = ("bfloat16" if fast_bf16("cpu") else "float32") if precision == "auto" else precision
        assert res["attack"]["precision"] == chosen
        verified[precision] = {k: v for k, v in res.items() if k.startswith("verified")}
    assert verified["float32"] == verified["bfloat16"] and verified["float32"]
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(run_dir), "--attack-precision", "float16"])
    assert exc.value.code == 2 and "--attack-precision" in capsys.readouterr().err
