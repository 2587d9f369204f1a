"""VNN-LIB export: per-example input boxes and the margin property, in the VNN-COMP layout.

One file per (example, budget kind)::

    (declare-const X_i Real)   i = 0 … n−1: the input, C×H×W flattened row-major, pixels in [0, 1]
    (declare-const Y_j Real)   j = 0 … K−1: the logits
    (assert (>= X_i lo_i)) (assert (<= X_i hi_i))      the clipped box [max(x−ε, 0), min(x+ε, 1)]
    (assert (or (and (>= Y_j Y_y)) …))                 j ≠ y: the UNSAFE set

VNN-COMP convention: the property describes the unsafe outputs (some class j ≠ y scores at least
as high as the label y); a verifier that proves it unsatisfiable ("unsat"/"safe") certifies the
example on that box. The box is in the model's input space: the exported classifier contains its
``Normalize`` layer, so X is in pixel units.

Bounds are written as the shortest decimal of the float32 value's exact float64 expansion, in
positional notation (no exponent), so reading a bound as float64 gives exactly the float32 bound
and ``read_vnnlib`` returns exactly ``input_box(x, ε(x))``.

Beside the ``vnnlib/`` folder, :func:`export_vnnlib` writes ``model.onnx`` (batch 1),
``instances.csv`` (``onnx,vnnlib,timeout`` per line, paths relative to the folder),
``abcrown.yaml`` (α,β-CROWN: ``python abcrown.py --config DIR/abcrown.yaml``; it states the
device, ``general: device: cpu|cuda``, since α,β-CROWN's default ``cuda`` fails without a GPU) and
``manifest.json`` (examples, labels, predictions, budget kinds, files with the sha256 of each, and
ctxbudget's own verdict per instance: certified / not certified / misclassified with the smallest
certified margin lower bound, ``verdicts.py``).

The boxes written are the boxes certified: ε(x) is a float32 network output whose last bits depend
on the batch it was computed in, the thread count and the CPU kind (matrix-product blocking), so a
re-computation elsewhere may differ from the file by a few units in the last place. The sha256 in
the manifest tells a changed file from such a re-computation (``scripts/check_vnnlib_export.py``;
the rule in docs/method.md, "Budgets across batches, threads and machines").
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..budgets import BUDGET_KINDS, UniformBudget, input_box
from ..errors import UserError
from ..run import Run, atomic_write_bytes
from .to_onnx import _require_onnx, export_onnx
from .verdicts import VERDICT_METHODS, instance_verdicts

KINDS = BUDGET_KINDS
_BOUND = re.compile(r"\(assert\s+\((<=|>=)\s+X_(\d+)\s+([^\s()]+)\s*\)\s*\)")
_UNSAFE = re.compile(r"\(and\s+\(>=\s+Y_(\d+)\s+Y_(\d+)\s*\)\s*\)")
_DECL = re.compile(r"\(declare-const\s+([XY])_(\d+)\s+Real\s*\)")


def format_bound(value: float | np.floating) -> str:
    """Decimal text of a float32 bound that parses back (as float64) to exactly that float32 value."""
    v = float(np.float32(value)) + 0.0          # exact float64 of the float32 value; −0.0 → 0.0
    if not np.isfinite(v):
        raise ValueError(f"box bound must be finite, got {v}")
    return np.format_float_positional(v, unique=True, trim="0")


def write_vnnlib(path: str | Path, lower: np.ndarray, upper: np.ndarray, label: int, num_classes: int,
                 comment: str = "") -> None:
    """Write one VNN-LIB file: the box ``[lower, upper]`` (flat float32, length n) and the unsafe set
    "some j ≠ label has Y_j ≥ Y_label". ``comment`` lines are written as ``;`` comments."""
    lo = np.asarray(lower, dtype=np.float32).reshape(-1)
    hi = np.asarray(upper, dtype=np.float32).reshape(-1)
    if lo.shape != hi.shape or lo.size == 0:
        raise ValueError(f"lower and upper must be non-empty and of equal size, got {lo.shape} and {hi.shape}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)):
        raise ValueError("box bounds must be finite with lower <= upper")
    if not 0 <= int(label) < int(num_classes) or num_classes < 2:
        raise ValueError(f"label {label} outside [0, {num_classes})")
    lines = [f"; {c}" for c in comment.splitlines()]
    lines += [f"(declare-const X_{i} Real)" for i in range(lo.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(num_classes)]
    lines.append("; input box (pixel units, the model's input space)")
    for i in range(lo.size):
        lines.append(f"(assert (>= X_{i} {format_bound(lo[i])}))")
        lines.append(f"(assert (<= X_{i} {format_bound(hi[i])}))")
    lines.append(f"; unsafe set: some class j != {label} scores at least as high as class {label}")
    lines.append("(assert (or")
    lines += [f"    (and (>= Y_{j} Y_{label}))" for j in range(num_classes) if j != label]
    lines.append("))")
    Path(path).write_text("\n".join(lines) + "\n")


def read_vnnlib(path: str | Path) -> dict[str, Any]:
    """Parse a file written by :func:`write_vnnlib` (the subset above).

    Returns ``{"lower", "upper"}`` (float64 arrays, length n, parsed exactly), ``"label"`` (y of the
    unsafe disjuncts) and ``"num_classes"``. ``ValueError`` if a bound is missing or repeated or the
    property is not the margin property.
    """
    text = Path(path).read_text()
    decl: dict[str, int] = {"X": 0, "Y": 0}
    for kind, idx in _DECL.findall(text):
        decl[kind] = max(decl[kind], int(idx) + 1)
    n, k = decl["X"], decl["Y"]
    lower = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    for op, idx, value in _BOUND.findall(text):
        target = lower if op == ">=" else upper
        i = int(idx)
        if i >= n or not np.isnan(target[i]):
            raise ValueError(f"{path}: bound {op} X_{i} repeated or undeclared")
        target[i] = float(value)
    if np.isnan(lower).any() or np.isnan(upper).any():
        raise ValueError(f"{path}: some inputs lack a lower or an upper bound")
    pairs = [(int(a), int(b)) for a, b in _UNSAFE.findall(text)]
    labels = {b for _, b in pairs}
    if len(labels) != 1:
        raise ValueError(f"{path}: expected the margin property against one label, found {sorted(labels)}")
    label = labels.pop()
    if sorted(a for a, _ in pairs) != [j for j in range(k) if j != label]:
        raise ValueError(f"{path}: the unsafe set must list every class j != {label} once")
    return {"lower": lower, "upper": upper, "label": label, "num_classes": k}


ABCROWN_DEVICES = ("cpu", "cuda")


def default_abcrown_device() -> str:
    """The device α,β-CROWN should run on, judged on this machine: ``cuda`` if torch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _abcrown_yaml(root: Path, input_shape: Sequence[int], num_classes: int, timeout: float, device: str,
                  device_reason: str) -> str:
    c, h, w = input_shape
    return (
        "# alpha,beta-CROWN config written by 'ctxbudget export --format vnnlib'.\n"
        f"#   python abcrown.py --config {root / 'abcrown.yaml'}\n"
        "# Each instance: model.onnx (pixels in [0, 1], Normalize inside) and one VNN-LIB file whose\n"
        "# property is the unsafe set (some class j != y with logit_j >= logit_y); 'safe' = certified.\n"
        "# Keys as in alpha,beta-CROWN's complete_verifier/arguments.py (checked against the Dec 2025 release).\n"
        f"# general.device: {device} ({device_reason}).\n"
        "#   alpha,beta-CROWN's own default is cuda, which fails on a machine without a GPU: set cpu or\n"
        "#   cuda for the machine that runs the verifier (or export again with --abcrown-device cpu|cuda).\n"
        "general:\n"
        f"  device: {device}\n"
        f"  root_path: {json.dumps(str(root))}\n"
        "  csv_name: instances.csv\n"
        "  complete_verifier: bab\n"
        "model:\n"
        f"  input_shape: [-1, {c}, {h}, {w}]\n"
        "data:\n"
        f"  num_outputs: {num_classes}\n"
        "bab:\n"
        f"  timeout: {timeout:g}\n"
    )


