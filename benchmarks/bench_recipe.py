"""Step time of every row of a reproduce experiment (default: ``ablation``), in one process, round robin.

    python benchmarks/bench_recipe.py --data-dir ../shared/data --threads 1 --steps 10
    python benchmarks/bench_recipe.py --experiment fast --schedule paper --data-dir ../shared/data

Each row's model, budgets and objective are built from its config exactly as ``ctxbudget reproduce
EXPERIMENT --schedule SCHEDULE`` trains it (``rundir.build_models``, ``models.initialize_``,
``Objective`` with the row's loss keys), and one optimizer step (objective + backward + Adam) is
timed at the most expensive point of its schedule: the target ε0, β = 1 (the CROWN-IBP pass on),
κ = κ_final and the warm-up regularisers at full weight λ0 (where the row has them). A natural step
(ε0 = 0, the base row's model) is the unit. Rows take turns step by step, so load changes on a
shared machine hit every row alike; the table gives the median step and its ratio to natural.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from ctxbudget.config import load_config
from ctxbudget.data import get_dataset
from ctxbudget.models import initialize_
from ctxbudget.reproduce.experiments import get_experiment, schedule_overrides
from ctxbudget.reproduce.runner import config_path
from ctxbudget.run import build_models
from ctxbudget.runtime import tune_allocator
from ctxbudget.train.objective import Objective
from ctxbudget.train.trainer import make_adam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="ablation")
    ap.add_argument("--schedule", default="cpu", choices=("cpu", "paper"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    exp = get_experiment(args.experiment)
    ds = get_dataset(exp.dataset, "train", root=args.data_dir)
    info = ds.info
    g = torch.Generator().manual_seed(0)
    names, steps = [], []
    for i, row in enumerate(exp.rows):
        kind = "uniform" if "uniform" in row.config else "learned"
        cfg = load_config(config_path(row.config), schedule_overrides(exp, row, args.schedule, kind))
        classifier, threat = build_models(cfg, info.input_shape, info.num_classes, info.mean, info.std)
        initialize_(classifier, cfg.model.init)
        lc = cfg.loss
        obj = Objective(classifier, threat, warmup_tol=lc.warmup_tol, mtl_alpha=lc.mtl_alpha,
                        attack_steps=lc.attack_steps, attack_step_size=lc.attack_step_size)
        opt = make_adam([{"params": list(classifier.parameters()) + list(threat.parameters()), "lr": 1e-4}])
        points = [(cfg.budget.eps0, lc.kappa_final, 1.0, lc.method, lc.fusion, lc.warmup_reg)]
        if i == 0:
            names.append("natural (ε0 = 0, " + cfg.model.name + ")")
            points.insert(0, (0.0, 1.0, 1.0, "ibp", True, 0.0))
        names.append(f"{row.name}: {row.note or row.config}")
        for eps0, kappa, beta, method, fusion, warm in points:
            def step(obj=obj, opt=opt, eps0=eps0, kappa=kappa, beta=beta, method=method, fusion=fusion,
                     warm=warm, bs=cfg.optim.batch_size) -> float:
                idx = torch.randint(0, len(ds), (bs,), generator=g)
                x, y = ds.images[idx], ds.labels[idx]
                t0 = time.perf_counter()
                loss, _ = obj(x, y, eps0, kappa, beta, method, fusion, warm)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return time.perf_counter() - t0
            steps.append(step)
    times: list[list[float]] = [[] for _ in steps]
    for i in range(args.steps + 2):
        for j, step in enumerate(steps):
            t = step()
            if i >= 2:
                times[j].append(t)
    med = [statistics.median(t) for t in times]
    print(f"{exp.name}, schedule {args.schedule}: one step at the target ε0 (β = 1, κ_final, warm-up weight λ0), "
          f"CPU, {args.threads} thread(s), median of {args.steps} steps")
    print("| row | step (ms) | × natural |\n|---|---|---|")
    for name, t in zip(names, med):
        print(f"| {name} | {1000 * t:.0f} | {t / med[0]:.2f} |")


if __name__ == "__main__":
    main()
