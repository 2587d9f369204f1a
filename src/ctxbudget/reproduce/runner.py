"""Run one experiment of the paper end to end: train (or resume) every row, evaluate, draw, tabulate.

``plan_experiment`` decides, per row, what is left to do in the output directory:

* ``unavailable`` — the row's data set is not on this machine (the reason is kept for the table);
* ``train`` — no run yet; ``resume`` — a run that stopped before its last epoch;
* ``evaluate`` — training finished but ``results.json`` is missing or older than the weights;
* ``done`` — nothing left.

``run_experiment`` carries the plan out in this process (``ctxbudget.train.trainer.train/resume``,
``ctxbudget.evaluate.evaluate_run``, ``visualize_run``) and writes ``OUT/<experiment>.md`` (the
paper's numbers beside ours, the contextuality of the learned budgets, the schedule, commands and
wall times) and ``OUT/<experiment>.json``. A row whose folder holds a run trained with another
config is an error, never silently mixed in.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import run as rundir
from ..budgets import UniformBudget
from ..config import RunConfig, load_config
from ..data import get_info, resolve_data_root
from ..data.registry import get_spec
from ..devices import resolve as resolve_device
from ..errors import UserError
from ..evaluate.evaluate import evaluate_model, evaluate_run, load_split
from ..evaluate.report import contextuality_table
from ..evaluate.visualize import visualize_run
from ..presets import packaged_config
from ..run import load_run
from ..train.trainer import resume, train
from .experiments import Experiment, Row, get_experiment, schedule_overrides

# keys that may differ between the planned config and a run's config.yaml without being a mismatch
_VOLATILE = {("data", "root"), ("budget", "generator_precision"), ("device",), ("num_threads",)}


@dataclass
class RowPlan:
    row: Row
    run_dir: Path
    status: str                        # unavailable | train | resume | evaluate | done
    config: RunConfig | None
    overrides: list[str]
    reason: str = ""
    commands: list[str] = field(default_factory=list)


def config_path(name: str) -> str:
    """Path of the packaged config ``name`` (``ctxbudget configs`` lists them)."""
    return str(packaged_config(name))


def data_available(dataset: str, root: str | None) -> tuple[bool, str]:
    """Whether the files of ``dataset`` are present under ``root`` (no download), and why not."""
    spec = get_spec(dataset)
    missing = [p for split in spec.splits for p in spec.files(root, split) if not Path(p).exists()]
    if missing:
        where = resolve_data_root(root)
        return False, f"{dataset} is not on this machine (looked for {missing[0]} under data root {where})"
    return True, ""


def _flatten(d: dict, prefix: tuple = ()) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def config_mismatch(planned: RunConfig, stored: RunConfig) -> list[str]:
    """Keys whose values differ and matter to training (a uniform run trained before the default head
    changed still matches: its generator keys are inert). Also used by ``ctxbudget models register``
    to write the command that trains a registered model."""
    a, b = _flatten(planned.to_dict()), _flatten(stored.to_dict())
    skip = _VOLATILE | (planned.inert_keys() & stored.inert_keys())
    return [".".join(k) for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)]


def _finished_epoch(run_dir: Path) -> int | None:
    final = run_dir / rundir.FINAL
    if not final.is_file():
        return None
    epoch = rundir.Checkpoint.load(final).epoch
    return -1 if epoch is None else int(epoch)


def plan_experiment(name: str, out_dir: str | Path, *, schedule: str = "paper", overrides: list[str] | None = None,
                    data_dir: str | None = None, rows: list[str] | None = None,
                    eval_args: list[str] | None = None) -> tuple[Experiment, list[RowPlan]]:
    """What is left to do for experiment ``name`` in ``out_dir`` (see the module docstring)."""
    exp = get_experiment(name)
    out = Path(out_dir)
    chosen = list(exp.rows)
    if rows:
        known = {r.name for r in exp.rows}
        bad = [r for r in rows if r not in known]
        if bad:
            raise UserError(f"unknown row(s) {', '.join(bad)} of {name}; rows: {', '.join(sorted(known))}")
        chosen = [r for r in exp.rows if r.name in rows]
    plans = []
    ok, why = data_available(exp.dataset, data_dir)           # every row trains on the same data set
    for row in chosen:
        run_dir = out / name / row.name
        kind = "uniform" if "uniform" in row.config else "learned"
        ovr = schedule_overrides(exp, row, schedule, kind) + list(overrides or [])
        if data_dir is not None:
            ovr.append(f"data.root={data_dir}")             # as given: config.yaml holds no absolute path
        if not ok:
            plans.append(RowPlan(row, run_dir, "unavailable", None, ovr, reason=why))
            continue
        cfg = load_config(config_path(row.config), ovr)
        plan = RowPlan(row, run_dir, "train", cfg, ovr)
        if rundir.is_run_dir(run_dir):
            stored = rundir.read_config(run_dir)
            diff = config_mismatch(cfg, stored)
            if diff:
                raise UserError(f"{run_dir} holds a run trained with another config ({', '.join(diff[:4])} differ); "
                                "remove it or choose another --out")
            done = _finished_epoch(run_dir)
            if done is None or done < cfg.optim.epochs:
                plan.status = "resume"
            elif not _row_outputs_complete(run_dir, plan.row):
                plan.status = "evaluate"
            else:
                plan.status = "done"
        sets = " ".join(f"--set {shlex.quote(o)}" for o in ovr)
        train_cmd = (f"ctxbudget train --config {row.config} --out {run_dir} {sets} --no-progress"
                     if plan.status == "train" else f"ctxbudget train --resume {run_dir} --no-progress")
        eval_cmd = f"ctxbudget evaluate {run_dir} {' '.join(eval_args or [])} --no-progress".replace("  ", " ")
        plan.commands = ([train_cmd] if plan.status in ("train", "resume") else []) + \
            ([eval_cmd, f"ctxbudget visualize {run_dir}"] if plan.status != "done" else [])
        plans.append(plan)
    return exp, plans


def run_experiment(name: str, out_dir: str | Path, *, schedule: str = "paper", overrides: list[str] | None = None,
                   data_dir: str | None = None, rows: list[str] | None = None, eval_limit: int | None = None,
                   liu_limit: int = 100, methods: tuple[str, ...] = ("ibp", "crown-ibp"), device: str | None = None,
                   progress: bool | None = False, log: Callable[[str], None] = print,
                   table_only: bool = False) -> Path:
    """Train/resume, evaluate and draw every row of experiment ``name``; write its table. Returns the
    path of ``OUT/<name>.md``. ``table_only``: run nothing, tabulate the rows that are done."""
    eval_args = ([f"--limit {eval_limit}"] if eval_limit else []) + [f"--liu-limit {liu_limit}",
                                                                      f"--bounds {','.join(methods)}"]
    exp, plans = plan_experiment(name, out_dir, schedule=schedule, overrides=overrides, data_dir=data_dir,
                                 rows=rows, eval_args=eval_args)
    for plan in plans:
        if plan.status in ("unavailable", "done") or table_only:
            log(f"[{name}/{plan.row.name}] {plan.status}{': ' + plan.reason if plan.reason else ''}")
            continue
        assert plan.config is not None
        if plan.status == "train":
            log(f"[{name}/{plan.row.name}] training: {plan.commands[0]}")
            train(plan.config, plan.run_dir, device=device, progress=progress)
        elif plan.status == "resume":
            log(f"[{name}/{plan.row.name}] resuming {plan.run_dir}")
            resume(plan.run_dir, overrides={"data": {"root": data_dir}} if data_dir is not None else None,
                   device=device, progress=progress)
        log(f"[{name}/{plan.row.name}] evaluating")
        with rundir.exclusive(plan.run_dir):
            run = load_run(plan.run_dir, device=resolve_device(device or plan.config.device))
            evaluate_run(run, limit=eval_limit, liu_limit=liu_limit, methods=methods, progress=progress,
                         data_dir=data_dir)
            if plan.row.uniform_eps is not None:
                _evaluate_extra_uniform(run, plan.row.uniform_eps, eval_limit, methods, data_dir)
            visualize_run(run, plan.run_dir / "figures", data_dir=data_dir)
    path = write_tables(exp, plans, Path(out_dir), schedule)
    log(f"wrote {path}")
    return path


def _row_outputs_complete(run_dir: Path, row: Row) -> bool:
    """Whether a trained row's evaluation finished: ``results.json`` newer than the final weights, the
    extra uniform column where the row has one, and ``figures/budget_stats.json`` (written last by
    ``visualize``) no older than results.json. Each is written atomically, so an evaluation killed at
    any point leaves the row to be evaluated again, never half a row taken as done."""
    results, stats = run_dir / "results.json", run_dir / "figures" / "budget_stats.json"
    if not results.is_file() or results.stat().st_mtime < (run_dir / rundir.FINAL).stat().st_mtime:
        return False
    if row.uniform_eps is not None and not (run_dir / f"results_uniform-{row.uniform_eps:g}.json").is_file():
        return False
    return stats.is_file() and stats.stat().st_mtime >= results.stat().st_mtime


def _evaluate_extra_uniform(run: rundir.Run, eps: float, limit: int | None, methods: tuple[str, ...],
                            data_dir: str | None = None) -> None:
    """Verified error of ``run``'s classifier under the uniform budget ``eps`` (Appendix C), written
    to ``RUN_DIR/results_uniform-<eps>.json``."""
    ds = load_split(run, "test", data_dir)
    x, y = (ds.images, ds.labels) if limit is None else (ds.images[:limit], ds.labels[:limit])
    res = evaluate_model(run.classifier, UniformBudget(eps), x, y, methods=methods, liu_limit=0)
    rundir.atomic_write_bytes(Path(run.run_dir) / f"results_uniform-{eps:g}.json",
                              (json.dumps(res, indent=2) + "\n").encode())


# --------------------------------------------------------------------------------- tables
def _pct(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{100 * float(v):.2f}"


def _paper(v: Any) -> str:
    return "–" if v is None else (v if isinstance(v, str) else f"{float(v):.2f}")


def _wall(run_dir: Path) -> tuple[int, float]:
    rows = rundir.read_metrics(run_dir) if (run_dir / rundir.METRICS).is_file() else []
    epochs = max((int(r["epoch"]) for r in rows), default=0)
    return epochs, sum(float(r.get("seconds", 0.0)) for r in rows)


def head_name(cfg: RunConfig) -> str:
    """The generator head as the tables name it: ``context``, ``context (zero padding)``, ``context (half
    resolution)``, ``context (low resolution)``, ``dense``, ``conv``, ``mix (w = 0.5)``."""
    b = cfg.budget
    if b.generator not in ("context", "mix"):
        return b.generator
    notes = (["zero padding"] if b.generator_padding == "zeros" else []) + \
        ([f"{b.generator_resolution} resolution"] if b.generator_resolution != "full" else [])
    if b.generator == "mix":
        if b.generator_mix_range is not None:
            notes = [f"dense part within ±{float(b.generator_mix_range):g}"] + notes
        return f"mix (w = {float(b.generator_mix):g}{''.join(', ' + n for n in notes)})"
    return f"context ({', '.join(notes)})" if notes else "context"


def row_summary(exp: Experiment, plan: RowPlan) -> dict:
    """Ours and the paper's numbers of one row (fractions in [0, 1] for ours, % for the paper's)."""
    out: dict = {"row": plan.row.name, "config": plan.row.config, "status": plan.status, "reason": plan.reason,
                 "paper": plan.row.paper, "note": plan.row.note, "run_dir": str(plan.run_dir)}
    res_path = plan.run_dir / "results.json"
    if plan.status == "unavailable" or not res_path.is_file():
        return out
    res = json.loads(res_path.read_text())
    kind = res.get("training", {}).get("kind", "learned")
    ve = res["verified_err"]
    ours = {"clean": res["clean_err"], "liu2019": ve.get("liu2019"), "uniform": ve.get("uniform"),
            "learned": ve.get("learned") if kind == "learned" else None,
            "attack_learned": res.get("attack_err", {}).get("learned" if kind == "learned" else "uniform")}
    if plan.row.uniform_eps is not None:
        extra = plan.run_dir / f"results_uniform-{plan.row.uniform_eps:g}.json"
        ours["uniform"] = json.loads(extra.read_text())["verified_err"]["uniform"] if extra.is_file() else None
    epochs, seconds = _wall(plan.run_dir)
    head = head_name(rundir.read_config(plan.run_dir)) if kind == "learned" else "–"
    out.update(ours=ours, kind=kind, head=head, n=res["n"], n_liu2019=res.get("n_liu2019"), epochs=epochs,
               train_seconds=seconds, eval_seconds=res.get("seconds", {}).get("total"),
               contextuality=res.get("contextuality"), soundness_violations=res.get("soundness_violations"),
               config_overrides=plan.overrides)
    return out


def write_tables(exp: Experiment, plans: list[RowPlan], out_dir: Path, schedule: str) -> Path:
    """Write ``OUT/<experiment>.md`` and ``.json`` from the rows' results; return the .md path."""
    summaries = [row_summary(exp, p) for p in plans]
    head = ["row", "schedule", "generator head", "clean err. ours / paper", "verified Liu et al. ours / paper",
            "verified uniform ours / paper", "verified learned ours / paper", "PGD err. ours", "n test (Liu)",
            "epochs", "train time", "note"]
    lines = [f"# {exp.title}", "", f"Data: {get_info(exp.dataset).label}.", "", f"Paper's claim: {exp.claim}.", "",
             f"Schedule: `{schedule}`. Errors in %; \"verified\" = certified by IBP or CROWN-IBP (best per "
             "example); ours on the test examples counted in the n column, the paper's on the full test set.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for s in summaries:
        p = s["paper"]
        if "ours" not in s:
            status = s["reason"] or f"not finished ({s['status']})"
            cells = [s["row"], schedule, "–",
                     *[f"not run / {_paper(p.get(k))}" for k in ("clean", "liu2019", "uniform", "learned")],
                     "–", "–", "–", "–", f"{status}; {s['note']}" if s["note"] else status]
        else:
            o = s["ours"]
            mins = s["train_seconds"] / 60
            cells = [s["row"], schedule, s["head"],
                     *[f"{_pct(o[k])} / {_paper(p.get(k))}" for k in ("clean", "liu2019", "uniform", "learned")],
                     _pct(o["attack_learned"]), f"{s['n']} ({s['n_liu2019']})", str(s["epochs"]), f"{mins:.0f} min",
                     s["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    ctx = contextuality_table([{"contextuality": s.get("contextuality"), "training": {"kind": s.get("kind")}}
                               for s in summaries if "ours" in s], [s["row"] for s in summaries if "ours" in s])
    if ctx:
        lines += ["", "Contextuality of the learned budgets (test images):", "", ctx.rstrip()]
    figs = [s for s in summaries if "ours" in s and s.get("kind") == "learned"]
    if figs:
        lines += ["", "Budget maps: " + ", ".join(f"[{s['row']}]({exp.name}/{s['row']}/figures/budget_maps.png)"
                                               for s in figs)]
    lines += ["", "Commands (each row; `ctxbudget reproduce` runs them):", ""]
    for p in plans:
        if p.status == "unavailable":
            continue
        sets = " ".join(f"--set {shlex.quote(o)}" for o in p.overrides if not o.startswith("data.root="))
        lines.append(f"    ctxbudget train --config {p.row.config} --out {p.run_dir} {sets}".rstrip())
    md = out_dir / f"{exp.name}.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_bytes(md, ("\n".join(lines) + "\n").encode())
    rundir.atomic_write_bytes(out_dir / f"{exp.name}.json",
                              (json.dumps({"experiment": exp.name, "schedule": schedule,
                                           "data_source": get_info(exp.dataset).label,
                                           "rows": summaries}, indent=2, default=str) + "\n").encode())
    return md