def _abcrown_device(abcrown_device: str | None) -> tuple[str, str]:
    """``(device, reason)`` for ``general: device:`` of abcrown.yaml: the one asked for, else this machine's."""
    if abcrown_device is None:
        device = default_abcrown_device()
        return device, ("the exporting machine has a CUDA GPU" if device == "cuda"
                        else "the exporting machine has no CUDA GPU")
    if abcrown_device in ABCROWN_DEVICES:
        return abcrown_device, "chosen explicitly (--abcrown-device)"
    raise UserError(f"abcrown_device must be one of {', '.join(ABCROWN_DEVICES)}, got {abcrown_device!r}")


def _write_and_read_back(out: Path, name: str, lo: np.ndarray, hi: np.ndarray, y: int, num_classes: int,
                         comment: str) -> None:
    """Write ``out / name`` (:func:`write_vnnlib`) and parse it back: the box and label must be exactly
    those written (else ``RuntimeError``)."""
    write_vnnlib(out / name, lo, hi, y, num_classes, comment=comment)
    back = read_vnnlib(out / name)
    if not (np.array_equal(back["lower"], lo.astype(np.float64))
            and np.array_equal(back["upper"], hi.astype(np.float64)) and back["label"] == y):
        raise RuntimeError(f"{name}: the box read back differs from the one written")


