"""Command line: ``ctxbudget {train,evaluate,visualize,report,data,configs,export,certify,reproduce,models} …``
(also ``python -m ctxbudget``). The console script and ``python -m ctxbudget`` enter through
:func:`run`, which ends a ``torchrun`` rank with :func:`ctxbudget.train.distributed.exit_rank`.

This module only parses arguments and dispatches; each subcommand lives beside the code it drives
and registers itself through an ``add_*_parser(subparsers)`` function that sets ``func``. Errors a
user can fix (``UserError``, ``ValueError`` from validation, missing files) are printed as one line
and give exit code 2; a traceback is shown only with ``--debug``. Every command runs with the
allocator settings of :mod:`ctxbudget.runtime` (``CTXBUDGET_MALLOC_TUNING=0`` to opt out).
"""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

from . import __version__
from .errors import SoundnessError, UserError
from .runtime import tune_allocator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctxbudget",
        description="Certified training with learned, contextual perturbation budgets.",
        epilog="Run 'ctxbudget COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"ctxbudget {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from .certify.commands import add_certify_parser
    from .data.commands import add_data_parser
    from .evaluate.commands import add_evaluate_parser, add_report_parser, add_visualize_parser
    from .export.commands import add_export_parser
    from .presets import add_configs_parser
    from .registry.commands import add_models_parser
    from .reproduce.commands import add_reproduce_parser
    from .train.commands import add_train_parser

    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_visualize_parser(sub)
    add_report_parser(sub)
    add_data_parser(sub)
    add_reproduce_parser(sub)
    add_configs_parser(sub)
    add_export_parser(sub)
    add_certify_parser(sub)
    add_models_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SoundnessError as exc:
        print(f"SOUNDNESS VIOLATION: {exc}", file=sys.stderr)
        if args.debug:
            raise
        return 3
    except (UserError, ValueError, FileNotFoundError, OSError) as exc:
        if args.debug:
            raise
        # DataError and other domain errors subclass these; one line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run() -> NoReturn:
    """Entry point of the ``ctxbudget`` script and of ``python -m ctxbudget``: :func:`main`, then the
    exit. A rank started by ``torchrun`` leaves without the interpreter's finalisation (see
    :func:`~ctxbudget.train.distributed.exit_rank`); any other process exits normally."""
    from .train.distributed import exit_rank

    exit_rank(main())


if __name__ == "__main__":  # pragma: no cover
    run()
