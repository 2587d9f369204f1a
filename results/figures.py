"""The paper's Figures 2–5 with both generator heads side by side: results/figures.md.

For each figure's setting, 8 test images, the budget maps of the paper's dense head and of the
default context head (the same classifier recipe and schedule), with each panel's contextuality
figures under it (mean ε on the stroke / background pixels of that image, on the lit watermark /
outside its box, on the attended / ignored half) and each run's input-dependent share over 1,000
test images.

    python results/figures.py --runs runs --out results

expects the runs of ``ctxbudget reproduce EXPERIMENT --out RUNS/cpu-dense --schedule cpu --set
budget.generator=dense`` and ``... --out RUNS/cpu-context --schedule cpu`` (rows below), and for the
last panel the paper-schedule runs of results/paper-schedule/README.md; Figures 3 and 5 on CIFAR-10's JPEG
copy expect ``ctxbudget reproduce table2-jpeg|table4-jpeg --out RUNS/cpu-jpeg --schedule cpu`` (and
``--out RUNS/cpu-jpeg-dense --set budget.generator=dense``). ``--only NAME,…`` redraws those figures and
replaces only their sections of OUT/figures.md. A setting with one head's run missing is drawn with the
other head alone, and says so.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import ctxbudget
from ctxbudget import viz
from ctxbudget.contextuality import contextuality_of, region_masks
from ctxbudget.evaluate.evaluate import load_split
from ctxbudget.reproduce.runner import head_name

FIGURES = (  # (name, the paper's figure, schedule, the dense run and the context run under --runs)
    ("figure2", "Figure 2: MNIST, ε0 = 0.6 (learned budgets follow each digit)", "cpu",
     "cpu-dense/table1/learned-0.6", "cpu-context/table1/learned-0.6"),
    ("figure4", "Figure 4: Watermarked MNIST, ε0 = 0.3 (small budgets on the watermark)", "cpu",
     "cpu-dense/table3/learned-0.3", "cpu-context/table3/learned-0.3"),
    ("figure5", "Figure 5 on Doubled MNIST, ε0 = 0.3 (large budgets on the ignored half)", "cpu",
     "cpu-dense/doubled-mnist/learned-0.3", "cpu-context/doubled-mnist/learned-0.3"),
    ("table1-paper-schedule", "Table 1's MNIST ε0 = 0.4 at the paper's schedule (100 epochs, 60,000 images)", "paper",
     "paper-dense/table1/learned-0.4", "gpu-rows/t1-0.4-context/table1/learned-0.4"),
    ("figure3", "Figure 3: CIFAR-10 (JPEG copy), ε0 = 8/255 (learned budgets follow each object)", "cpu",
     "cpu-jpeg-dense/table2-jpeg/learned-8", "cpu-jpeg/table2-jpeg/learned-8"),
    ("figure5-cifar", "Figure 5: Doubled CIFAR-10 (JPEG copy), ε0 = 16/255 (large budgets on the ignored half)", "cpu",
     "cpu-jpeg-dense/table4-jpeg/learned-16", "cpu-jpeg/table4-jpeg/learned-16"),
)
SHORT = {"stroke_vs_background": "s/b", "watermark_vs_elsewhere": "wm/out", "attended_vs_ignored": "att/ign"}


def panel_notes(eps: torch.Tensor, images: torch.Tensor, dataset: str, regions: torch.Tensor | None) -> list[str]:
    """Per image: the ratios of mean budgets of the region pairs of ``contextuality.region_masks``."""
    notes = []
    for i in range(len(images)):
        masks = region_masks(dataset, images[i:i + 1], None if regions is None else regions[i:i + 1])
        if images.shape[1] > 1:                  # colour images have no strokes: bright vs dark means nothing
            masks.pop("stroke_vs_background", None)
        parts = []
        for name, (a, b) in masks.items():
            ea, eb = eps[i:i + 1][a], eps[i:i + 1][b]
            if ea.numel() and eb.numel():
                parts.append(f"{SHORT[name]} {float(ea.mean() / eb.mean()):.2f}")
        notes.append(" ".join(parts))
    return notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs", help="folder holding cpu-dense/ and cpu-context/")
    ap.add_argument("--out", default="results", help="writes OUT/figures.md and OUT/figures/*.png")
    ap.add_argument("--num", type=int, default=8)
    ap.add_argument("--only", default=None, metavar="NAME,…", help="redraw these figures only: " +
                    ", ".join(f[0] for f in FIGURES))
    args = ap.parse_args()
    out = Path(args.out)
    only = set(args.only.split(",")) if args.only else None
    sections: dict[str, list[str]] = {}
    lines = ["# The paper's budget-map figures: dense head (the paper's) vs context head (the default)", "",
             "Eight test images per setting (the first eight of the test split), the same classifier recipe and "
             "schedule for both heads (`cpu` unless the section says otherwise); under each map: mean budget on "
             "stroke / background pixels of that image (s/b), on the lit "
             "watermark / outside its box (wm/out), on the attended / ignored half (att/ign). Lighter = larger "
             "budget (ε/u). Re-create with `python results/figures.py --runs runs --out results` after the runs "
             "named in its docstring.", ""]
    for name, caption, schedule, dense, context in FIGURES:
        if only is not None and name not in only:
            continue
        runs = [("paper", Path(args.runs) / dense), ("default", Path(args.runs) / context)]
        missing = [str(p) for _, p in runs if not (p / "final.pt").is_file()]
        runs = [(w, p) for w, p in runs if (p / "final.pt").is_file()]
        if not runs:
            sections[caption] = [f"## {caption}", "", f"not drawn: no finished run in {', '.join(missing)}", ""]
            continue
        loaded = [(label, ctxbudget.load_run(p)) for label, p in runs]
        ds = load_split(loaded[0][1], "test")
        x = ds.images[:args.num]
        regions = getattr(ds, "regions", None)
        rows, stats = [], []
        for which, run in loaded:
            label = f"{head_name(run.config)} ({which})"
            with torch.no_grad():
                eps = run.budgets(x)
                many = torch.cat([run.budgets(ds.images[i:i + 250]) for i in range(0, 1000, 250)])
            ctx = contextuality_of(many, ds.images[:1000], dataset_name=run.dataset,
                                   regions=None if regions is None else regions[:1000])
            share = 100 * ctx["input_dependent_share"]
            rows.append((f"{label}\nshare {share:.1f} %", eps, run.limits()[1],
                         panel_notes(eps, x, run.dataset, None if regions is None else regions[:args.num])))
            ratios = ", ".join(f"{SHORT[k]} ×{v['ratio']:.2f}" for k, v in ctx.items()
                               if isinstance(v, dict) and v.get("ratio") is not None
                               and not (k == "stroke_vs_background" and x.shape[1] > 1))
            stats.append(f"| {label} | `{run.run_dir}` | {share:.1f} | {ratios} |")
        classes = list(getattr(ds.info, "classes", []) or [])
        titles = [classes[int(t)] if classes else str(int(t)) for t in ds.labels[:args.num]]
        fig = viz.compare_budget_maps(x, rows, titles=titles, title=caption)
        viz.save_figure(fig, out / "figures" / name, formats=("png",))
        note = [f"Not drawn: the other head (no finished run in {', '.join(missing)}).", ""] if missing else []
        sections[caption] = [f"## {caption}", "", f"Schedule: `{schedule}`.", "", f"![{name}](figures/{name}.png)", "",
                             *note, "| head | run | input-dependent share (%), 1,000 test images | mean-ε ratios |",
                             "|---|---|---|---|", *stats, ""]
    if only is not None and (out / "figures.md").is_file():       # keep the other sections as they are
        lines = _replace_sections((out / "figures.md").read_text().split("\n"), sections)
    else:
        lines += [line for _, caption, *_ in FIGURES if caption in sections for line in sections[caption]]
    (out / "figures.md").write_text("\n".join(lines))
    print(f"wrote {out / 'figures.md'}")


def _replace_sections(lines: list[str], sections: dict[str, list[str]]) -> list[str]:
    """``lines`` of figures.md with the sections headed ``## CAPTION`` replaced by ``sections[CAPTION]``
    (appended where figures.md has none yet)."""
    out, skip = [], False
    for line in lines:
        if line.startswith("## "):
            skip = line[3:] in sections
            if skip:
                out += sections.pop(line[3:])
        if not skip:
            out.append(line)
    for body in sections.values():
        out += body
    return out


if __name__ == "__main__":
    main()
