"""Look a model up by name and load it as a :class:`ctxbudget.run.Run`, its weights checked first.

``load_model`` reads the weights file whole, compares its size and sha256 with the manifest (a
truncated or modified file is one clear line, never a half-loaded model), parses it with
``torch.load(weights_only=True)`` and builds the networks from the manifest's config. The data
root of the run it came from is not used: a registered model reads its data set from
``--data-dir``, else ``$CTXBUDGET_DATA``, else the default root.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..config import stored_config_from_dict
from ..errors import RegistryError
from ..final_weights import FinalWeights, verify_bytes, weights_from_bytes
from ..run import Run, assemble_run
from .manifest import ModelEntry, Registry, is_model_name


def unknown_target(text: str) -> RegistryError:
    """The one line for a name that is neither a run directory nor a registered model."""
    return RegistryError(f"no run directory or registered model named {text}; `ctxbudget models list` shows the models")


def find_model(name: str, root: str | Path | None = None) -> Optional[ModelEntry]:
    """The registered model ``name`` (registry ``root``, see ``registry_root``), or None if there is none.

    A text that cannot be a model name (a path with separators, …) is None without reading the manifest."""
    if not is_model_name(name):
        return None
    return Registry.load(root).get(name)


def get_model(name: str, root: str | Path | None = None) -> ModelEntry:
    """The registered model ``name``; RegistryError (listing the names) if there is none."""
    registry = Registry.load(root) if is_model_name(name) else None
    entry = registry.get(name) if registry is not None else None
    if entry is None:
        known = ", ".join(registry.names()) if registry is not None and registry.models else "none"
        raise RegistryError(f"no registered model named {name} (registered: {known}); "
                            "`ctxbudget models list` shows the models")
    return entry


def not_stored(entry: ModelEntry) -> RegistryError:
    """The one line for a model the registry lists but does not hold the weights of."""
    return RegistryError(f"model {entry.name} is listed but its weights are not stored in the registry; "
                         f"train it with: {entry.command}")


def read_weights(entry: ModelEntry) -> FinalWeights:
    """The entry's weights, after checking the file's size and sha256 against the manifest."""
    path = entry.weights_path
    if path is None or entry.weights is None:
        raise not_stored(entry)
    what = f"weights of model {entry.name}"
    if not path.is_file():
        raise RegistryError(f"{what}: {path} is missing; reinstall ctxbudget or register the model again")
    data = path.read_bytes()
    verify_bytes(data, path, str(entry.weights["sha256"]), int(entry.weights["size"]), what)
    return weights_from_bytes(data, path)


def load_model(entry: ModelEntry | str, device: str | torch.device = "cpu", checkpoint: str = "final",
               root: str | Path | None = None) -> Run:
    """A registered model (an entry, or a name looked up in ``root``) as a :class:`Run` in eval mode.

    ``run.model`` is its name, ``run.run_dir`` the registry folder (read only: commands write to
    ``run.output_dir``, ``runs/NAME``), ``run.meta`` names the weights file, epoch and step."""
    if isinstance(entry, str):
        entry = get_model(entry, root)
    if checkpoint != "final":
        raise RegistryError(f"model {entry.name} is registered with its final weights only; "
                            f"checkpoint {checkpoint!r} needs the run directory")
    weights = read_weights(entry)
    cfg = stored_config_from_dict(entry.config)
    cfg.data.root = None                       # the training machine's data root means nothing here
    path = entry.weights_path
    assert path is not None                    # read_weights refused a model without weights
    run = assemble_run(cfg, weights.to_checkpoint(), path, entry.root, device=device, model=entry.name)
    run.meta["model"] = entry.name
    return run
