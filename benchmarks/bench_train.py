"""Training throughput: seconds per epoch of certified training vs natural training, same run.

    python benchmarks/bench_train.py --data-dir ../shared/data            # full MNIST, DM-small
    python benchmarks/bench_train.py --steps 50 --model dm-large           # extrapolated from 50 steps

Times the trainer's own step (``ctxbudget.train.objective.Objective`` + backward + Adam) for
natural training (ε0 = 0) and for certified training at the target ε0 with β = 1 (CROWN-IBP pass
active, the most expensive point of the schedule), with learned and uniform budgets. Reports the
seconds per epoch (steps × median step time) and the ratio to natural training.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from ctxbudget.budgets import LearnedBudget, UniformBudget
from ctxbudget.data import get_dataset
from ctxbudget.models import BudgetGenerator, get_model
from ctxbudget.train.objective import Objective


def time_steps(objective: Objective, params, x_all, y_all, batch: int, steps: int, eps0: float,
               method: str, fusion: bool, kappa: float) -> list[float]:
    opt = torch.optim.Adam(params, lr=5e-4)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 2):
        idx = torch.randint(0, len(x_all), (batch,), generator=g)
        t0 = time.perf_counter()
        loss, _ = objective(x_all[idx], y_all[idx], eps0, kappa, 1.0, method, fusion)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--model", default="dm-small")
    ap.add_argument("--eps0", type=float, default=0.4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per configuration (after 2 warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ds = get_dataset(args.data, "train", root=args.data_dir)
    shape, k = ds.info.input_shape, ds.info.num_classes
    steps_per_epoch = len(ds) // args.batch_size
    classifier = get_model(args.model, shape, k, ds.info.mean, ds.info.std)
    learned = LearnedBudget(BudgetGenerator(shape), args.eps0, 0.5, 2.0)
    rows = []
    configs = [("natural", UniformBudget(0.0), 0.0, "ibp", True, 1.0),
               ("learned, IBP", learned, args.eps0, "ibp", True, 0.5),
               ("learned, CROWN-IBP loss fusion", learned, args.eps0, "crown-ibp", True, 0.5),
               ("learned, CROWN-IBP margins", learned, args.eps0, "crown-ibp", False, 0.5),
               ("uniform, CROWN-IBP loss fusion", UniformBudget(args.eps0), args.eps0, "crown-ibp", True, 0.5)]
    for name, threat, eps0, method, fusion, kappa in configs:
        obj = Objective(classifier, threat)
        params = list(classifier.parameters()) + list(threat.parameters())
        t = statistics.median(time_steps(obj, params, ds.images, ds.labels, args.batch_size, args.steps,
                                         eps0, method, fusion, kappa))
        rows.append((name, t))
    natural = rows[0][1]
    print(f"{args.model} on {args.data} ({len(ds)} images, batch {args.batch_size}, {steps_per_epoch} steps/epoch, "
          f"{args.threads} threads, eps0 {args.eps0})")
    print(f"| configuration | step (ms) | s / epoch | × natural |\n|---|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {1000 * t:.1f} | {t * steps_per_epoch:.1f} | {t / natural:.2f} |")


if __name__ == "__main__":
    main()
