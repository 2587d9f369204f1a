"""Configs shipped inside the package (``ctxbudget/configs/*.yaml``): list them and resolve a name.

``ctxbudget train --config X`` accepts a path to a YAML file or the name of a packaged config
(``quickstart``, ``mnist-learned-0.4``, …; the ``.yaml`` suffix is optional). An existing file
wins over a packaged name. ``ctxbudget configs`` lists the names with their one-line
descriptions (the ``description`` key of each file); ``ctxbudget configs NAME`` prints one.

The packaged files are the only copy: the repository's top-level ``configs/`` is a symbolic link
to ``src/ctxbudget/configs``.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

SUFFIX = ".yaml"


def configs_dir() -> Path:
    """Folder that holds the packaged YAML files (inside the installed package)."""
    return Path(str(resources.files("ctxbudget") / "configs"))


def config_names() -> list[str]:
    """Sorted names of the packaged configs (file stems)."""
    folder = configs_dir()
    return sorted(p.name[: -len(SUFFIX)] for p in folder.glob("*" + SUFFIX)) if folder.is_dir() else []


def packaged_config(name: str) -> Path:
    """Path of the packaged config ``name`` (``.yaml`` optional); ``UserError`` listing names if unknown."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    path = configs_dir() / (stem + SUFFIX)
    if "/" in stem or "\\" in stem or not path.is_file():
        raise UserError(f"no packaged config named {name!r}; choose one of {', '.join(config_names())} "
                        "(or give the path of a YAML file)")
    return path


def resolve_config(name_or_path: str | Path) -> Path:
    """An existing file path as given, else the packaged config of that name.

    Raises ``UserError`` naming both interpretations when neither exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    if "/" in text or "\\" in text:
        raise UserError(f"config file {text} not found (packaged configs: 'ctxbudget configs')")
    try:
        return packaged_config(text)
    except UserError:
        raise UserError(f"config {text!r} is neither a file nor a packaged config; packaged: "
                        f"{', '.join(config_names())}") from None


def describe_config(name: str) -> str:
    """The ``description`` of a packaged config as one line ("" if it has none)."""
    data = yaml.safe_load(packaged_config(name).read_text()) or {}
    return " ".join(str(data.get("description", "")).split())


def add_configs_parser(subparsers: Any) -> None:
    """``ctxbudget configs [NAME]``: list the packaged configs, or print one (to copy and edit)."""
    p = subparsers.add_parser("configs", help="list the packaged configs (or print one)",
                              description="List the configs shipped with ctxbudget; with NAME, print that "
                                          "config's YAML (e.g. 'ctxbudget configs quickstart > my.yaml').")
    p.add_argument("name", nargs="?", help="packaged config to print")
    p.set_defaults(func=_run_configs)


def _run_configs(args: Any) -> int:
    if args.name:
        print(packaged_config(args.name).read_text(), end="")
        return 0
    names = config_names()
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {describe_config(name)}")
    return 0
