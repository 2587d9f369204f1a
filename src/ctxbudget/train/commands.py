"""``ctxbudget train``: start a run from a YAML config, or resume one."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import dump_config, load_config, parse_overrides
from ..errors import UserError
from .distributed import teardown
from .trainer import resume, train

HELP = """\
Train a classifier (and, for learned budgets, the budget generator) with certified training.

examples:
  ctxbudget train --config quickstart --out runs/quick          # a packaged config (ctxbudget configs)
  ctxbudget train --config my-config.yaml --out runs/mine       # or a YAML file
  ctxbudget train --config mnist-learned-0.4 --set optim.epochs=20 --data-dir ../shared/data
  ctxbudget train --resume runs/quick                 # continue after Ctrl-C / a crash
  ctxbudget train --print-config                      # every key with its default
  torchrun --nproc-per-node 2 -m ctxbudget train --config cifar10-learned-8 --out runs/c10
"""


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a run (learned or uniform budgets)", description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="NAME|FILE",
                   help="packaged config name (list: ctxbudget configs) or YAML file; defaults apply to missing keys "
                        "(required, except with --resume or --print-config)")
    p.add_argument("--out", metavar="DIR", help="new run directory (default: runs/<config name>-<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.epochs=5 --set budget.kind=uniform (repeatable)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                   help="continue the run in DIR (or in --out) from its last checkpoint")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides the config's device)")
    p.add_argument("--data-dir", default=None, help="data root (overrides data.root)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    try:
        return _run_train(args)
    finally:
        teardown()


def _run_train(args) -> int:
    overrides = list(args.overrides)
    if args.data_dir is not None:
        overrides.append(f"data.root={args.data_dir}")
    # the data root is stored as the user gave it (a relative path stays relative, so config.yaml holds
    # no absolute path of this machine); None when it comes from $CTXBUDGET_DATA or the default
    progress = False if args.no_progress else None
    if args.resume is not None:
        run_dir = args.out if args.resume is True else args.resume
        if run_dir is None:
            raise UserError("--resume needs a run directory: --resume DIR (or --resume with --out DIR)")
        if args.config:
            raise UserError("--resume continues a run with its own config.yaml; drop --config "
                            "(use --set KEY=VALUE to change a setting, e.g. optim.epochs)")
        parsed = parse_overrides(overrides)
        resume(run_dir, overrides=parsed or None, device=args.device, progress=progress)
        return 0
    if args.config is None and not args.print_config:
        raise UserError("no config given: name one with --config NAME|FILE, e.g. ctxbudget train --config quickstart "
                        "--out runs/quick (list the packaged configs with: ctxbudget configs)")
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    out = args.out
    if out is None:
        stem = Path(args.config).stem
        out = f"runs/{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = train(cfg, out, device=args.device, progress=progress)
    if trainer.dist.is_main:
        print(f"run written to {out}")
    return 0
