"""One table over several α,β-CROWN cross-checks (``scripts/crosscheck_abcrown.py``'s TABLE.json files).

    python scripts/crosscheck_summary.py results/crosscheck/A.json results/crosscheck/B.json … \\
        [--out results/crosscheck/summary.md]

Per model and box kind (learned, uniform) and in total: instances, contradictions (ctxbudget
certified / α,β-CROWN counterexample, and misclassified / α,β-CROWN proved safe: both must be 0),
agreements, the instances ctxbudget leaves open that α,β-CROWN settles (verified or a
counterexample) or leaves open too, and the gap that complete verification closes: ctxbudget's
verified error on these instances against the lowest verified error the complete verifier allows
(ctxbudget's certificates plus the open instances it proves safe). Prints Markdown, or writes it to
``--out``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable

KINDS = ("learned", "uniform")


def counts(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Verdict counts of the rows α,β-CROWN ran on (``abcrown`` not "not run")."""
    c = {"instances": 0, "contradictions": 0, "certified_both": 0, "misclassified_cex": 0,
         "open_verified": 0, "open_cex": 0, "open_open": 0, "certified_abcrown_timeout": 0, "ours_certified": 0}
    for r in rows:
        ours, ab = r["ctxbudget"], r["abcrown"]
        if ab == "not run":
            continue
        c["instances"] += 1
        c["ours_certified"] += ours == "certified"
        if (ours == "certified" and ab == "counterexample") or (ours == "misclassified" and ab == "certified"):
            c["contradictions"] += 1
        elif ours == "certified":
            c["certified_both" if ab == "certified" else "certified_abcrown_timeout"] += 1
        elif ours == "misclassified":
            c["misclassified_cex"] += 1
        elif ab == "certified":
            c["open_verified"] += 1
        elif ab == "counterexample":
            c["open_cex"] += 1
        else:
            c["open_open"] += 1
    return c


def row(label: str, c: dict[str, int]) -> str:
    n = c["instances"]
    ours_err = 100.0 * (n - c["ours_certified"]) / n if n else float("nan")
    best_err = 100.0 * (n - c["ours_certified"] - c["open_verified"]) / n if n else float("nan")
    floor = 100.0 * (c["misclassified_cex"] + c["open_cex"]) / n if n else float("nan")
    return (f"| {label} | {n} | **{c['contradictions']}** | {c['certified_both']} | {c['misclassified_cex']} | "
            f"{c['open_verified']} | {c['open_cex']} | {c['open_open']} | {c['certified_abcrown_timeout']} | "
            f"{ours_err:.1f} → {best_err:.1f} (≥ {floor:.1f}) |")


def summarize(tables: list[dict[str, Any]]) -> str:
    head = ("| model · box | instances | contradictions | certified by both | misclassified | "
            "open → verified by α,β-CROWN | open → counterexample | open for both | ours certified, α,β-CROWN timed out | "
            "verified error: ours → with α,β-CROWN (true error ≥) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    every: list[dict[str, Any]] = []
    for t in tables:
        rows = t["rows"]
        every += rows
        for kind in KINDS:
            part = [r for r in rows if r["kind"] == kind]
            if part:
                lines.append(row(f"`{t['model']}` · {kind}", counts(part)))
    lines.append(row("**all**", counts(every)))
    total = counts(every)
    lines += ["", f"{total['instances']} instances over {len(tables)} model{'s' if len(tables) != 1 else ''}, "
              f"**{total['contradictions']} contradiction{'s' if total['contradictions'] != 1 else ''}**. Of the "
              f"{total['open_verified'] + total['open_cex'] + total['open_open']} instances "
              f"ctxbudget leaves open, α,β-CROWN proves {total['open_verified']} safe and finds a counterexample for "
              f"{total['open_cex']}; {total['open_open']} stay open (timeouts). The last column brackets the true "
              "verified error on these instances: at most ours minus the instances α,β-CROWN proves, at least the "
              "misclassified and the counterexamples."]
    lines += ["", "Per-model tables and commands: " + ", ".join(f"[{t['model']}]({t.get('file', t['model'])}.md)"
                                                              for t in tables)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", nargs="+", type=Path, help="TABLE.json files written by crosscheck_abcrown.py")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    tables = []
    for p in a.tables:
        try:
            tables.append({**json.loads(p.read_text()), "file": p.stem})
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {p}: {exc}")
            return 2
    text = summarize(tables)
    if a.out:
        a.out.write_text(text)
        print(f"wrote {a.out}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
