"""The trade-off between contextuality and verified error at Table 1's volumes (`cpu` schedule).

    python results/tradeoff.py [--out results/tradeoff-front]        # from the repository root

Reads the tables that ``ctxbudget reproduce`` writes and puts every learned MNIST row of the `cpu`
schedule on one plane per ε0: the input-dependent share of the log-budget variance (x) against the
verified error under the row's own budgets (y), all 10,000 test images:

* ``results/table1.json`` — the default ``context`` head (w = 0);
* ``results/dense/table1.json`` — the paper's ``dense`` head (w = 1);
* ``results/tradeoff.json`` — the ``mix`` head in between (``ctxbudget reproduce tradeoff --schedule cpu
  --out results``), by weight and by the range of its dense part;
* ``results/tradeoff-seed1/tradeoff.json`` — tradeoff rows trained again with ``--set seed=1`` (how far
  a point moves with the seed);
* ``results/volumes.json`` — the default head with other classifiers (``ctxbudget reproduce volumes
  --schedule cpu --out results``: BatchNorm, a 1×1 pixel stem).

Rows missing from a table are skipped; each point is labelled by its head, and by its classifier
where a row overrides ``model.name``.

Writes ``OUT.md`` (one table, the paper's verified error beside each ε0) and ``OUT.png``; the Pareto
front per ε0 (no other row has both a lower verified error and a higher share) is marked.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

SOURCES = ("results/table1.json", "results/dense/table1.json", "results/tradeoff.json", "results/tradeoff-seed1/tradeoff.json",
           "results/volumes.json")


def label(row: dict) -> str:
    """The row's head, and its classifier and seed where the row overrides ``model.name`` / ``seed``."""
    overrides = row.get("config_overrides", [])
    models = [o.split("=", 1)[1] for o in overrides if o.startswith("model.name=")]
    seeds = [o.split("=", 1)[1] for o in overrides if o.startswith("seed=")]
    return row.get("head", "?") + (f", {models[-1]}" if models else "") + (f", seed {seeds[-1]}" if seeds else "")


#: the targets set for the `cpu` schedule (verified error at most V % with share at least S %), shaded
TARGETS = {0.6: (19.5, 20.0), 0.8: (40.0, 20.0)}


def short(head: str) -> str:
    """A figure label: ``mix (w = 0.5, dense part within ±3), seed 1`` → ``mix ±3 s1``, ``context,
    dm-small-px`` → ``context+px`` (the table keeps the full names)."""
    out = re.sub(r"mix \(w = ([\d.]+)(?:, dense part within (±[\d.]+))?\)",
                 lambda m: "mix" + (f" {m.group(2)}" if m.group(2) else "") + ("" if m.group(1) == "0.5" else f" w{m.group(1)}"),
                 head)
    return out.replace(", seed ", " s").replace(", dm-small-", "+")


def load_points(sources: tuple[str, ...] = SOURCES) -> list[dict]:
    """Every finished learned row of the `cpu` schedule: eps0, head, verified %, share %, clean %, table."""
    points = []
    for src in sources:
        path = Path(src)
        if not path.is_file():
            continue
        table = json.loads(path.read_text())
        if table.get("schedule") != "cpu":
            continue
        for row in table["rows"]:
            ours, ctx = row.get("ours") or {}, row.get("contextuality") or {}
            m = re.search(r"(\d+(?:\.\d+)?)$", row["row"])
            if row.get("kind") != "learned" or ours.get("learned") is None or "input_dependent_share" not in ctx or not m:
                continue
            points.append({"eps0": float(m.group(1)), "head": label(row), "row": row["row"], "table": src,
                           "verified": 100 * ours["learned"], "clean": 100 * ours["clean"],
                           "share": 100 * ctx["input_dependent_share"], "n": row.get("n"),
                           "paper": (row.get("paper") or {}).get("learned")})
    return points


def pareto(points: list[dict]) -> set[int]:
    """Indices of the points no other point beats on both axes (lower verified, higher share)."""
    front = set()
    for i, p in enumerate(points):
        if not any(q["verified"] <= p["verified"] and q["share"] >= p["share"]
                   and (q["verified"], q["share"]) != (p["verified"], p["share"]) for q in points):
            front.add(i)
    return front


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/tradeoff-front", help="writes OUT.md and OUT.png")
    a = ap.parse_args()
    points = load_points()
    if not points:
        raise SystemExit("no learned rows of the cpu schedule found in " + ", ".join(SOURCES))
    volumes = sorted({p["eps0"] for p in points})
    lines = ["# Contextuality against verified error, Table 1's volumes (`cpu` schedule, MNIST, all 10,000 test images)",
             "", "Made by `python results/tradeoff.py` from " + ", ".join(f"`{s}`" for s in SOURCES if Path(s).is_file())
             + ". Share = input-dependent share of the log-budget variance; ★ = on the Pareto front of its ε0.", "",
             "| ε0 | head | clean % | verified % (paper) | share % | front | table |", "|---|---|---|---|---|---|---|"]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(volumes), figsize=(4.6 * len(volumes), 4.0), squeeze=False)
    for ax, e0 in zip(axes[0], volumes):
        pts = sorted((p for p in points if p["eps0"] == e0), key=lambda p: p["share"])
        front = pareto(pts)
        for i, p in enumerate(pts):
            paper = "–" if p["paper"] is None else f"{p['paper']:g}"
            lines.append(f"| {e0:g} | {p['head']} | {p['clean']:.2f} | {p['verified']:.2f} ({paper}) | {p['share']:.1f} | "
                         f"{'★' if i in front else ''} | `{p['table']}` ({p['row']}) |")
            ax.scatter(p["share"], p["verified"], marker="*" if i in front else "o", s=80 if i in front else 30)
            ax.annotate(short(p["head"]), (p["share"], p["verified"]), fontsize=7, xytext=(4, 2 - 8 * (i % 2)),
                        textcoords="offset points")
        if e0 in TARGETS:
            v, share = TARGETS[e0]
            ax.fill_between([share, 100], 0, v, color="green", alpha=0.08, lw=0)
            ax.text(99, v, f"target: ≤ {v:g} % with share ≥ {share:g} %", fontsize=7, color="green", ha="right",
                    va="bottom")
        if pts and pts[0]["paper"] is not None:
            ax.axhline(pts[0]["paper"], ls="--", lw=0.8, color="grey")
            ax.text(1, pts[0]["paper"], "paper", fontsize=7, color="grey", va="bottom")
        ys = [p["verified"] for p in pts] + [p["paper"] for p in pts if p["paper"] is not None]
        ax.set_ylim(max(min(ys) - 4, 0), min(max(ys) + 4, 101))
        ax.set_title(f"ε0 = {e0:g}")
        ax.set_xlabel("input-dependent share of log-ε variance (%)")
        ax.set_ylabel("verified error, learned budgets (%)")
        ax.set_xlim(-2, 100)
    fig.suptitle("MNIST, cpu schedule: verified error vs contextuality (context head, dense head, mix, classifiers)", fontsize=9)
    fig.tight_layout()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out.with_name(out.name + ".png"), dpi=130)
    lines += ["", f"![trade-off]({out.name}.png)"]
    out.with_name(out.name + ".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.md and {out}.png ({len(points)} rows)")


if __name__ == "__main__":
    main()
