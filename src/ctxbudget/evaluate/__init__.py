"""Evaluation of trained models: clean / verified / attack errors, Liu et al. (2019), reports.

>>> from ctxbudget.evaluate import evaluate_model
>>> results = evaluate_model(classifier, threat, images, labels, methods=("ibp", "crown-ibp"))

Modules: ``attack`` (PGD on a non-uniform clipped box), ``liu2019`` (per-example volume
maximisation), ``steps`` (verify / attack a batch, the budget and Liu et al. columns), ``result``
(the typed ``EvalResult`` and its JSON / per-example views), ``soundness`` (the invariant),
``evaluate`` (``evaluate_model`` / ``evaluate_run``), ``report`` (paper-style tables),
``commands`` (CLI glue for evaluate / visualize / report).
"""
from ..bounds.verify import margin_lower_bounds
from .attack import AttackResult, margins, min_margin, pgd_attack
from .evaluate import DEFAULT_METHODS, evaluate_model, evaluate_run, load_split, parse_methods
from .liu2019 import LiuResult, largest_uniform_eps, liu_max_volume
from .report import format_results_table, load_results, markdown_table, report
from .result import BudgetColumn, EvalResult, LiuColumn

__all__ = [
    "AttackResult", "BudgetColumn", "DEFAULT_METHODS", "EvalResult", "LiuColumn", "LiuResult", "evaluate_model",
    "evaluate_run", "format_results_table",
    "largest_uniform_eps", "liu_max_volume", "load_results", "load_split", "margin_lower_bounds", "margins",
    "markdown_table", "min_margin", "parse_methods", "pgd_attack", "report",
]
