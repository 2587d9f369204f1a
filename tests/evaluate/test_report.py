"""Paper-style Markdown report and the console table."""
import argparse
import json

import pytest

from ctxbudget.errors import UserError
from ctxbudget.evaluate import format_results_table, markdown_table, report
from ctxbudget.evaluate.commands import add_evaluate_parser, add_report_parser, add_visualize_parser
from ctxbudget.evaluate.report import format_eps


def fake_results(kind, eps0, clean, liu, uni, learned):
    return {"n": 100, "eps0": eps0, "clean_err": clean, "training": {"kind": kind, "eps0": eps0},
            "verified_err": {"learned": learned, "uniform": uni, "liu2019": liu},
            "verified_err_by_method": {"learned": {"ibp": learned}, "uniform": {"ibp": uni}},
            "attack_err": {"learned": clean, "uniform": clean}, "methods": ["ibp"], "n_liu2019": 50,
            "soundness_violations": 0, "seconds": {"total": 1.0}, "mean_log_volume_liu2019": -1.0,
            "mean_geo_budget_liu2019": 0.37}


def _write(path, res):
    path.mkdir()
    (path / "results.json").write_text(json.dumps(res))
    return path


def test_markdown_from_two_runs(tmp_path):
    a = _write(tmp_path / "learned", fake_results("learned", 0.4, 0.0141, 0.0797, 0.581, 0.0781))
    b = _write(tmp_path / "uniform", fake_results("uniform", 0.4, 0.0217, 0.0588, 0.1206, 1.0))
    text = report([a, b])
    lines = text.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| target ε0 | training | clean")
    assert lines[2] == "| 0.4 | uniform 0.4 | 2.17 | 5.88 | 12.06 | 100.00 | 100 (Liu et al.: first 50) | – | uniform |"
    assert lines[3] == "| 0.4 | learned 0.4 | 1.41 | 7.97 | 58.10 | 7.81 | 100 (Liu et al.: first 50) | – | learned |"


def test_missing_results_and_dirs(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match="run 'ctxbudget evaluate .*run' first"):
        report([tmp_path / "run"])
    with pytest.raises(UserError, match="no run directory or registered model named .*nope"):
        report([tmp_path / "nope"])


def test_liu_missing_and_cifar_eps():
    res = fake_results("learned", 8 / 255, 0.5, None, 0.9, 0.6)
    assert "| 8/255 | learned 8/255 | 50.00 | – | 90.00 | 60.00 | 100 |" in markdown_table([res])
    assert format_eps(0.4) == "0.4" and format_eps(16 / 255) == "16/255"
    table = format_results_table(fake_results("learned", 0.4, 0.1, 0.2, 0.3, 0.25))
    assert "verified (ibp)" in table and "soundness violations: 0" in table


def test_cli_parsers_and_report_command(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="ctxbudget")
    sub = parser.add_subparsers(dest="command")
    for add in (add_evaluate_parser, add_report_parser, add_visualize_parser):
        add(sub)
    args = parser.parse_args(["evaluate", "RUN", "--bounds", "ibp,crown", "--liu-limit", "5"])
    assert args.bounds == "ibp,crown" and args.liu_limit == 5 and args.attack_steps == 50
    a = _write(tmp_path / "r1", fake_results("learned", 0.4, 0.0141, 0.0797, 0.581, 0.0781))
    out = tmp_path / "t.md"
    args = parser.parse_args(["report", str(a), "--out", str(out)])
    assert args.func(args) == 0
    assert "learned 0.4" in out.read_text() and "learned 0.4" in capsys.readouterr().out
    with pytest.raises(UserError):
        args = parser.parse_args(["evaluate", str(tmp_path / "missing")])
        args.func(args)
    with pytest.raises(UserError, match="unknown bound method"):
        args = parser.parse_args(["evaluate", str(a), "--bounds", "deep"])
        args.func(args)


def test_table_names_example_counts_and_checkpoint(tmp_path):
    """The Liu column covers fewer examples than the others; say so, and name the
    checkpoint and epoch evaluated."""
    res = {**fake_results("learned", 0.3, 0.1, 0.5, 0.7667, 0.3), "n": 60, "n_liu2019": 10,
           "checkpoint": {"file": "checkpoints/last.pt", "epoch": 7, "step": 70}}
    row = markdown_table([res]).strip().splitlines()[-1]
    assert row == ("| 0.3 | learned 0.3 | 10.00 | 50.00 | 76.67 | 30.00 | 60 (Liu et al.: first 10) "
                   "| checkpoints/last.pt, epoch 7 |")
    table = format_results_table(res)
    assert "liu2019 (first 10 of 60)" in table and "checkpoint: checkpoints/last.pt, epoch 7" in table
