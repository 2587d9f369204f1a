"""The registry folder and its ``manifest.json``: where it is, what an entry holds, reading and writing.

A registry is a folder holding ``manifest.json`` and one weights file per stored model::

    manifest.json                        {"format": 1, "models": [entry, …]}
    quickstart-learned-<sha12>.pt         a final-weights file (``ctxbudget.final_weights``)

The packaged registry is ``ctxbudget/pretrained/`` (shipped in the wheel); ``$CTXBUDGET_MODELS``
or a ``root`` argument points at another folder instead. Weights files are named after the model
and the first 12 hex digits of their sha256, so replacing a model writes a new file, then the
manifest, then removes the old file: the manifest never names a file it does not describe.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from ..errors import RegistryError
from ..run import atomic_write_bytes

MODELS_ENV = "CTXBUDGET_MODELS"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
#: bytes of weights the packaged registry may ship, all stored models together (enforced by a test
#: and by ``ctxbudget models register``)
SIZE_BUDGET = 25_000_000
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def packaged_root() -> Path:
    """The registry shipped inside the package (``ctxbudget/pretrained``)."""
    return Path(str(resources.files("ctxbudget") / "pretrained"))


def registry_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$CTXBUDGET_MODELS`` if set, else the packaged registry."""
    if root is not None:
        return Path(root)
    env = os.environ.get(MODELS_ENV)
    return Path(env).expanduser() if env else packaged_root()


def is_model_name(text: str) -> bool:
    """Whether ``text`` can name a model: lower-case letters, digits, ``.``, ``_``, ``-`` (no path separators)."""
    return NAME_PATTERN.fullmatch(text) is not None and not text.endswith(".")


def check_name(name: str) -> str:
    """``name`` if it can name a model, else RegistryError."""
    if not is_model_name(name):
        raise RegistryError(f"model name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")
    return name


@dataclass
class ModelEntry:
    """One model of a registry (one element of ``manifest.json``'s ``models``).

    ``config``: the run's full config (nested dict, the layout of config.yaml); ``results``: its
    ``results.json`` as committed; ``budget_stats``: the ``budget_stats.json`` that ``visualize``
    wrote, if any; ``weights``: ``{"file", "sha256", "size", "dtype", "parameters"}`` for a stored
    model, None for a model listed as not stored; ``command``: the command that trains it;
    ``source``: where it was registered from. ``root`` is the registry folder (not written).
    """

    name: str
    description: str
    command: str
    dataset: str
    schedule: str
    head: Optional[str]
    epoch: Optional[int]
    step: Optional[int]
    config: dict
    results: dict
    weights: Optional[dict] = None
    budget_stats: Optional[dict] = None
    source: dict = field(default_factory=dict)
    root: Path = field(default=Path("."), compare=False)

    @property
    def stored(self) -> bool:
        """Whether the registry holds the weights (False: listed with how to train it)."""
        return self.weights is not None

    @property
    def kind(self) -> str:
        return str(self.config.get("budget", {}).get("kind", "?"))

    @property
    def eps0(self) -> float:
        return float(self.config.get("budget", {}).get("eps0", float("nan")))

    @property
    def model(self) -> str:
        return str(self.config.get("model", {}).get("name", "?"))

    @property
    def size(self) -> Optional[int]:
        """Bytes of the weights file (None when not stored)."""
        return None if self.weights is None else int(self.weights["size"])

    @property
    def weights_path(self) -> Optional[Path]:
        return None if self.weights is None else self.root / str(self.weights["file"])

    @property
    def clean_err(self) -> Optional[float]:
        value = self.results.get("clean_err")
        return None if value is None else float(value)

    @property
    def verified_err(self) -> Optional[float]:
        """Verified error under the budgets the model was trained with (learned or uniform ε0)."""
        value = self.results.get("verified_err", {}).get(self.kind)
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        """The manifest record (``stored`` spelled out; ``root`` left out)."""
        out = asdict(self)
        out.pop("root")
        out = {"name": out.pop("name"), "stored": self.stored, **out}
        return {k: v for k, v in out.items() if v is not None or k in ("weights", "head")}

    @classmethod
    def from_dict(cls, data: Any, root: Path, where: Path) -> ModelEntry:
        """An entry from its manifest record; RegistryError naming the manifest when a key is missing."""
        if not isinstance(data, dict):
            raise RegistryError(f"{where}: every element of 'models' must be an object")
        need = ("name", "description", "command", "dataset", "schedule", "config", "results")
        missing = [k for k in need if k not in data]
        if missing:
            raise RegistryError(f"{where}: model {data.get('name', '?')!r} lacks {', '.join(missing)}")
        weights = data.get("weights")
        if weights is not None and not all(k in weights for k in ("file", "sha256", "size")):
            raise RegistryError(f"{where}: model {data['name']!r}: weights need file, sha256 and size")
        return cls(name=str(data["name"]), description=str(data["description"]), command=str(data["command"]),
                   dataset=str(data["dataset"]), schedule=str(data["schedule"]), head=data.get("head"),
                   epoch=data.get("epoch"), step=data.get("step"), config=dict(data["config"]),
                   results=dict(data["results"]), weights=weights, budget_stats=data.get("budget_stats"),
                   source=dict(data.get("source") or {}), root=root)


@dataclass
class Registry:
    """A registry folder and the entries of its manifest (empty when the folder has no manifest)."""

    root: Path
    models: list[ModelEntry]

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @classmethod
    def load(cls, root: str | Path | None = None) -> Registry:
        """Read ``ROOT/manifest.json`` (``registry_root(root)``); RegistryError if it is not a manifest."""
        folder = registry_root(root)
        path = folder / MANIFEST
        if not path.is_file():
            return cls(folder, [])
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"model registry manifest {path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise RegistryError(f"model registry manifest {path} has no 'models' list")
        if int(data.get("format", 0)) > MANIFEST_FORMAT:
            raise RegistryError(f"model registry manifest {path} was written by a newer ctxbudget; upgrade it")
        return cls(folder, [ModelEntry.from_dict(m, folder, path) for m in data["models"]])

    def get(self, name: str) -> Optional[ModelEntry]:
        """The entry named ``name``, or None."""
        return next((m for m in self.models if m.name == name), None)

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def stored_bytes(self) -> int:
        """Bytes of all stored weights files (as the manifest records them)."""
        return sum(m.size or 0 for m in self.models)

    def save(self) -> None:
        """Write ``manifest.json`` atomically (models sorted by name)."""
        models = sorted(self.models, key=lambda m: m.name)
        text = json.dumps({"format": MANIFEST_FORMAT, "models": [m.to_dict() for m in models]}, indent=1)
        atomic_write_bytes(self.manifest_path, (text + "\n").encode())