def export_vnnlib(run: Run, images: torch.Tensor, labels: torch.Tensor, out_dir: str | Path, *,
                  kinds: Sequence[str] = ("learned",), timeout: float = 300.0, indices: Sequence[int] | None = None,
                  write_model: bool = True, abcrown_device: str | None = None,
                  verdict_methods: Sequence[str] = VERDICT_METHODS) -> dict[str, Any]:
    """Write the VNN-LIB set of ``images`` (N×C×H×W in [0, 1], labels N) for a loaded run.

    ``kinds`` ⊆ {learned, uniform}: learned = the run's budgets ε(x) (``run.budgets`` on this
    batch), uniform = ε0 everywhere. Every file is parsed back and must give exactly
    ``input_box(x, ε)`` (else ``RuntimeError``). ``indices`` name the examples in the manifest (default
    0…N−1). ``write_model=False`` skips ``model.onnx`` (no onnx needed). ``abcrown_device`` (``cpu`` or
    ``cuda``) is written as ``general: device:`` in ``abcrown.yaml``; default: this machine's
    (:func:`default_abcrown_device`). Each example's manifest entry holds ctxbudget's own verdict on
    each of its boxes under ``verdict_methods`` (``ctxbudget.export.verdicts``). Returns the manifest.
    """
    kinds = tuple(dict.fromkeys(kinds))
    if not kinds or any(k not in KINDS for k in kinds):
        raise UserError(f"budget kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    if images.dim() != 4 or labels.shape != (images.shape[0],) or images.shape[0] == 0:
        raise UserError(f"need N×C×H×W images and N labels (N ≥ 1), got {tuple(images.shape)} / {tuple(labels.shape)}")
    if not timeout > 0:
        raise UserError(f"timeout must be positive, got {timeout}")
    device, device_reason = _abcrown_device(abcrown_device)
    if "learned" in kinds and run.kind != "learned":
        raise UserError("learned boxes need a run trained with learned budgets; this run's are uniform")
    if write_model:
        _require_onnx()                  # fail before writing anything
    out = Path(out_dir)
    (out / "vnnlib").mkdir(parents=True, exist_ok=True)
    c, h, w = (int(v) for v in images.shape[1:])
    input_shape = (c, h, w)
    classifier = run.classifier.eval()
    images, labels = images.to(run.device), labels.to(run.device)   # computed on the run's device
    with torch.no_grad():
        logits = classifier(images)
    num_classes = int(logits.shape[1])
    preds = logits.argmax(1)
    idx = list(range(len(images))) if indices is None else [int(i) for i in indices]
    budgets = {"learned": run.threat, "uniform": UniformBudget(run.eps0)}
    rows, examples = [], []
    boxes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    verdicts: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        with torch.no_grad():
            lo, hi = input_box(images, budgets[kind](images))
        boxes[kind] = (lo.reshape(len(images), -1).cpu().numpy(), hi.reshape(len(images), -1).cpu().numpy())
        verdicts[kind] = instance_verdicts(classifier, images, labels, lo, hi, methods=verdict_methods)
    for n, i in enumerate(idx):
        y = int(labels[n])
        files: dict[str, str] = {}
        hashes: dict[str, str] = {}
        for kind in kinds:
            name = f"vnnlib/{kind}_{i:05d}.vnnlib"
            lo, hi = boxes[kind][0][n], boxes[kind][1][n]
            _write_and_read_back(out, name, lo, hi, y, num_classes,
                                 comment=f"ctxbudget export: {run.run_dir}, example {i}, label {y}, {kind} budgets, "
                                         f"eps0 {run.eps0:g}\ninput: {'x'.join(map(str, input_shape))} pixels in "
                                         "[0, 1], flattened C,H,W row-major")
            files[kind] = name
            hashes[kind] = hashlib.sha256((out / name).read_bytes()).hexdigest()
            rows.append(f"model.onnx,{name},{timeout:g}")
        examples.append({"index": i, "label": y, "prediction": int(preds[n]), "files": files, "sha256": hashes,
                         "ctxbudget": {kind: verdicts[kind][n] for kind in kinds}})
    manifest: dict[str, Any] = {"run_dir": str(run.run_dir), "eps0": float(run.eps0), "training_kind": run.kind,
                                "input_shape": list(input_shape), "num_classes": num_classes, "kinds": list(kinds),
                                "timeout": timeout, "abcrown_device": device, "verdict_methods": list(verdict_methods),
                                "examples": examples, "model": None}
    if write_model:
        manifest["model"] = export_onnx(classifier, input_shape, out / "model.onnx", dynamic_batch=False)
    (out / "instances.csv").write_text("\n".join(rows) + "\n")
    (out / "abcrown.yaml").write_text(_abcrown_yaml(out.resolve(), input_shape, num_classes, timeout, device,
                                                      device_reason))
    # written last and atomically: a folder without manifest.json is an interrupted export
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
