"""``ctxbudget export RUN --format onnx|torchscript|vnnlib --out DIR``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..budgets import BUDGET_KINDS
from ..devices import add_device_argument
from ..devices import resolve as resolve_device
from ..errors import UserError
from ..evaluate.commands import RUN_HELP
from ..evaluate.evaluate import load_split
from ..run import load_run
from .to_onnx import export_onnx
from .to_torchscript import export_torchscript
from .vnnlib import KINDS, export_vnnlib

HELP = """\
Export a trained run's classifier (Normalize included: inputs are pixels in [0, 1]) or per-example
input boxes for complete verifiers.

  onnx         DIR/model.onnx (dynamic batch), checked against PyTorch with onnxruntime if installed
  torchscript  DIR/model.pt (torch.jit.load), checked against PyTorch
  vnnlib       DIR/vnnlib/{learned,uniform}_NNNNN.vnnlib (box + unsafe margin property),
               DIR/model.onnx (batch 1), DIR/instances.csv, DIR/abcrown.yaml (general.device: this
               machine's, or --abcrown-device), DIR/manifest.json (labels, predictions and
               ctxbudget's own verdict per instance: certified by IBP / CROWN-IBP or not, with the
               smallest certified margin lower bound)

examples:
  ctxbudget export runs/quick --format onnx --out export/quick
  ctxbudget export quickstart-learned --format torchscript --out export/pretrained   # a registered model
  ctxbudget export runs/quick --format vnnlib --limit 20 --budget both --out export/quick-vnnlib
  python abcrown.py --config export/quick-vnnlib/abcrown.yaml      # alpha,beta-CROWN

ONNX needs: pip install "ctxbudget[export]"
"""


def add_export_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="export to ONNX / TorchScript, or VNN-LIB boxes for complete verifiers",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN", help=RUN_HELP)
    p.add_argument("--format", required=True, choices=["onnx", "torchscript", "vnnlib"], help="what to write")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--checkpoint", default="final", choices=["final", "best", "last"], help="weights to export")
    p.add_argument("--limit", type=int, default=10, help="vnnlib: number of examples (first N of the split)")
    p.add_argument("--split", default="test", help="vnnlib: data split (default: test)")
    p.add_argument("--budget", default=None, choices=[*BUDGET_KINDS, "both"],
                   help="vnnlib: boxes under the run's learned budgets, uniform eps0, or both "
                        "(default: the budgets the run was trained with)")
    p.add_argument("--timeout", type=float, default=300.0, help="vnnlib: per-instance timeout in instances.csv (s)")
    p.add_argument("--abcrown-device", default=None, choices=["cpu", "cuda"],
                   help="vnnlib: 'general: device:' in abcrown.yaml, where alpha,beta-CROWN runs (default: this "
                        "machine's, cuda if torch sees a GPU, else cpu)")
    p.add_argument("--data-dir", default=None, help="data root (default: the run's, else $CTXBUDGET_DATA)")
    add_device_argument(p)
    p.set_defaults(func=run_export)


def run_export(args: Any) -> int:
    run = load_run(args.run_dir, checkpoint=args.checkpoint, device=resolve_device(args.device))
    out = Path(args.out)
    shape = run.input_shape
    if args.format == "onnx":
        info = export_onnx(run.classifier, shape, out / "model.onnx")
        checked = (f"logits match PyTorch (max |diff| {info['max_abs_diff']:.3g}, {info['checked_with']})"
                   if info["checked_with"] else "not run (onnxruntime not installed)")
        print(f"wrote {info['path']} (opset {info['opset']}); check: {checked}")
    elif args.format == "torchscript":
        info = export_torchscript(run.classifier, shape, out / "model.pt")
        print(f"wrote {info['path']}; check: logits match PyTorch (max |diff| {info['max_abs_diff']:.3g})")
    else:
        if args.limit < 1:
            raise UserError(f"--limit must be >= 1, got {args.limit}")
        ds = load_split(run, args.split, args.data_dir)
        n = min(args.limit, len(ds))
        budget = args.budget or run.kind
        if run.kind == "uniform" and budget in ("learned", "both"):
            raise UserError(f"{args.run_dir} was trained with uniform budgets (no generator); use --budget uniform")
        kinds = KINDS if budget == "both" else (budget,)
        manifest = export_vnnlib(run, ds.images[:n], ds.labels[:n], out, kinds=kinds, timeout=args.timeout,
                                  abcrown_device=args.abcrown_device)
        model = manifest["model"]
        wrong = sum(e["label"] != e["prediction"] for e in manifest["examples"])
        print(f"wrote {n * len(kinds)} VNN-LIB files ({', '.join(kinds)} budgets, eps0 {run.eps0:g}) for the first "
              f"{n} {args.split} examples ({wrong} misclassified: trivially unsafe) to {out / 'vnnlib'}; every "
              "box read back equals input_box(x, eps(x)) exactly")
        verdicts = [v["verdict"] for e in manifest["examples"] for v in e["ctxbudget"].values()]
        print(f"ctxbudget's verdicts ({', '.join(manifest['verdict_methods'])}; manifest.json): "
              f"{verdicts.count('certified')} certified, {verdicts.count('not certified')} not certified, "
              f"{verdicts.count('misclassified')} misclassified of {len(verdicts)} instances")
        print(f"wrote {out / 'model.onnx'} (batch 1; max |diff| vs PyTorch {model['max_abs_diff']}), "
              f"{out / 'instances.csv'}, {out / 'abcrown.yaml'} (general.device: {manifest['abcrown_device']}), "
              f"{out / 'manifest.json'}")
    return 0
