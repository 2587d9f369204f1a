"""Take a trained classifier out of ctxbudget: ONNX, TorchScript, and VNN-LIB sets for complete verifiers.

* :func:`export_onnx` / :func:`export_torchscript` — the classifier with its ``Normalize`` layer,
  so the exported model takes pixels in [0, 1] (B×C×H×W) and returns logits (B×K); both check the
  exported model's logits against PyTorch's.
* :func:`export_vnnlib` — per-example input boxes (learned and/or uniform budgets) with the margin
  property, an ``instances.csv`` and an α,β-CROWN config (VNN-COMP layout).

The command line is ``ctxbudget export RUN --format onnx|torchscript|vnnlib --out DIR``. ONNX
needs the optional extra ``pip install "ctxbudget[export]"`` (onnx, onnxruntime).
"""
from __future__ import annotations

from .to_onnx import export_onnx
from .to_torchscript import export_torchscript
from .vnnlib import export_vnnlib, format_bound, read_vnnlib, write_vnnlib

__all__ = ["export_onnx", "export_torchscript", "export_vnnlib", "format_bound", "read_vnnlib", "write_vnnlib"]
