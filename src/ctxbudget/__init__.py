"""ctxbudget: certified training with learned, contextual perturbation budgets.

Data flow: image x ──► budgets ε(x) ──► box [clip(x−ε), clip(x+ε)] ──► bounds ──► robust loss /
certificate. See the README for the command line, and ``ctxbudget.load_run`` to use a trained run.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]


def __getattr__(name: str):  # lazy: keep `import ctxbudget` light
    if name == "load_run":
        from .run import load_run

        return load_run
    raise AttributeError(f"module 'ctxbudget' has no attribute {name!r}")
