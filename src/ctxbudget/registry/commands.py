"""``ctxbudget models list | show NAME | register RUN_DIR --name NAME``."""
from __future__ import annotations

import argparse
import json
from typing import Any, Optional

import yaml

from ..errors import RegistryError
from .load import get_model, read_weights
from .manifest import MODELS_ENV, SIZE_BUDGET, ModelEntry, Registry
from .register import register_run

HELP = f"""\
Pretrained models by name. Every command that takes a run directory (evaluate, visualize, certify,
export, report) also takes a registered model's name; a run directory of that name wins. Commands
that write (evaluate, visualize) write a model's outputs to runs/NAME (or --out), never into the
registry. The registry is the one shipped in the package, or the folder ${MODELS_ENV} names.

examples:
  ctxbudget models list
  ctxbudget models show quickstart-learned
  ctxbudget certify quickstart-learned digit.png
  ctxbudget models register runs/quick --name my-model --description "…"   # developers
"""


def add_models_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("models", help="list, show and register pretrained models",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--registry", default=None, metavar="DIR",
                       help=f"registry folder (default: ${MODELS_ENV}, else the one shipped in the package)")

    lst = sub.add_parser("list", parents=[where], help="a table of the registered models")
    lst.add_argument("--json", action="store_true", help="print the manifest's entries as JSON")
    lst.set_defaults(func=_list)

    show = sub.add_parser("show", parents=[where], help="everything about one model (config, results, sha256, command)")
    show.add_argument("name", metavar="NAME", help="registered model")
    show.add_argument("--json", action="store_true", help="print the manifest entry as JSON")
    show.set_defaults(func=_show)

    reg = sub.add_parser(
        "register", parents=[where], help="add a finished, evaluated run to the registry (developers)",
        description="Copy a finished run's final weights (float32, no optimizer state), config.yaml, results.json\n"
                    "and figures/budget_stats.json into the registry (default: the package's, i.e.\n"
                    "src/ctxbudget/pretrained/ of a checkout). Refuses a run that has not reached its last epoch\n"
                    "or has no results.json for its final weights.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    reg.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by 'ctxbudget train'")
    reg.add_argument("--name", required=True, help="name to register it under (lower case, digits, . _ -)")
    reg.add_argument("--description", default=None, help="one line (default: the config's description)")
    reg.add_argument("--command", default=None,
                     help="the command that trains it (default: 'ctxbudget train --config C --set …' from the config)")
    reg.add_argument("--schedule", default=None, help="the schedule in words (default: epochs and ramp from the config)")
    reg.add_argument("--not-stored", action="store_true",
                     help="list the model without its weights (too large to ship): its command says how to train it")
    reg.add_argument("--replace", action="store_true", help="overwrite a model registered under the same name")
    reg.set_defaults(func=_register)


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _mb(size: Optional[int]) -> str:
    return "–" if size is None else f"{size / 1e6:.1f} MB"


def list_table(registry: Registry) -> str:
    """The ``models list`` table (plain text, one model per line)."""
    head = ["name", "data set", "ε0", "budgets", "head", "clean %", "verified %", "size", "stored"]
    rows = [[m.name, m.dataset, f"{m.eps0:g}", m.kind, m.head or "–", _pct(m.clean_err), _pct(m.verified_err),
             _mb(m.size), "yes" if m.stored else "no"] for m in sorted(registry.models, key=lambda m: m.name)]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    total = registry.stored_bytes()
    lines.append(f"{len(rows)} models in {registry.root} ({_mb(total)} of weights stored); "
                 "errors on the test set from each model's results.json, verified under its own budgets; "
                 "details: ctxbudget models show NAME")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    registry = Registry.load(args.registry)
    if args.json:
        print(json.dumps([m.to_dict() for m in registry.models], indent=1))
    elif not registry.models:
        print(f"no registered models in {registry.root}")
    else:
        print(list_table(registry))
    return 0


def show_text(entry: ModelEntry, weights_ok: Optional[str]) -> str:
    """The ``models show`` text: what it is, how it was trained, its numbers, its weights and config."""
    r, c = entry.results, entry.config
    b = c.get("budget", {})
    ve = r.get("verified_err", {})
    lines = [f"name:          {entry.name}",
             f"description:   {entry.description}",
             f"data set:      {entry.dataset} (model {entry.model})",
             f"budgets:       {entry.kind}, eps0 {entry.eps0:g}, alpha_lo {b.get('alpha_lo')}, alpha_hi {b.get('alpha_hi')}"
             + (f", generator head {entry.head}" if entry.head else ""),
             f"schedule:      {entry.schedule}" + (f" (trained to epoch {entry.epoch}, step {entry.step})"
                                                   if entry.epoch is not None else ""),
             f"results:       clean error {_pct(entry.clean_err)} %; verified error "
             + (f"under its learned budgets {_pct(ve.get('learned'))} %, " if entry.kind == "learned" else "")
             + f"uniform eps0 {_pct(ve.get('uniform'))} %, Liu et al. {_pct(ve.get('liu2019'))} % "
             f"({r.get('split', 'test')} set, n = {r.get('n', '?')}; Liu et al. on the first {r.get('n_liu2019', '?')})"]
    share = (r.get("contextuality") or {}).get("input_dependent_share")
    if share is not None:
        lines.append(f"contextuality: input-dependent share of the log-eps variance {100 * float(share):.1f} %")
    if entry.weights is not None:
        w = entry.weights
        counts = w.get("parameters") or {}
        values = " + ".join(f"{int(n):,} {net}" for net, n in counts.items() if n)
        lines += [f"weights:       {entry.weights_path} ({int(w['size']):,} bytes, {w.get('dtype', 'float32')}"
                  + (f"; {values} values" if values else "") + ")",
                  f"sha256:        {w['sha256']} ({weights_ok})"]
    else:
        lines.append("weights:       not stored in the registry (train it with the command below)")
    lines += [f"trained with:  {entry.command}",
              f"registered:    from {entry.source.get('run_dir', '?')} ({entry.source.get('weights_from') or 'no weights'}), "
              f"ctxbudget {entry.source.get('ctxbudget', '?')}",
              "config:", *("  " + line for line in yaml.safe_dump(c, sort_keys=False).rstrip().splitlines())]
    return "\n".join(lines)


def _show(args: argparse.Namespace) -> int:
    entry = get_model(args.name, args.registry)
    if args.json:
        print(json.dumps(entry.to_dict(), indent=1))
        return 0
    problem: Optional[RegistryError] = None
    if entry.stored:
        try:
            read_weights(entry)
        except RegistryError as exc:
            problem = exc
    print(show_text(entry, "file verified" if problem is None else "FILE DOES NOT MATCH, see below"))
    if problem is not None:
        raise problem
    return 0


def _register(args: argparse.Namespace) -> int:
    entry = register_run(args.run_dir, args.name, description=args.description, command=args.command,
                         schedule=args.schedule, root=args.registry, stored=not args.not_stored, replace=args.replace)
    registry = Registry.load(entry.root)
    where = f"{entry.weights_path} ({_mb(entry.size)})" if entry.stored else "not stored"
    print(f"registered {entry.name} in {registry.manifest_path}: weights {where}; clean {_pct(entry.clean_err)} %, "
          f"verified {_pct(entry.verified_err)} %")
    print(f"the registry now stores {_mb(registry.stored_bytes())} of weights (budget {SIZE_BUDGET / 1e6:.0f} MB "
          "for the packaged one)")
    return 0
