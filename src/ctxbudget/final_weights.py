"""The registrable final-weights file of a finished run: ``final_weights.pt`` + ``final_weights.json``.

``train`` (and so ``reproduce``) writes both beside ``final.pt`` when a run finishes, atomically:

    final_weights.pt     torch.save of {"format": "ctxbudget-final-weights", "version": 1,
                         "classifier": state dict, "generator": state dict or None (uniform budgets),
                         "epoch": int, "step": int}; every floating tensor in float32, no optimizer
                         state; readable with ``torch.load(..., weights_only=True)``
    final_weights.json   {"file", "sha256", "size", "epoch", "step", "dtype", "parameters"}

The same bytes are what the model registry (``ctxbudget.registry``) stores per model, so
``ctxbudget models register`` copies the file as it is. For runs finished before this file existed
the registry extracts the same payload from ``final.pt`` or from ``checkpoints/last.pt`` at the
run's last epoch (:func:`payload_from_checkpoint`).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .errors import RegistryError
from .run import Checkpoint, atomic_write_bytes

FINAL_WEIGHTS = "final_weights.pt"
FINAL_WEIGHTS_INFO = "final_weights.json"
FORMAT = "ctxbudget-final-weights"
VERSION = 1


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A compact CPU copy of a state dict with every floating tensor in float32 (other dtypes kept)."""
    out = {}
    for key, value in state.items():
        t = value.detach().to("cpu")
        out[key] = (t.to(torch.float32) if t.is_floating_point() else t).clone().contiguous()
    return out


@dataclass
class FinalWeights:
    """Classifier and generator weights of a finished run (``generator`` None for uniform budgets)."""

    classifier: dict[str, torch.Tensor]
    generator: Optional[dict[str, torch.Tensor]]
    epoch: Optional[int]
    step: Optional[int]

    def to_bytes(self) -> bytes:
        """The file's bytes: ``torch.save`` of the payload dict, tensors in float32."""
        payload = {"format": FORMAT, "version": VERSION, "classifier": _float32(self.classifier),
                   "generator": None if self.generator is None else _float32(self.generator),
                   "epoch": self.epoch, "step": self.step}
        buf = io.BytesIO()
        torch.save(payload, buf)
        return buf.getvalue()

    def parameters(self) -> dict[str, int]:
        """Number of values per network (``{"classifier": n, "generator": m}``; m = 0 for uniform budgets)."""
        count = lambda sd: int(sum(t.numel() for t in sd.values())) if sd else 0
        return {"classifier": count(self.classifier), "generator": count(self.generator)}

    def to_checkpoint(self) -> Checkpoint:
        """As a weights-only :class:`ctxbudget.run.Checkpoint` (what ``load_run`` reads)."""
        return Checkpoint(classifier=self.classifier, generator=self.generator, epoch=self.epoch, step=self.step)


def payload_from_checkpoint(ckpt: Checkpoint) -> FinalWeights:
    """The final weights held by a checkpoint (``final.pt`` or ``checkpoints/last.pt``), optimizer dropped."""
    return FinalWeights(classifier=ckpt.classifier, generator=ckpt.generator, epoch=ckpt.epoch, step=ckpt.step)


def info_for(data: bytes, weights: FinalWeights, file: str = FINAL_WEIGHTS) -> dict[str, Any]:
    """The ``final_weights.json`` record of the file bytes ``data`` holding ``weights``."""
    return {"file": file, "sha256": sha256_bytes(data), "size": len(data), "epoch": weights.epoch,
            "step": weights.step, "dtype": "float32", "parameters": weights.parameters()}


def write_final_weights(run_dir: Path, ckpt: Checkpoint) -> dict[str, Any]:
    """Write ``RUN_DIR/final_weights.pt`` and its ``final_weights.json`` atomically; return the json record."""
    weights = payload_from_checkpoint(ckpt)
    data = weights.to_bytes()
    info = info_for(data, weights)
    atomic_write_bytes(Path(run_dir) / FINAL_WEIGHTS, data)
    atomic_write_bytes(Path(run_dir) / FINAL_WEIGHTS_INFO, (json.dumps(info, indent=2) + "\n").encode())
    return info


def verify_bytes(data: bytes, path: Path, sha256: str, size: int, what: str) -> None:
    """RegistryError (one line) when ``data`` (read from ``path``) is not ``size`` bytes with hash ``sha256``."""
    if len(data) != size:
        raise RegistryError(f"{what}: {path} is {len(data)} bytes, the manifest says {size} (truncated or "
                            "replaced); reinstall ctxbudget or register the model again")
    digest = sha256_bytes(data)
    if digest != sha256:
        raise RegistryError(f"{what}: {path} has sha256 {digest[:16]}…, the manifest says {sha256[:16]}… "
                            "(the file was modified); reinstall ctxbudget or register the model again")


def weights_from_bytes(data: bytes, path: Path) -> FinalWeights:
    """Parse a final-weights file (``torch.load(weights_only=True)``); RegistryError if it is not one."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, …
        raise RegistryError(f"{path} is not a readable final-weights file ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("classifier"), dict):
        raise RegistryError(f"{path} is not a ctxbudget final-weights file (format {FORMAT!r} expected)")
    if int(obj.get("version", 0)) > VERSION:
        raise RegistryError(f"{path} was written by a newer ctxbudget (final-weights version {obj['version']}); "
                            "upgrade ctxbudget")
    return FinalWeights(classifier=obj["classifier"], generator=obj.get("generator"), epoch=obj.get("epoch"),
                        step=obj.get("step"))
