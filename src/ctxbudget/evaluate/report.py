"""Tables: the console summary of one evaluation and the paper-style Markdown table of several runs.

The Markdown layout follows the paper's Tables 1–4: target volume ε0, training budgets
(learned/uniform and their ε0), clean error, verified error by Liu et al. (2019) / uniform /
learned budgets — all errors in %.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..budgets import BUDGET_KINDS
from ..errors import UserError


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100.0 * float(value):.2f}"


def format_eps(eps0: float) -> str:
    """0.4 → "0.4"; 8/255 → "8/255" (the paper's way of writing CIFAR budgets)."""
    frac = Fraction(eps0).limit_denominator(255)
    if frac.denominator == 255 and abs(float(frac) - eps0) < 1e-7:
        return f"{frac.numerator}/255"
    return f"{eps0:g}"


def checkpoint_text(results: dict) -> str:
    """"final.pt, epoch 12" from ``results["checkpoint"]`` ("–" when unknown)."""
    ck = results.get("checkpoint") or {}
    if not ck.get("file"):
        return "–"
    return ck["file"] + (f", epoch {ck['epoch']}" if ck.get("epoch") is not None else "")


def examples_text(results: dict) -> str:
    """"60" or "60 (Liu et al.: first 10)" when the Liu et al. column covers fewer examples."""
    n, n_liu = results["n"], results.get("n_liu2019")
    if results.get("verified_err", {}).get("liu2019") is None or not n_liu or n_liu == n:
        return f"{n}"
    return f"{n} (Liu et al.: first {n_liu})"


def format_results_table(results: dict) -> str:
    """Plain-text summary of one ``evaluate_model`` result (errors in %), for the console."""
    lines = [f"examples: {results['n']}   eps0: {format_eps(results['eps0'])}   "
             f"clean error: {_pct(results['clean_err'])}%"]
    if results.get("checkpoint"):
        lines.append(f"checkpoint: {checkpoint_text(results)}")
    methods = results.get("methods", [])
    head = ["budgets", *[f"verified ({m})" for m in methods], "verified (any)", "attack (PGD)"]
    rows = []
    for kind in BUDGET_KINDS:
        by = results["verified_err_by_method"][kind]
        rows.append([kind, *[_pct(by[m]) for m in methods], _pct(results["verified_err"][kind]),
                     _pct(results["attack_err"][kind])])
    liu = results["verified_err"].get("liu2019")
    if liu is not None:
        rows.append([f"liu2019 (first {results.get('n_liu2019')} of {results['n']})", *["" for _ in methods],
                     _pct(liu), ""])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines += [fmt(head), "  ".join("-" * w for w in widths), *[fmt(r) for r in rows]]
    if results.get("mean_geo_budget_liu2019") is not None:
        lines.append(f"liu2019 mean log-volume per dim {results['mean_log_volume_liu2019']:.4f} "
                     f"(geometric-mean budget {results['mean_geo_budget_liu2019']:.4f})")
    lines.append(f"soundness violations: {results['soundness_violations']}   "
                 f"time: {results['seconds']['total']:.1f} s")
    return "\n".join(lines)


_REGION_NAMES = {"stroke_vs_background": ("stroke", "background"),
                 "watermark_vs_elsewhere": ("lit watermark", "outside the watermark box"),
                 "attended_vs_ignored": ("attended half", "ignored half")}


def format_contextuality(ctx: dict) -> str:
    """One line per statistic of ``ctxbudget.contextuality.budget_contextuality`` for the console."""
    lines = [f"contextuality over {ctx['n']} images: input-dependent share of log-budget variance "
             f"{100 * ctx['input_dependent_share']:.1f}%"]
    for key, (a, b) in _REGION_NAMES.items():
        r = ctx.get(key)
        if r and r.get("mean") is not None and r.get("mean_other") is not None:
            lines.append(f"  mean budget on {a} {r['mean']:.4g} vs {b} {r['mean_other']:.4g} (ratio {r['ratio']:.3g})")
    return "\n".join(lines)


def contextuality_table(results: Sequence[dict], names: Sequence[str]) -> str:
    """Markdown table of the contextuality statistics of the runs that have them ('' if none)."""
    rows = []
    for name, r in zip(names, results):
        ctx = r.get("contextuality")
        if not ctx or r.get("training", {}).get("kind") == "uniform":
            continue
        cells = [name, f"{100 * ctx['input_dependent_share']:.1f}"]
        for key in _REGION_NAMES:
            reg = ctx.get(key)
            cells.append("–" if not reg or reg.get("ratio") is None
                         else f"{reg['mean']:.3g} / {reg['mean_other']:.3g} (×{reg['ratio']:.2f})")
        rows.append(cells)
    if not rows:
        return ""
    head = ["run", "input-dependent share of log-ε variance (%)", "mean ε stroke / background",
            "mean ε lit watermark / outside box", "mean ε attended / ignored half"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    out += ["| " + " | ".join(c) + " |" for c in rows]
    return "\n".join(out) + "\n"


def load_results(run_dir: str | Path) -> dict:
    """Read ``RUN_DIR/results.json``, or a registered model's committed results when ``run_dir`` is no
    folder but a model's name; UserError if neither, or if the file is missing/corrupt."""
    if not Path(run_dir).is_dir():
        from ..registry import find_model, unknown_target

        entry = find_model(str(run_dir))
        if entry is None:
            raise unknown_target(str(run_dir))
        return entry.results
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise UserError(f"{path} not found; run 'ctxbudget evaluate {run_dir}' first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); run 'ctxbudget evaluate {run_dir}' again") from exc


def markdown_table(results: Sequence[dict], names: Iterable[str] | None = None) -> str:
    """Markdown table in the layout of the paper's Tables 1–4, one row per results dict.

    Rows are sorted by target ε0, uniform before learned. ``names`` (optional) adds a run column.
    "examples" gives n per column (the Liu et al. column covers only the first ``n_liu2019``);
    "weights" names the checkpoint file and epoch evaluated; a "data" column names the data source
    of each row where the results record it (``data_source``, e.g. ``cifar10-jpeg (CIFAR-10, JPEG copy)``).
    """
    names = list(names) if names is not None else None
    with_data = any("data_source" in r for r in results)
    rows = []
    for i, r in enumerate(results):
        train = r.get("training", {})
        kind = train.get("kind", "?")
        eps0 = float(train.get("eps0", r["eps0"]))
        target = float(r["eps0"])
        ve = r["verified_err"]
        row = [format_eps(target), f"{kind} {format_eps(eps0)}", _pct(r["clean_err"]), _pct(ve.get("liu2019")),
               _pct(ve.get("uniform")), _pct(ve.get("learned")), examples_text(r), checkpoint_text(r)]
        if with_data:
            row.append(str(r.get("data_source") or r.get("dataset") or "–"))
        if names is not None:
            row.append(names[i])
        rows.append(((target, kind != "uniform", eps0), row))
    rows.sort(key=lambda t: t[0])
    head = ["target ε0", "training", "clean err. (%)", "verified err. Liu et al. 2019 (%)",
            "verified err. uniform (%)", "verified err. learned (%)", "examples", "weights"]
    if with_data:
        head.append("data")
    if names is not None:
        head.append("run")
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    out += ["| " + " | ".join(r) + " |" for _, r in rows]
    return "\n".join(out) + "\n"


def report(run_dirs: Sequence[str | Path]) -> str:
    """Markdown table of the ``results.json`` of several run directories."""
    if not run_dirs:
        raise UserError("give at least one run directory")
    results = [load_results(d) for d in run_dirs]
    names = [Path(d).name for d in run_dirs]
    text = markdown_table(results, names=names)
    ctx = contextuality_table(results, names)
    return text + ("\nContextuality of the learned budgets (test images):\n\n" + ctx if ctx else "")
