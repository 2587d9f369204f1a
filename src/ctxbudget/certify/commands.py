"""``ctxbudget certify RUN IMAGE... [--json]``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..devices import add_device_argument
from ..devices import resolve as resolve_device
from ..errors import UserError
from ..evaluate import parse_methods
from ..evaluate.commands import RUN_HELP
from ..run import load_run
from .core import certify_images
from .images import read_image

HELP = """\
Is this image certified, and what budgets does the generator give it? For each image: the
prediction, and for the run's learned budgets and for uniform eps0, each method's margin lower
bound (min over j != y of a certified lower bound of logit_y - logit_j; > 0 = certified) and the
verdict; the budget map is saved as PNG. Certified images are attacked with PGD as a soundness check.

Images: PNG, JPEG (decoded by Pillow through matplotlib) or .npy (H×W, H×W×C or C×H×W; uint8 or
floats in [0, 1]); converted to the model's channels (RGB→grey by luma, grey→RGB) and resized to
its height×width (same aspect ratio within 2 %, else --stretch); a resize by more than 2× in
either dimension is reported (a note on stderr, "resize_note" in --json).

examples:
  ctxbudget certify runs/quick digit.png
  ctxbudget certify quickstart-learned digit.png      # a pretrained model: no training, no data needed
  ctxbudget certify runs/quick a.png b.npy --label 7 --label 3 --bounds ibp,crown-ibp,crown --json
  ctxbudget certify runs/quick scan.jpg --invert      # dark digit on white paper, MNIST model
"""


def add_certify_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("certify", help="certify image files (prediction, certificates, budget map)",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN", help=RUN_HELP)
    p.add_argument("images", metavar="IMAGE", nargs="+", help="PNG, JPEG or .npy files")
    p.add_argument("--bounds", default="ibp,crown-ibp",
                   help="bound methods, comma-separated (ibp, crown-ibp, crown, alpha-crown)")
    p.add_argument("--label", type=int, action="append", default=None, metavar="Y",
                   help="true class of each image, in order (repeat once per image); default: certify the prediction")
    p.add_argument("--out", default="certify-maps", metavar="DIR", help="folder for the budget maps (default: certify-maps)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--stretch", action="store_true", help="resize even when the aspect ratio differs")
    p.add_argument("--invert", action="store_true", help="use 1 - pixel (dark object on light background)")
    p.add_argument("--attack-steps", type=int, default=20, help="PGD steps of the soundness check (0: skip)")
    p.add_argument("--checkpoint", default="final", choices=["final", "best", "last"], help="weights to use")
    add_device_argument(p)
    p.set_defaults(func=run_certify)


def _line(kind: str, r: dict[str, Any]) -> str:
    s = r["budget_stats"][kind]
    what = (f"learned budgets (eps in [{s['min']:.3g}, {s['max']:.3g}], geometric mean {s['geo_mean']:.3g})"
            if kind == "learned" else f"uniform eps0 {r['eps0']:g}")
    lbs = ", ".join(f"{m} {v:+.4g}" for m, v in r["margin_lower_bound"][kind].items())
    good = [m for m, v in r["certified"][kind].items() if v]
    verdict = f"CERTIFIED by {', '.join(good)}" if good else "not certified"
    return f"  {what}: {verdict}; margin lower bound {lbs}"


def run_certify(args: Any) -> int:
    from ..viz import save_figure
    from .figure import budget_map_figure

    methods = list(parse_methods(args.bounds))
    if args.label is not None and len(args.label) != len(args.images):
        raise UserError(f"--label given {len(args.label)} times for {len(args.images)} images (one per image)")
    if args.attack_steps < 0:
        raise UserError(f"--attack-steps must be >= 0, got {args.attack_steps}")
    run = load_run(args.run_dir, checkpoint=args.checkpoint, device=resolve_device(args.device))
    shape = run.input_shape
    loaded = [read_image(p, shape, stretch=args.stretch, invert=args.invert) for p in args.images]
    for img in loaded:
        if img.note:
            print(f"note: {img.note}", file=sys.stderr)
    x = torch.stack([img.x for img in loaded])
    reports, budgets = certify_images(run, x, labels=args.label, methods=methods,
                                      attack_steps=args.attack_steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = "learned" if "learned" in budgets else "uniform"
    lower, upper = run.limits()
    stems: dict[str, int] = {}
    for i, (path, r) in enumerate(zip(args.images, reports)):
        stem = Path(path).stem
        stems[stem] = stems.get(stem, 0) + 1
        name = stem if stems[stem] == 1 else f"{stem}-{stems[stem]}"
        verdict = "certified" if r["certified_any"][kind] else "not certified"
        fig = budget_map_figure(x[i], budgets[kind][i], lower, upper,
                                f"{Path(path).name}: prediction {r['class']}, {verdict} under {kind} budgets "
                                f"(eps0 {run.eps0:g})")
        r["file"] = str(path)
        r["original_size"] = list(loaded[i].original_size)
        r["resize_note"] = loaded[i].note
        r["budget_map"] = str(save_figure(fig, out / f"{name}-budgets", formats=("png",))[0])
    if args.json:
        model = {"model": run.model} if run.model is not None else {}
        print(json.dumps({"run_dir": str(run.run_dir), **model, "methods": methods, "images": reports}, indent=2))
        return 0
    for r in reports:
        label = "" if r["correct"] is None else f", label {r['label']} ({'correct' if r['correct'] else 'WRONG'})"
        print(f"{r['file']}: prediction {r['prediction']} ({r['class']}){label}")
        for kind in r["certified"]:
            print(_line(kind, r))
        print(f"  budget map: {r['budget_map']}")
    return 0
