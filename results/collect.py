"""Copy the small outputs of reproduced runs into results/ (never checkpoints).

    python results/collect.py runs/cpu-context results/context        # after `ctxbudget reproduce … --out runs/cpu-context`

For every run directory under SRC (a folder holding config.yaml): config.yaml (with an absolute
``data.root`` replaced by null), metrics.jsonl, train.log, results*.json and figures/*.png +
budget_stats.json, to the same relative path under DST; and SRC/*.md, SRC/*.json (the tables).
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path


def main(src: Path, dst: Path) -> None:
    for table in list(src.glob("*.md")) + list(src.glob("*.json")):
        dst.mkdir(parents=True, exist_ok=True)
        text = table.read_text().replace(str(src), str(dst))
        (dst / table.name).write_text(text)
    for config in sorted(src.rglob("config.yaml")):
        run = config.parent
        out = dst / run.relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(re.sub(r"(?m)^(\s*root:) /.*$", r"\1 null", config.read_text()))
        for name in ["metrics.jsonl", "train.log", *[p.name for p in run.glob("results*.json")]]:
            if (run / name).is_file():
                shutil.copy2(run / name, out / name)
        figs = run / "figures"
        if figs.is_dir():
            (out / "figures").mkdir(exist_ok=True)
            for f in list(figs.glob("*.png")) + list(figs.glob("budget_stats.json")):
                shutil.copy2(f, out / "figures" / f.name)
        print(f"{run} -> {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python results/collect.py SRC_RUNS_DIR DST_RESULTS_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
