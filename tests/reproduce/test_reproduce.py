"""``ctxbudget reproduce`` on a tiny schedule: plan, train, resume, evaluate, tables."""
from __future__ import annotations

import json

import pytest

from ctxbudget.cli import main
from ctxbudget.errors import UserError
from ctxbudget.reproduce import EXPERIMENTS, plan_experiment, run_experiment

TINY = ["data.train_limit=64", "data.test_limit=24", "optim.batch_size=32", "optim.epochs=2", "schedule.start=2",
        "schedule.length=1", "optim.lr_milestones=[]", "num_threads=1", "eval.batch_size=24"]
ROWS = ["uniform-0.4", "learned-0.4"]


def test_every_experiment_names_existing_configs_and_the_papers_numbers():
    from ctxbudget.config import load_config
    from ctxbudget.reproduce.runner import config_path

    for exp in EXPERIMENTS.values():
        for row in exp.rows:
            cfg = load_config(config_path(row.config))
            assert cfg.data.name == exp.dataset
            assert ("uniform" in row.name) == (cfg.budget.kind == "uniform")
    assert EXPERIMENTS["table1"].rows[1].paper == {"clean": 1.41, "liu2019": 7.97, "uniform": 58.10, "learned": 7.81}


def test_dry_run_lists_commands_and_unavailable_rows(tmp_path, capsys):
    assert main(["reproduce", "table2", "--out", str(tmp_path), "--data-dir", str(tmp_path / "nodata"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("unavailable") == 4 and "cifar10 is not on this machine" in out
    assert not (tmp_path / "table2").exists()                         # nothing ran


def test_unknown_names_are_one_line_errors(tmp_path, capsys):
    assert main(["reproduce", "table9", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'table9'" in capsys.readouterr().err
    assert main(["reproduce", "table1", "--rows", "learned-0.9", "--out", str(tmp_path), "--dry-run"]) == 2
    assert "unknown row(s) learned-0.9" in capsys.readouterr().err


@pytest.mark.slow   # trains two rows on real MNIST, resumes one, evaluates both (Liu et al. included)
def test_tiny_reproduction_trains_resumes_evaluates_and_tabulates(real_root, tmp_path, monkeypatch, capsys,
                                                                  interrupt_at_epoch):
    import yaml

    # --data-dir given relative to the working directory; no $CTXBUDGET_DATA, no data under the default root
    monkeypatch.chdir(real_root.parent)
    monkeypatch.delenv("CTXBUDGET_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    kw = dict(schedule="cpu", overrides=TINY, data_dir=real_root.name, rows=ROWS, eval_limit=24, liu_limit=2,
              log=lambda s: None)
    # interrupt the first row after its first epoch (as Ctrl-C would)
    with interrupt_at_epoch(2):
        run_experiment("table1", tmp_path, **kw)
    # config.yaml holds the data root as given, not this machine's absolute path; a run whose
    # root was then replaced by null (as in the committed results/) resumes and evaluates with --data-dir
    cfg_file = tmp_path / "table1" / "uniform-0.4" / "config.yaml"
    stored = yaml.safe_load(cfg_file.read_text())
    assert stored["data"]["root"] == real_root.name
    stored["data"]["root"] = None
    cfg_file.write_text(yaml.safe_dump(stored, sort_keys=False))
    _, plans = plan_experiment("table1", tmp_path, **{k: v for k, v in kw.items() if k not in ("eval_limit", "liu_limit", "log")})
    assert [p.status for p in plans] == ["resume", "train"]

    md = run_experiment("table1", tmp_path, **kw)
    text = md.read_text()
    for row in ROWS:
        run_dir = tmp_path / "table1" / row
        assert (run_dir / "results.json").is_file() and (run_dir / "figures" / "budget_maps.png").is_file()
        epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 1, 2, 2]                                # resumed run: no epoch lost or repeated
    assert "resuming" in (tmp_path / "table1" / "uniform-0.4" / "train.log").read_text()
    assert "/ 1.41 |" in text and "/ 7.81 |" in text                  # the paper's numbers beside ours
    assert "| 24 (2) |" in text                                       # n per column
    assert "Contextuality" in text and "learned-0.4" in text
    summary = json.loads((tmp_path / "table1.json").read_text())
    learned = next(r for r in summary["rows"] if r["row"] == "learned-0.4")
    assert 0.0 <= learned["ours"]["clean"] <= 1.0 and learned["contextuality"]["n"] == 24
    assert learned["soundness_violations"] == 0

    # nothing left to do: a second call trains nothing
    _, plans = plan_experiment("table1", tmp_path, schedule="cpu", overrides=TINY, data_dir=str(real_root), rows=ROWS)
    assert [p.status for p in plans] == ["done", "done"]
    # a different config for the same folder is refused, never mixed in
    with pytest.raises(UserError, match="another config"):
        plan_experiment("table1", tmp_path, schedule="cpu", overrides=TINY + ["budget.alpha_hi=3.0"],
                        data_dir=str(real_root), rows=ROWS)


def test_table_only_runs_nothing(real_root, tmp_path):
    md = run_experiment("table1", tmp_path, schedule="cpu", rows=["learned-0.4"], data_dir=str(real_root),
                        table_only=True, log=lambda s: None)
    assert "not finished (train)" in md.read_text() and not (tmp_path / "table1" / "learned-0.4").exists()


def _stored_run(run_dir, cfg):
    from ctxbudget import run as rundir

    run_dir.mkdir(parents=True)
    rundir.write_config(run_dir, cfg)


def test_keys_a_run_never_reads_do_not_make_a_mismatch(real_root, tmp_path):
    """A uniform run saved while the default head was `dense` (or a dense run saved with another padding)
    still belongs to its row; a learned context run with another padding does not."""
    import dataclasses

    kw = dict(schedule="cpu", data_dir=str(real_root))
    _, plans = plan_experiment("table3", tmp_path, rows=["uniform-0.3", "learned-0.3"], **kw)
    uniform, learned = (p.config for p in plans)
    assert learned.budget.generator == "context" and learned.budget.generator_padding == "zeros"
    _stored_run(tmp_path / "table3" / "uniform-0.3", dataclasses.replace(
        uniform, budget=dataclasses.replace(uniform.budget, generator="dense", generator_padding="replicate")))
    _stored_run(tmp_path / "table3" / "learned-0.3", dataclasses.replace(
        learned, budget=dataclasses.replace(learned.budget, generator_padding="replicate")))
    _, plans = plan_experiment("table3", tmp_path, rows=["uniform-0.3"], **kw)
    assert plans[0].status == "resume"
    with pytest.raises(UserError, match=r"another config \(budget.generator_padding differ"):
        plan_experiment("table3", tmp_path, rows=["learned-0.3"], **kw)
    import shutil

    shutil.rmtree(tmp_path / "table3" / "learned-0.3")       # a dense run saved with replicate padding
    _stored_run(tmp_path / "table3" / "learned-0.3", dataclasses.replace(
        learned, budget=dataclasses.replace(learned.budget, generator="dense", generator_padding="replicate")))
    _, plans = plan_experiment("table3", tmp_path, rows=["learned-0.3"], overrides=["budget.generator=dense"], **kw)
    assert plans[0].status == "resume"                       # dense ignores the padding
    with pytest.raises(UserError, match=r"another config \(budget.generator differ"):
        plan_experiment("table3", tmp_path, rows=["learned-0.3"], overrides=["budget.generator=conv"], **kw)


def test_jpeg_tables_name_the_data_source(tmp_path, capsys):
    """table2-jpeg / table4-jpeg: the JPEG-copy configs, their own cpu schedule, and "JPEG copy" in
    the table's data line, every row and the JSON, also for rows not run."""
    from ctxbudget.config import load_config
    from ctxbudget.reproduce.experiments import schedule_overrides
    from ctxbudget.reproduce.runner import config_path

    for name, dataset, limit in (("table2-jpeg", "cifar10-jpeg", "20000"), ("table4-jpeg", "doubled-cifar10-jpeg", "20000")):
        exp = EXPERIMENTS[name]
        assert exp.dataset == dataset and [r.name for r in exp.rows] == [r.name for r in EXPERIMENTS[name[:6]].rows]
        assert [r.paper for r in exp.rows] == [r.paper for r in EXPERIMENTS[name[:6]].rows]
        _, plans = plan_experiment(name, tmp_path, schedule="cpu", data_dir=str(tmp_path / "nodata"))
        assert {p.status for p in plans} == {"unavailable"} and "cifar10-jpeg.tar.gz" in plans[0].reason
        for row in exp.rows:
            kind = "uniform" if "uniform" in row.name else "learned"
            ovr = schedule_overrides(exp, row, "cpu", kind)
            cfg = load_config(config_path(row.config), ovr)
            assert (cfg.model.name, cfg.optim.epochs, cfg.data.train_limit) == ("dm-small", 35, int(limit))
            assert cfg.schedule.start == 6 and cfg.schedule.length == 20 and cfg.optim.lr_milestones == [30]
        md = run_experiment(name, tmp_path, schedule="cpu", data_dir=str(tmp_path / "nodata"), table_only=True,
                            log=lambda s: None).read_text()
        assert "JPEG copy)." in md.splitlines()[2]                              # Data: … (…, JPEG copy).
        rows = [line for line in md.splitlines() if any(line.startswith(f"| {r.name} |") for r in exp.rows)]
        assert len(rows) == len(exp.rows) and all("JPEG copy" in line for line in rows)
        assert "JPEG copy" in json.loads((tmp_path / f"{name}.json").read_text())["data_source"]
