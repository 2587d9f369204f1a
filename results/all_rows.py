"""Every `cpu`-schedule row of results/ in one Markdown table: the default head beside the paper's.

    python results/all_rows.py            # prints the table of results/README.md's "All rows"

Reads RESULTS/EXPERIMENT/ROW/results.json (default `context` head, and the uniform baselines) and
RESULTS/dense/EXPERIMENT/ROW/results.json (the paper's `dense` head); the paper's numbers come
from ``ctxbudget.reproduce.experiments``. Errors in %, all 10,000 test images; for Appendix C the
"uniform" column is the learned model's verified error on the uniform ε = 0.3 ball.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ctxbudget.reproduce.experiments import Row, get_experiment
from ctxbudget.reproduce.runner import RowPlan, _paper, _pct, row_summary

EXPERIMENTS = ("table1", "table3", "appendix-c", "doubled-mnist")


def cells(name: str, row: Row, run: Path) -> list[str]:
    """clean, verified (under the budgets it trained with), uniform-ε verified (Appendix C), share —
    read by ``reproduce``'s own ``row_summary``."""
    s = row_summary(get_experiment(name), RowPlan(row, run, "done", None, []))
    if "ours" not in s:
        return ["not run"] * 4
    o, learned = s["ours"], s["kind"] == "learned"
    share = (s.get("contextuality") or {}).get("input_dependent_share") if learned else None
    return [_pct(o["clean"]), _pct(o["learned"] if learned else o["uniform"]),
            _pct(o["uniform"]) if row.uniform_eps else "", "" if share is None else f"{100 * share:.1f}"]


def main(root: Path) -> None:
    head = ["experiment / row", "clean (paper)", "verified (paper)", "Appendix C: uniform ε = 0.3 (paper)",
            "share (%)", "dense: clean", "dense: verified", "dense: uniform ε = 0.3", "dense: share (%)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * len(head)) + "|")
    for name in EXPERIMENTS:
        for row in get_experiment(name).rows:
            ours = cells(name, row, root / name / row.name)
            p = row.paper
            first = [f"{name} {row.name}", f"{ours[0]} ({_paper(p.get('clean'))})",
                     f"{ours[1]} ({_paper(p.get('learned') if 'learned' in row.name else p.get('uniform'))})",
                     f"{ours[2]} ({_paper(p.get('uniform'))})" if row.uniform_eps else "", ours[3]]
            dense = cells(name, row, root / "dense" / name / row.name) if "learned" in row.name else [""] * 4
            print("| " + " | ".join(first + dense) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
