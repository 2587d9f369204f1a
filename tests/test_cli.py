"""The command line: every subcommand has --help; errors are one line with a non-zero exit code."""
import subprocess
import sys

import pytest

from ctxbudget.cli import main


@pytest.mark.parametrize("argv", [[], ["train"], ["evaluate"], ["visualize"], ["report"], ["data"],
                                  ["data", "info"], ["data", "preview"], ["data", "list"], ["configs"],
                                  ["export"], ["certify"], ["models"], ["models", "list"], ["models", "show"],
                                  ["models", "register"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and len(out.splitlines()) > 3


def test_python_dash_m_and_version():
    proc = subprocess.run([sys.executable, "-m", "ctxbudget", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("ctxbudget ")


@pytest.mark.parametrize("argv,needle", [
    (["evaluate", "/nonexistent/run"], "/nonexistent/run"),
    (["visualize", "/nonexistent/run"], "/nonexistent/run"),
    (["data", "info", "nosuchset"], "nosuchset"),
    (["train", "--set", "budget.eps0=1.5", "--print-config"], "eps0"),
    (["train", "--set", "budget.alpha_lo=0.9", "--set", "budget.alpha_hi=0.5", "--print-config"], "alpha"),
])
def test_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and len(err.splitlines()) == 1


def test_data_preview_writes_png(tmp_path):
    out = tmp_path / "p.png"
    assert main(["data", "preview", "watermarked-mnist-sample", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
