"""``ctxbudget reproduce``: one command per experiment of the paper."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import UserError
from .experiments import EXPERIMENTS, SCHEDULES
from .runner import plan_experiment, run_experiment

HELP = """\
Reproduce an experiment of the paper: train every row of its table that has no finished run in
OUT/EXPERIMENT/ROW, resume the interrupted ones, evaluate each (verified errors under learned,
uniform and Liu et al. budgets, PGD soundness check, contextuality of the budgets), draw the
budget maps, and write OUT/EXPERIMENT.md with the paper's numbers beside ours (and .json).
Rows whose data set is not on this machine are listed as not run, with the reason.

schedules:
  paper   every row's config as it is (the paper's schedule; hours per run on a CPU)
  cpu     a shortened schedule for a 2-core CPU (20k images, 20 epochs, Adam 2e-3; see
          ctxbudget.reproduce.experiments.SCHEDULES); table2-jpeg / table4-jpeg (CIFAR-10's
          JPEG copy): DM-small, 35 epochs, 50k / 20k images

examples:
  ctxbudget reproduce --list
  ctxbudget reproduce table1 --out results --data-dir ../shared/data --dry-run
  ctxbudget reproduce table3 --out results --data-dir ../shared/data --schedule cpu
  ctxbudget reproduce table1 --out results --rows learned-0.4,uniform-0.4 --set optim.epochs=5
"""


def add_reproduce_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("reproduce", help="train, evaluate and tabulate one experiment of the paper",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", metavar="EXPERIMENT",
                   help=f"one of: {', '.join(EXPERIMENTS)}, or 'all'")
    p.add_argument("--out", default="results", metavar="DIR", help="output folder (default: results)")
    p.add_argument("--schedule", default="paper", choices=sorted(SCHEDULES), help="training schedule (default: paper)")
    p.add_argument("--rows", default=None, metavar="A,B", help="only these rows (names as in --list)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of every row (repeatable)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="data root (default: $CTXBUDGET_DATA, ~/.cache/ctxbudget)")
    p.add_argument("--eval-limit", type=int, default=None, metavar="N",
                   help="evaluate on the first N test examples (default: all)")
    p.add_argument("--liu-limit", type=int, default=100, metavar="N", help="examples of the Liu et al. column (default: 100)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    p.add_argument("--table-only", action="store_true",
                   help="run nothing; write OUT/EXPERIMENT.md from the rows that are finished and evaluated")
    p.add_argument("--list", action="store_true", help="list the experiments and their rows")
    p.set_defaults(func=run_reproduce)
    return p


def run_reproduce(args: argparse.Namespace) -> int:
    if args.list:
        for exp in EXPERIMENTS.values():
            print(f"{exp.name:14s} {exp.title}")
            for row in exp.rows:
                print(f"{'':14s}   {row.name:20s} config {row.config}")
        return 0
    if not args.experiment:
        raise UserError("name an experiment (ctxbudget reproduce --list shows them)")
    if args.eval_limit is not None and args.eval_limit < 2:
        raise UserError(f"--eval-limit must be >= 2, got {args.eval_limit}")
    if args.liu_limit < 0:
        raise UserError(f"--liu-limit must be >= 0, got {args.liu_limit}")
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    if args.experiment != "all" and args.experiment not in EXPERIMENTS:
        raise UserError(f"unknown experiment {args.experiment!r}; choose one of {', '.join(EXPERIMENTS)} or all")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    for name in names:
        eval_args = ([f"--limit {args.eval_limit}"] if args.eval_limit else []) + [f"--liu-limit {args.liu_limit}"]
        if args.dry_run:
            _, plans = plan_experiment(name, args.out, schedule=args.schedule, overrides=args.overrides,
                                       data_dir=args.data_dir, rows=rows, eval_args=eval_args)
            for plan in plans:
                print(f"# {name}/{plan.row.name}: {plan.status}{' (' + plan.reason + ')' if plan.reason else ''}")
                for cmd in plan.commands:
                    print(cmd)
            continue
        run_experiment(name, args.out, schedule=args.schedule, overrides=args.overrides, data_dir=args.data_dir,
                       rows=rows, eval_limit=args.eval_limit, liu_limit=args.liu_limit, device=args.device,
                       table_only=args.table_only)
    return 0
