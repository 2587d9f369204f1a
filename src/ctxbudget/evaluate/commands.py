"""CLI glue for ``ctxbudget evaluate``, ``ctxbudget visualize`` and ``ctxbudget report``.

Each ``add_*_parser(subparsers)`` registers one subcommand and sets ``func`` to a handler
``handler(args) -> int`` (exit code). User mistakes raise ``UserError`` (printed as one line).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..bounds.engine import or_list
from ..devices import add_device_argument, evaluation_processes
from ..devices import resolve as resolve_device
from ..errors import UserError
from ..run import load_run, output_dir_for
from ..runtime import ATTACK_PRECISIONS
from .evaluate import DEFAULT_METHODS, evaluate_run, load_split, parse_methods
from .liu2019 import LIU_METHODS, check_liu_method
from .report import format_contextuality, format_results_table, report
from .visualize import visualize_run

_FMT = argparse.RawDescriptionHelpFormatter


#: the RUN_DIR argument of every command that reads a trained model
RUN_HELP = "run directory written by 'ctxbudget train', or a registered model's name ('ctxbudget models list')"


# ----------------------------------------------------------------------------------------- evaluate
def add_evaluate_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate", help="clean / verified / attack / Liu et al. errors of a trained run",
        formatter_class=_FMT,
        description="Evaluate a trained run on a data split: clean error; verified error under the learned\n"
                    "budgets eps(x) and under uniform eps0 for each bound method and the per-example best;\n"
                    "verified error by Liu et al. (2019) (per-example volume maximisation); PGD attack error\n"
                    "inside the same boxes (soundness check: no certified example may be broken).\n"
                    "Writes RUN_DIR/results.json and RUN_DIR/per_example.npz (a registered model: runs/NAME/,\n"
                    "or --out) and prints a table.",
        epilog="example: ctxbudget evaluate runs/mnist-learned-0.4 --limit 1000 --bounds ibp,crown-ibp")
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_HELP)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for results.json and per_example.npz (default: RUN_DIR; a registered model: runs/NAME)")
    p.add_argument("--split", default="test", help="data split to evaluate on (default: test)")
    p.add_argument("--bounds", default=",".join(DEFAULT_METHODS),
                   help="comma-separated bound methods among ibp, crown-ibp, crown, alpha-crown "
                        f"(default: {','.join(DEFAULT_METHODS)}); 'verified' uses the best per example")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N examples")
    p.add_argument("--liu-limit", type=int, default=100, metavar="N",
                   help="examples (the first N) for the expensive Liu et al. column; 0 skips it (default: 100)")
    p.add_argument("--liu-method", default="crown-ibp", help="bound method of the Liu et al. optimisation (default: crown-ibp)")
    p.add_argument("--liu-iters", type=int, default=100, metavar="T",
                   help="Adam iterations (step 0.05 on log eps) of the Liu et al. optimisation (default: 100)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="data root (default: the run's, then $CTXBUDGET_DATA)")
    p.add_argument("--batch-size", type=int, default=128, metavar="B", help="examples per batch (default: 128)")
    p.add_argument("--attack-steps", type=int, default=50, metavar="S", help="PGD steps per restart (default: 50)")
    p.add_argument("--attack-restarts", type=int, default=1, metavar="R",
                   help="untargeted PGD runs from random starts (default: 1)")
    p.add_argument("--attack-targets", type=int, default=3, metavar="T",
                   help="targeted PGD runs against the T most likely other classes, on the examples not broken "
                        "yet (default: 3; 0: the untargeted runs alone, the earlier attack)")
    p.add_argument("--attack-loss", choices=("margin", "ce"), default="margin", help="PGD objective (default: margin)")
    p.add_argument("--attack-precision", choices=ATTACK_PRECISIONS, default="float32",
                   help="dtype of the attack's matrix products: float32, bfloat16 (about 1.4x faster where the "
                        "CPU has AVX-512 BF16 or AMX, slightly weaker), or auto (bfloat16 where the device "
                        "multiplies it natively); margins and broken decisions stay float32 (default: float32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attack's random starts (default: 0)")
    add_device_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_evaluate)
    return p


def run_evaluate(args: argparse.Namespace) -> int:
    methods = parse_methods(args.bounds)
    liu_method = parse_methods([args.liu_method])[0]
    try:
        check_liu_method(liu_method)
    except ValueError:
        raise UserError(f"--liu-method must be differentiable: {or_list(LIU_METHODS)}") from None
    for name in ("batch_size", "attack_restarts"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.attack_steps < 0 or args.attack_targets < 0 or args.liu_limit < 0 or args.liu_iters < 0:
        raise UserError("--attack-steps, --attack-targets, --liu-limit and --liu-iters must be >= 0")
    with evaluation_processes(args.device) as (rank, device):
        run = load_run(args.run_dir, device=device)
        out = output_dir_for(run, args.out)
        results = evaluate_run(run, split=args.split, limit=args.limit, data_dir=args.data_dir, out_dir=out,
                               methods=methods, batch_size=args.batch_size, attack_steps=args.attack_steps,
                               attack_restarts=args.attack_restarts, attack_targets=args.attack_targets,
                               attack_loss=args.attack_loss, attack_precision=args.attack_precision,
                               liu_limit=args.liu_limit, liu_method=liu_method, liu_iters=args.liu_iters,
                               seed=args.seed, progress=False if args.no_progress or rank else None,
                               write=rank == 0)
    if rank:
        return 0                                   # torchrun: rank 0 prints and writes
    print(format_results_table(results))
    if "contextuality" in results:
        print(format_contextuality(results["contextuality"]))
    print(f"wrote {out / 'results.json'} and {out / 'per_example.npz'}")
    return 0


# ---------------------------------------------------------------------------------------- visualize
def add_visualize_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "visualize", help="budget maps, training curves and budget statistics of a run", formatter_class=_FMT,
        description="Draw figures of a trained run (PNG and PDF): a grid of test images and their learned\n"
                    "budget maps (grey, eps/u, lighter = larger budget), training curves from metrics.jsonl,\n"
                    "and a histogram of budgets; budget_stats.json holds the contextuality statistics (with the\n"
                    "mean budget inside vs outside the label regions where the data set has them) and the\n"
                    "blindness diagnostic.")
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_HELP)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: RUN_DIR/figures; a registered model: runs/NAME/figures)")
    p.add_argument("--indices", default=None, metavar="I,J,…", help="comma-separated example indices to draw")
    p.add_argument("--num", type=int, default=8, metavar="N", help="draw the first N examples (default: 8)")
    p.add_argument("--per-channel", action="store_true", help="for RGB inputs also draw one budget map per channel")
    p.add_argument("--split", default="test", help="data split (default: test)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="data root (default: the run's)")
    p.add_argument("--stats-limit", type=int, default=1000, metavar="N",
                   help="examples used for the histogram and budget statistics (default: 1000)")
    add_device_argument(p)
    p.set_defaults(func=run_visualize)
    return p


def _parse_indices(text: str | None, num: int, total: int) -> list[int]:
    if text is None:
        if num < 1:
            raise UserError(f"--num must be >= 1, got {num}")
        return list(range(min(num, total)))
    try:
        idx = [int(t) for t in text.replace(" ", ",").split(",") if t]
    except ValueError:
        raise UserError(f"--indices must be comma-separated integers, got {text!r}") from None
    bad = [i for i in idx if not 0 <= i < total]
    if not idx or bad:
        raise UserError(f"--indices {bad or text!r} out of range: the split has {total} examples")
    return idx


def run_visualize(args: argparse.Namespace) -> int:
    if args.stats_limit < 1:
        raise UserError(f"--stats-limit must be >= 1, got {args.stats_limit}")
    run = load_run(args.run_dir, device=resolve_device(args.device))
    out = output_dir_for(run, args.out, "figures")
    ds = load_split(run, args.split, args.data_dir)
    idx = _parse_indices(args.indices, args.num, int(ds.images.shape[0]))
    res = visualize_run(run, out, indices=idx, per_channel=args.per_channel, split=args.split,
                        stats_limit=args.stats_limit, dataset=ds)
    s = res["stats"]
    print(f"budgets over {s['n']} examples: mean {s['mean']:.4g}, geometric mean {s['geo_mean']:.4g} "
          f"(eps0 {s['eps0']:.4g}), range [{s['min']:.4g}, {s['max']:.4g}] within [l, u] = [{s['lower']:.4g}, {s['upper']:.4g}]")
    if "contextuality" in s:
        print(format_contextuality(s["contextuality"]))
    for p in res["paths"]:
        print(f"wrote {p}")
    return 0


# ------------------------------------------------------------------------------------------- report
def add_report_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", help="paper-style Markdown table from several evaluated runs", formatter_class=_FMT,
        description="Collect RUN_DIR/results.json of several runs (written by 'ctxbudget evaluate') into a\n"
                    "Markdown table in the layout of the paper's Tables 1-4: target eps0, training budgets,\n"
                    "clean error, verified error by Liu et al. (2019) / uniform / learned budgets (in %). A\n"
                    "registered model's name stands for the results.json it was registered with.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="evaluated run directories (or folders holding a results.json), or registered models' names "
                        "(their committed results)")
    p.add_argument("--out", default=None, metavar="FILE.md", help="also write the table to this file")
    p.set_defaults(func=run_report)
    return p


def run_report(args: argparse.Namespace) -> int:
    text = report(args.run_dirs)
    sys.stdout.write(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0
