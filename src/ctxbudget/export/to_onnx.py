"""ONNX export of a classifier (``torch.onnx``), checked with onnxruntime when it is installed."""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from .check import check_logits, probe_inputs

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install \"ctxbudget[export]\"") from None
    return onnx


def export_onnx(classifier: nn.Module, input_shape: tuple[int, int, int], path: str | Path, *,
                dynamic_batch: bool = True) -> dict:
    """Write ``classifier`` (pixels in [0, 1], B×C×H×W → logits B×K) to ``path`` as ONNX.

    ``dynamic_batch=False`` fixes the batch dimension to 1 (what most complete verifiers expect).
    The graph is checked with ``onnx.checker``; with onnxruntime installed, its logits on probe
    inputs must match PyTorch's (``check.RTOL``). Returns ``{"path", "opset", "checked_with",
    "max_abs_diff"}`` (``checked_with`` None and ``max_abs_diff`` None without onnxruntime).
    """
    onnx = _require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = classifier.eval().cpu()
    batch = 2 if dynamic_batch else 1
    example = probe_inputs(input_shape, batch)
    kwargs: dict[str, Any] = {}
    if dynamic_batch:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript-based exporter: no onnxscript needed, exact same graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=OPSET, **kwargs)
    onnx.checker.check_model(onnx.load(str(path)))
    info: dict[str, Any] = {"path": str(path), "opset": OPSET, "checked_with": None, "max_abs_diff": None}
    try:
        import onnxruntime as ort
    except ImportError:
        return info
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = probe_inputs(input_shape, 8 if dynamic_batch else 1)
    if dynamic_batch:
        out = session.run(None, {INPUT_NAME: x.numpy()})[0]
    else:
        out = session.run(None, {INPUT_NAME: x[:1].numpy()})[0]
    info["max_abs_diff"] = check_logits(model, x if dynamic_batch else x[:1], out, f"ONNX model {path}")
    info["checked_with"] = f"onnxruntime {ort.__version__}"
    return info
