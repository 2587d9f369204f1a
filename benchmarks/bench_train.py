"""Training throughput: seconds per epoch of certified training vs natural training, same run.

    python benchmarks/bench_train.py --data-dir ../shared/data            # full MNIST, DM-small
    python benchmarks/bench_train.py --steps 50 --model dm-large           # extrapolated from 50 steps
    python benchmarks/bench_train.py --device cuda --head dense            # on a GPU, the paper's head

Times the trainer's own step (``ctxbudget.train.objective.Objective`` + backward + Adam) for
natural training (ε0 = 0) and for certified training at the target ε0 with β = 1 (CROWN-IBP pass
active, the most expensive point of the schedule), with learned and uniform budgets, plus the
budget generator alone, and the fast recipe of ``mnist-learned-0.4-fast`` (the ``-bn`` variant of
``--model``, IBP, warm-up regularisers at full weight: the most expensive point of its ramp) alone
and with MTL-IBP's adversarial term (one PGD step). Configurations take turns step by step (round
robin). Reports the seconds per epoch (steps × median step time) and the ratio to natural training.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from ctxbudget.budgets import LearnedBudget, UniformBudget
from ctxbudget.data import get_dataset
from ctxbudget.models import MODELS, BudgetGenerator, get_model
from ctxbudget.models.generator import DEFAULT_HEAD, HEADS
from ctxbudget.runtime import tune_allocator
from ctxbudget.train.objective import Objective
from ctxbudget.train.trainer import make_adam


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(objective: Objective, params, x_all, y_all, batch: int, eps0: float, method: str, fusion: bool,
              kappa: float, generator_only: bool = False, warmup_weight: float = 0.0) -> Callable[[], float]:
    """A closure that runs one timed optimizer step on a random batch and returns its seconds.

    ``generator_only``: just ε(x) + backward + Adam on the generator (what learned budgets add
    to a step before any bound is computed)."""
    opt = make_adam([{"params": params, "lr": 5e-4}])  # the trainer's optimizer
    g = torch.Generator().manual_seed(0)

    def step() -> float:
        idx = torch.randint(0, len(x_all), (batch,), generator=g).to(x_all.device)
        x, y = x_all[idx], y_all[idx]                 # data stay on the device: no host copies
        _sync(x_all.device)
        t0 = time.perf_counter()
        if generator_only:
            loss = objective.threat(x, eps0).sum()
        else:
            loss, _ = objective(x, y, eps0, kappa, 1.0, method, fusion, warmup_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(x_all.device)
        return time.perf_counter() - t0

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--model", default="dm-small")
    ap.add_argument("--eps0", type=float, default=0.4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per configuration (after 2 warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--head", default=DEFAULT_HEAD, choices=HEADS, help="generator head (default: %(default)s)")
    args = ap.parse_args()
    device = torch.device(args.device)
    tune_allocator()  # as `ctxbudget train` does
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ds = get_dataset(args.data, "train", root=args.data_dir)
    shape, k = ds.info.input_shape, ds.info.num_classes
    steps_per_epoch = len(ds) // args.batch_size
    images, labels = ds.images.to(device), ds.labels.to(device)
    classifier = get_model(args.model, shape, k, ds.info.mean, ds.info.std).to(device)
    learned = LearnedBudget(BudgetGenerator(shape, head=args.head), args.eps0, 0.5, 2.0,
                            compute_dtype=torch.float32).to(device)
    learned_bf16 = LearnedBudget(BudgetGenerator(shape, head=args.head), args.eps0, 0.5, 2.0,
                                 compute_dtype=torch.bfloat16).to(device)
    configs = [("natural", UniformBudget(0.0).to(device), 0.0, "ibp", True, 1.0, False),
               ("(generator alone, float32: ε(x) + backward + Adam)", learned, args.eps0, "ibp", True, 0.5, True),
               ("(generator alone, bf16 autocast)", learned_bf16, args.eps0, "ibp", True, 0.5, True),
               ("learned, IBP", learned, args.eps0, "ibp", True, 0.5, False),
               ("learned, CROWN-IBP loss fusion (generator float32)", learned, args.eps0, "crown-ibp", True, 0.5, False),
               ("learned, CROWN-IBP loss fusion (generator bf16)", learned_bf16, args.eps0, "crown-ibp", True, 0.5, False),
               ("learned, CROWN-IBP margins", learned, args.eps0, "crown-ibp", False, 0.5, False),
               ("uniform, CROWN-IBP loss fusion", UniformBudget(args.eps0).to(device), args.eps0, "crown-ibp", True, 0.5, False)]
    # the fast recipe: BatchNorm variant of the model, IBP, warm-up regularisers (± MTL-IBP, one PGD step)
    bn_model = f"{args.model}-bn" if f"{args.model}-bn" in MODELS else None
    fast: list[tuple[str, dict]] = [] if bn_model is None else [
        (f"learned, fast recipe ({bn_model}, IBP, warm-up regularisers)", {}),
        (f"learned, fast recipe + MTL-IBP (1 PGD step, {bn_model})", {"mtl_alpha": 0.5})]
    steps = []
    for _name, threat, eps0, method, fusion, kappa, gen_only in configs:
        obj = Objective(classifier, threat)
        params = list(threat.parameters()) if gen_only else list(classifier.parameters()) + list(threat.parameters())
        steps.append(make_step(obj, params, images, labels, args.batch_size, eps0, method, fusion, kappa, gen_only))
    for name, kw in fast:
        bn = get_model(str(bn_model), shape, k, ds.info.mean, ds.info.std).train().to(device)
        obj = Objective(bn, learned, **kw)
        configs.append((name, learned, args.eps0, "ibp", True, 0.5, False))
        steps.append(make_step(obj, list(bn.parameters()) + list(learned.parameters()), images, labels,
                               args.batch_size, args.eps0, "ibp", True, 0.5, warmup_weight=0.5))
    # round robin, so that load changes on a shared machine hit every configuration alike
    times: list[list[float]] = [[] for _ in configs]
    for i in range(args.steps + 2):
        for j, step in enumerate(steps):
            t = step()
            if i >= 2:  # warm-up
                times[j].append(t)
    medians = [statistics.median(t) for t in times]
    natural = medians[0]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{args.model} on {args.data} ({len(ds)} images, batch {args.batch_size}, {steps_per_epoch} steps/epoch, "
          f"{where}, eps0 {args.eps0}, generator head {args.head}; median of {args.steps} steps)")
    print("| configuration | step (ms) | s / epoch | × natural |\n|---|---|---|---|")
    for (name, *_), t in zip(configs, medians):
        print(f"| {name} | {1000 * t:.1f} | {t * steps_per_epoch:.1f} | {t / natural:.2f} |")


if __name__ == "__main__":
    main()
