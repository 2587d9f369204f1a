"""Independent round-trip check of a `ctxbudget export --format vnnlib` folder against its run.

    python scripts/check_vnnlib_export.py RUN_DIR EXPORT_DIR [--samples 64]

Recomputes, from the run, the boxes input_box(x, ε(x)) (and the uniform ones) of the exported
examples; parses every VNN-LIB file with a parser written here (not ctxbudget's) and requires the
bounds, read as float64, to equal the float32 boxes exactly; checks the unsafe property lists every
j ≠ y; checks instances.csv; runs model.onnx with onnxruntime at x and at random points of each box
and compares with the PyTorch logits; and at those points checks that examples certified by
CROWN-IBP have positive margins in the ONNX model too. Prints one summary line per check.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch


def parse(path: Path) -> tuple[dict[int, float], dict[int, float], list[tuple[int, int]]]:
    lower: dict[int, float] = {}
    upper: dict[int, float] = {}
    unsafe: list[tuple[int, int]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("(assert (>= X_") or line.startswith("(assert (<= X_"):
            op, var, value = line[len("(assert ("):].rstrip(")").split()
            target = lower if op == ">=" else upper
            i = int(var[2:])
            assert i not in target, f"{path}: {op} X_{i} twice"
            target[i] = float(value)
        elif line.startswith("(and (>= Y_"):
            a, b = line[len("(and (>= "):].rstrip(")").split()
            unsafe.append((int(a[2:]), int(b[2:])))
    return lower, upper, unsafe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("export_dir")
    ap.add_argument("--samples", type=int, default=64, help="random points per box for the ONNX comparison")
    args = ap.parse_args()

    import onnxruntime as ort

    from ctxbudget import load_run
    from ctxbudget.budgets import UniformBudget, input_box
    from ctxbudget.evaluate import load_split, margin_lower_bounds

    out = Path(args.export_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    run = load_run(args.run_dir)
    n = len(manifest["examples"])
    ds = load_split(run, "test")
    x, y = ds.images[:n], ds.labels[:n]
    assert [e["index"] for e in manifest["examples"]] == list(range(n))
    threats = {"learned": run.threat, "uniform": UniformBudget(run.eps0)}
    with torch.no_grad():
        boxes = {k: input_box(x, threats[k](x)) for k in manifest["kinds"]}
    files = 0
    values = 0
    for i, ex in enumerate(manifest["examples"]):
        assert ex["label"] == int(y[i])
        for kind, (lo, hi) in boxes.items():
            lower, upper, unsafe = parse(out / ex["files"][kind])
            want_lo = lo[i].reshape(-1).double().numpy()
            want_hi = hi[i].reshape(-1).double().numpy()
            got_lo = np.array([lower[j] for j in range(want_lo.size)])
            got_hi = np.array([upper[j] for j in range(want_hi.size)])
            assert len(lower) == len(upper) == want_lo.size
            assert np.array_equal(got_lo, want_lo) and np.array_equal(got_hi, want_hi), f"{ex['files'][kind]} differs"
            k = manifest["num_classes"]
            assert sorted(unsafe) == [(j, ex["label"]) for j in range(k) if j != ex["label"]]
            files += 1
            values += 2 * want_lo.size
    print(f"boxes: {files} VNN-LIB files, {values} bounds parsed as float64 == input_box(x, eps(x)) in float32 exactly")

    rows = list(csv.reader((out / "instances.csv").open()))
    assert len(rows) == files and all((out / r[0]).is_file() and (out / r[1]).is_file() and float(r[2]) > 0 for r in rows)
    print(f"instances.csv: {len(rows)} rows, every onnx/vnnlib path exists, timeout {rows[0][2]} s")

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    g = torch.Generator().manual_seed(0)
    max_diff = 0.0
    points = 0
    checked_certified = 0
    for kind, (lo, hi) in boxes.items():
        with torch.no_grad():
            cert = (margin_lower_bounds(run.classifier, lo, hi, y, "crown-ibp").min(1).values > 0) & \
                   (run.classifier(x).argmax(1) == y)
        for i in range(n):
            t = torch.rand((args.samples, *x.shape[1:]), generator=g)
            pts = torch.cat([x[i:i + 1], lo[i:i + 1], hi[i:i + 1], lo[i] + t * (hi[i] - lo[i])])
            onnx_logits = np.concatenate([sess.run(None, {name: p[None].numpy()})[0] for p in pts])
            with torch.no_grad():
                ref = run.classifier(pts).numpy()
            max_diff = max(max_diff, float(np.abs(onnx_logits - ref).max()))
            points += len(pts)
            if bool(cert[i]):
                margins = onnx_logits[:, int(y[i])][:, None] - np.delete(onnx_logits, int(y[i]), axis=1)
                assert margins.min() > 0, f"example {i} certified under {kind} budgets but ONNX margin {margins.min()}"
                checked_certified += 1
    print(f"model.onnx: {points} points (x, box corners lo/hi, uniform samples in the box): "
          f"max |onnx - pytorch| = {max_diff:.3g}")
    print(f"certified by CROWN-IBP: {checked_certified} (example, budget kind) pairs; all sampled ONNX margins > 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
