"""TorchScript export of a classifier (``torch.jit.script``), checked by reloading it."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .check import check_logits, probe_inputs


def export_torchscript(classifier: nn.Module, input_shape: tuple[int, int, int], path: str | Path) -> dict:
    """Script ``classifier`` (pixels in [0, 1] → logits), save it to ``path`` and check the reloaded
    module's logits against the original's on probe inputs. Returns ``{"path", "max_abs_diff"}``.
    Load it without ctxbudget: ``torch.jit.load(path)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = classifier.eval().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is in maintenance mode and says so
        scripted = torch.jit.script(model)
        scripted.save(str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")
    x = probe_inputs(input_shape)
    with torch.no_grad():
        out = loaded(x).numpy()
    info: dict[str, Any] = {"path": str(path), "max_abs_diff": check_logits(model, x, out, f"TorchScript {path}")}
    return info
