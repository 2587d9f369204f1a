"""Every `cpu`-schedule row of results/ in one Markdown table: the default head beside the paper's.

    python results/all_rows.py            # prints the table of results/README.md's "All rows"

Reads RESULTS/EXPERIMENT/ROW/results.json (default `context` head, and the uniform baselines) and
RESULTS/dense/EXPERIMENT/ROW/results.json (the paper's `dense` head); the paper's numbers come
from ``ctxbudget.reproduce.experiments``. Errors in %, all 10,000 test images; for Appendix C the
"uniform" column is the learned model's verified error on the uniform ε = 0.3 ball.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ctxbudget.reproduce.experiments import get_experiment

EXPERIMENTS = ("table1", "table3", "appendix-c", "doubled-mnist")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _paper(v: object) -> str:
    return "–" if v is None else (v if isinstance(v, str) else f"{float(v):.2f}")  # type: ignore[arg-type]


def cells(run: Path, uniform_eps: float | None) -> list[str]:
    """clean, verified (under the budgets it trained with), uniform-ε verified (Appendix C), share."""
    if not (run / "results.json").is_file():
        return ["not run"] * 4
    res = json.loads((run / "results.json").read_text())
    learned = res["training"]["kind"] == "learned"
    verified = res["verified_err"]["learned" if learned else "uniform"]
    uniform = None
    if uniform_eps is not None and (run / f"results_uniform-{uniform_eps:g}.json").is_file():
        uniform = json.loads((run / f"results_uniform-{uniform_eps:g}.json").read_text())["verified_err"]["uniform"]
    share = (res.get("contextuality") or {}).get("input_dependent_share") if learned else None
    return [_pct(res["clean_err"]), _pct(verified), _pct(uniform) if uniform_eps else "",
            "" if share is None else f"{100 * share:.1f}"]


def main(root: Path) -> None:
    head = ["experiment / row", "clean (paper)", "verified (paper)", "Appendix C: uniform ε = 0.3 (paper)",
            "share (%)", "dense: clean", "dense: verified", "dense: uniform ε = 0.3", "dense: share (%)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * len(head)) + "|")
    for name in EXPERIMENTS:
        for row in get_experiment(name).rows:
            ours = cells(root / name / row.name, row.uniform_eps)
            p = row.paper
            first = [f"{name} {row.name}", f"{ours[0]} ({_paper(p.get('clean'))})",
                     f"{ours[1]} ({_paper(p.get('learned') if 'learned' in row.name else p.get('uniform'))})",
                     f"{ours[2]} ({_paper(p.get('uniform'))})" if row.uniform_eps else "", ours[3]]
            dense = cells(root / "dense" / name / row.name, row.uniform_eps) if "learned" in row.name else [""] * 4
            print("| " + " | ".join(first + dense) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
