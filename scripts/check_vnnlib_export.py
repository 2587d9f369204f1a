"""Independent round-trip check of a `ctxbudget export --format vnnlib` folder against its run.

    python scripts/check_vnnlib_export.py RUN_DIR EXPORT_DIR [--samples 64]

Checks every VNN-LIB file's sha256 against the manifest (a file changed after the export, even by
one unit in the last place, fails: "differs"); parses every file with a parser written here (not
ctxbudget's) and compares the bounds, read as float64, with the float32 boxes input_box(x, ε(x))
(and the uniform ones) recomputed from the run on this machine: equal ("exactly"), or, since ε(x)'s
last bits depend on the batch, the thread count and the CPU kind, within MAX_ULP units in the last
place of float32 — then it says how many bounds differ and by how much, and checks the boxes as
written (they are the boxes the export certified); further apart fails ("differs"). Checks the
unsafe property lists every j ≠ y; checks instances.csv; checks that every (example, box) the
manifest calls certified is still certified by CROWN-IBP on the box as written; runs model.onnx
with onnxruntime at x and at random points of each written box and compares with the PyTorch
logits, and at those points checks that certified examples have positive margins in the ONNX model
too. Prints one summary line per check.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

#: largest distance (float32 units in the last place) between a written bound and this machine's
#: recomputation that counts as the last-bit noise of ε(x) (measured: a few ulp; docs/method.md)
MAX_ULP = 64


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Units in the last place between float32 arrays of values in [0, 1] (non-negative floats order as ints)."""
    return np.abs(a.astype(np.float32).view(np.int32).astype(np.int64) - b.astype(np.float32).view(np.int32).astype(np.int64))


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
    differing = 0
    worst_ulp = 0
    written: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for kind in boxes:
        written[kind] = (torch.empty_like(boxes[kind][0]), torch.empty_like(boxes[kind][1]))
    for i, ex in enumerate(manifest["examples"]):
        assert ex["label"] == int(y[i])
        for kind, (lo, hi) in boxes.items():
            path = out / ex["files"][kind]
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest == ex["sha256"][kind], f"{ex['files'][kind]} differs from the export (sha256 is not the manifest's)"
            lower, upper, unsafe = parse(path)
            want_lo = lo[i].reshape(-1).double().numpy()
            want_hi = hi[i].reshape(-1).double().numpy()
            assert len(lower) == len(upper) == want_lo.size
            got_lo = np.array([lower[j] for j in range(want_lo.size)])
            got_hi = np.array([upper[j] for j in range(want_hi.size)])
            as_f32 = np.concatenate([got_lo, got_hi]).astype(np.float32).astype(np.float64)
            assert np.array_equal(as_f32, np.concatenate([got_lo, got_hi])), f"{ex['files'][kind]}: a bound is not a float32"
            ulps = np.concatenate([ulp_distance(got_lo, want_lo), ulp_distance(got_hi, want_hi)])
            assert ulps.max() <= MAX_ULP, (f"{ex['files'][kind]} differs from this machine's box by {int(ulps.max())} ulp "
                                           f"(more than the {MAX_ULP} ulp of ε(x)'s last-bit noise)")
            differing += int((ulps > 0).sum())
            worst_ulp = max(worst_ulp, int(ulps.max()))
            shape = lo[i].shape
            written[kind][0][i] = torch.from_numpy(got_lo.astype(np.float32)).view(shape)
            written[kind][1][i] = torch.from_numpy(got_hi.astype(np.float32)).view(shape)
            k = manifest["num_classes"]
            assert sorted(unsafe) == [(j, ex["label"]) for j in range(k) if j != ex["label"]]
            files += 1
            values += 2 * want_lo.size
    if differing == 0:
        print(f"boxes: {files} VNN-LIB files, {values} bounds parsed as float64 == input_box(x, eps(x)) in float32 exactly; "
              "sha256 as in the manifest")
    else:
        print(f"boxes: {files} VNN-LIB files, sha256 as in the manifest; {differing} of {values} bounds differ from this "
              f"machine's input_box(x, eps(x)) by at most {worst_ulp} ulp (float32): eps(x)'s last bits depend on the "
              "batch, the thread count and the CPU kind; the boxes are checked as written")
    boxes = written

    rows = list(csv.reader((out / "instances.csv").open()))
    assert len(rows) == files and all((out / r[0]).is_file() and (out / r[1]).is_file() and float(r[2]) > 0 for r in rows)
    print(f"instances.csv: {len(rows)} rows, every onnx/vnnlib path exists, timeout {rows[0][2]} s")

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    g = torch.Generator().manual_seed(0)
    max_diff = 0.0
    held = 0
    points = 0
    checked_certified = 0
    for kind, (lo, hi) in boxes.items():
        with torch.no_grad():
            cert = (margin_lower_bounds(run.classifier, lo, hi, y, "crown-ibp").min(1).values > 0) & \
                   (run.classifier(x).argmax(1) == y)
        for i, ex in enumerate(manifest["examples"]):
            said = ex["ctxbudget"][kind]
            if said["verdict"] == "certified" and "crown-ibp" in said["certified_by"]:
                assert bool(cert[i]), (f"example {i}: the manifest says certified by CROWN-IBP on its {kind} box, "
                                       "this machine does not")
                held += 1
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
    print(f"manifest verdicts: {held} (example, box) pairs certified by CROWN-IBP at export are certified here too")
    print(f"certified by CROWN-IBP: {checked_certified} (example, budget kind) pairs; all sampled ONNX margins > 0")
    return 0


def run_checks() -> int:
    """``main()``, with a failed check reported as one line on stderr (exit code 1), not a traceback."""
    try:
        return main()
    except AssertionError as err:
        print(f"check_vnnlib_export: FAILED: {err or 'a check failed'}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run_checks())
