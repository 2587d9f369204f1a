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
import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

KINDS = ("learned", "uniform")


@functools.cache
def _crosscheck() -> Any:
    """``scripts/crosscheck_abcrown.py`` as a module: its :func:`summarize_rows` is the one place the
    verdict pairs are classified (what is a contradiction, what α,β-CROWN settles)."""
    path = Path(__file__).with_name("crosscheck_abcrown.py")
    spec = importlib.util.spec_from_file_location("crosscheck_abcrown", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Verdict counts of the rows α,β-CROWN ran on (``abcrown`` not "not run"), from
    ``crosscheck_abcrown.summarize_rows``; ``misclassified`` counts every example ctxbudget finds
    misclassified but those α,β-CROWN proves safe (contradictions), whatever else it says."""
    s = _crosscheck().summarize_rows(rows)
    ran = [r for r in rows if r["abcrown"] != "not run"]
    return {"instances": s["run"], "contradictions": s["contradictions"], "certified_both": s["agree_certified"],
            "misclassified_cex": sum(r["ctxbudget"] == "misclassified" for r in ran)
            - s["contradictions_misclassified_vs_safe"],
            "open_verified": s["open_verified_by_abcrown"], "open_cex": s["open_counterexample_by_abcrown"],
            "open_open": s["open_left_open"],
            "certified_abcrown_timeout": sum(r["ctxbudget"] == "certified" and r["abcrown"] in ("timeout", "error")
                                             for r in ran),
            "ours_certified": sum(r["ctxbudget"] == "certified" for r in ran)}


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
