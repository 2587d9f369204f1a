"""Packaged configs: names resolve to package data, the CLI lists them, paths still work."""
from pathlib import Path

import pytest

from ctxbudget.cli import main
from ctxbudget.config import load_config
from ctxbudget.errors import UserError
from ctxbudget.presets import config_names, configs_dir, describe_config, packaged_config, resolve_config

REPO = Path(__file__).resolve().parents[1]


def test_packaged_configs_live_in_the_package_and_repo_configs_is_the_same_folder():
    folder = configs_dir()
    assert folder.parent.name == "ctxbudget" and (folder / "quickstart.yaml").is_file()
    repo_configs = REPO / "configs"
    if repo_configs.exists():  # a source checkout: one copy only (configs/ links to the package)
        assert repo_configs.resolve() == folder.resolve()


@pytest.mark.parametrize("name", ["quickstart", "quickstart.yaml", "mnist-learned-0.4"])
def test_name_resolves_to_packaged_file(name):
    path = resolve_config(name)
    assert path.parent == configs_dir() and path.is_file()
    assert load_config(name) == load_config(path)


def test_existing_file_wins_over_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("quickstart").write_text("optim:\n  epochs: 3\n")
    assert load_config("quickstart").optim.epochs == 3


@pytest.mark.parametrize("bad,needle", [("nosuch", "neither a file nor a packaged config"),
                                        ("dir/nosuch.yaml", "not found"),
                                        ("../configs/quickstart", "not found")])
def test_unknown_names_are_user_errors(bad, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=needle):
        resolve_config(bad)
    with pytest.raises(UserError, match="no packaged config"):
        packaged_config("nosuch")


def test_every_packaged_config_has_a_description():
    names = config_names()
    assert "quickstart" in names and len(names) >= 16
    for name in names:
        assert describe_config(name), name


def test_configs_command_lists_and_prints(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(config_names())
    assert any(line.startswith("quickstart ") and "Quick start" in line for line in lines)
    assert main(["configs", "quickstart"]) == 0
    assert capsys.readouterr().out == packaged_config("quickstart").read_text()
    assert main(["configs", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_train_print_config_by_name(capsys):
    assert main(["train", "--config", "quickstart", "--print-config"]) == 0
    assert "mnist-sample" in capsys.readouterr().out


@pytest.mark.parametrize("name", config_names())
def test_header_command_uses_the_config_name(name):
    """The header said --config configs/X.yaml, a path that exists only in a source checkout."""
    lines = [line for line in packaged_config(name).read_text().splitlines() if "ctxbudget train" in line]
    assert len(lines) == 1 and lines[0].lstrip("# ").startswith(f"ctxbudget train --config {name} --out runs/")
    assert resolve_config(name) == packaged_config(name)
