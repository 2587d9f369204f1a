"""Pretrained models by name: a registry of final weights shipped inside the package.

``ctxbudget models list`` / ``show NAME`` read the registry; every command that takes a run
directory (``evaluate``, ``visualize``, ``certify``, ``export``, ``report``) and
``ctxbudget.load_run`` also take a registered model's name (a run directory wins when both exist).
``ctxbudget models register RUN_DIR --name NAME`` adds a finished, evaluated run.

- :mod:`.manifest`: the registry folder (packaged ``ctxbudget/pretrained``, ``$CTXBUDGET_MODELS``
  or a ``root`` argument), ``manifest.json`` and its entries, the size budget;
- :mod:`.load`: look a name up, check the weights file's size and sha256, build a ``Run``;
- :mod:`.register`: add a run (final weights, config, results, budget statistics);
- :mod:`.commands`: the ``ctxbudget models`` subcommands.

The weights file format is :mod:`ctxbudget.final_weights` (what ``train`` writes beside every
finished run).
"""
from __future__ import annotations

from .load import find_model, get_model, load_model, read_weights, unknown_target
from .manifest import MODELS_ENV, SIZE_BUDGET, ModelEntry, Registry, is_model_name, packaged_root, registry_root
from .register import register_run

__all__ = ["MODELS_ENV", "SIZE_BUDGET", "ModelEntry", "Registry", "find_model", "get_model", "is_model_name",
           "load_model", "packaged_root", "read_weights", "register_run", "registry_root", "unknown_target"]
