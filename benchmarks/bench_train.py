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

Same-process comparisons (both take their turns in the same round robin):

* ``--baseline DIR``: DIR is the ``ctxbudget`` package folder of another commit (e.g. from
  ``git archive <commit> src/ctxbudget``); its ``Objective`` runs every certified configuration on
  the same models and batches, as an extra row "… [baseline]".
* ``--fused-relu``: every certified configuration again with the fused (torch.compile) ReLU rules,
  as an extra row "… [fused ReLU]"; the first such step of each (compilation) is printed.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ctxbudget.bounds.relu import fused_relu_unavailable, set_fused_relu
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


def load_baseline(folder: str):
    """The ``ctxbudget`` package in ``folder`` imported as module ``ctxbudget_baseline`` (its imports
    are relative, so it runs its own code side by side with the current package)."""
    init = Path(folder) / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--baseline {folder}: no __init__.py (give the ctxbudget package folder)")
    spec = importlib.util.spec_from_file_location("ctxbudget_baseline", init, submodule_search_locations=[folder])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ctxbudget_baseline"] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module("ctxbudget_baseline.train.objective")


def baseline_threat(threat, device: torch.device):
    """``threat`` rebuilt from the baseline package with the same weights (learned budgets), so that
    a baseline row runs the baseline's generator too; uniform budgets are shared as they are."""
    if not isinstance(threat, LearnedBudget):
        return threat
    budgets = importlib.import_module("ctxbudget_baseline.budgets")
    models = importlib.import_module("ctxbudget_baseline.models")
    gen = threat.generator
    kwargs = {"head": gen.head_kind}
    if gen.head_kind == "context" and gen.head.resolution != "full":  # older packages: full resolution only
        kwargs["resolution"] = gen.head.resolution
    shape = gen.input_shape
    twin = budgets.LearnedBudget(models.BudgetGenerator(shape, **kwargs), threat.eps0, threat.alpha_lo,
                                 threat.alpha_hi, compute_dtype=threat.compute_dtype).to(device)
    twin.load_state_dict(threat.state_dict())
    return twin


def fused_step(step: Callable[[], float]) -> Callable[[], float]:
    """``step`` with the fused ReLU rules switched on for its duration."""
    def run() -> float:
        set_fused_relu(True)
        try:
            return step()
        finally:
            set_fused_relu(False)
    return run


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
    ap.add_argument("--baseline", metavar="DIR", help="ctxbudget package folder of another commit, timed alongside")
    ap.add_argument("--fused-relu", action="store_true", help="also time every certified configuration with fused ReLU rules")
    ap.add_argument("--only", nargs="+", metavar="WORD",
                    help="keep natural and the configurations whose name contains one of these words")
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
    if args.head == "context":  # the context head with its local path at half resolution (budget.generator_resolution)
        half = LearnedBudget(BudgetGenerator(shape, head="context", resolution="half"), args.eps0, 0.5, 2.0,
                             compute_dtype=torch.bfloat16).to(device)
        half32 = LearnedBudget(BudgetGenerator(shape, head="context", resolution="half"), args.eps0, 0.5, 2.0,
                               compute_dtype=torch.float32).to(device)
        configs[3:3] = [("(generator alone, float32, half resolution)", half32, args.eps0, "ibp", True, 0.5, True),
                        ("(generator alone, bf16 autocast, half resolution)", half, args.eps0, "ibp", True, 0.5, True)]
        configs.insert(7, ("learned, CROWN-IBP loss fusion (generator bf16, half resolution)", half, args.eps0,
                           "crown-ibp", True, 0.5, False))
        low = LearnedBudget(BudgetGenerator(shape, head="context", resolution="low"), args.eps0, 0.5, 2.0,
                            compute_dtype=torch.bfloat16).to(device)
        configs[5:5] = [("(generator alone, bf16 autocast, low resolution)", low, args.eps0, "ibp", True, 0.5, True)]
        configs.insert(9, ("learned, CROWN-IBP loss fusion (generator bf16, low resolution)", low, args.eps0,
                           "crown-ibp", True, 0.5, False))
    # the fast recipe: BatchNorm variant of the model, IBP, warm-up regularisers (± MTL-IBP, one PGD step)
    bn_model = f"{args.model}-bn" if f"{args.model}-bn" in MODELS else None
    fast: list[tuple[str, dict]] = [] if bn_model is None else [
        (f"learned, fast recipe ({bn_model}, IBP, warm-up regularisers)", {}),
        (f"learned, fast recipe + MTL-IBP (1 PGD step, {bn_model})", {"mtl_alpha": 0.5})]
    steps = []
    objectives: list[tuple[Objective, list, float]] = []   # (objective, parameters, warm-up weight) per row
    for _name, threat, eps0, method, fusion, kappa, gen_only in configs:
        obj = Objective(classifier, threat)
        params = list(threat.parameters()) if gen_only else list(classifier.parameters()) + list(threat.parameters())
        steps.append(make_step(obj, params, images, labels, args.batch_size, eps0, method, fusion, kappa, gen_only))
        objectives.append((obj, params, 0.0))
    for name, kw in fast:
        bn = get_model(str(bn_model), shape, k, ds.info.mean, ds.info.std).train().to(device)
        obj = Objective(bn, learned, **kw)
        configs.append((name, learned, args.eps0, "ibp", True, 0.5, False))
        params = list(bn.parameters()) + list(learned.parameters())
        steps.append(make_step(obj, params, images, labels, args.batch_size, args.eps0, "ibp", True, 0.5,
                               warmup_weight=0.5))
        objectives.append((obj, params, 0.5))
    if args.only:
        keep = [j for j, c in enumerate(configs) if j == 0 or any(w in c[0] for w in args.only)]
        configs, steps = [configs[j] for j in keep], [steps[j] for j in keep]
        objectives = [objectives[j] for j in keep]
    # extra rows: the baseline commit's Objective, the fused ReLU rules (certified configurations only)
    base = load_baseline(args.baseline) if args.baseline else None
    first_fused: dict[int, float] = {}
    for j in range(1, len(configs)):
        name, threat, eps0, method, fusion, kappa, gen_only = configs[j]
        if gen_only:
            continue
        obj, params, ww = objectives[j]
        if base is not None:
            bthreat = baseline_threat(obj.threat, device)
            bobj = base.Objective(obj.classifier, bthreat, mtl_alpha=obj.mtl_alpha)
            bparams = list(obj.classifier.parameters()) + list(bthreat.parameters())
            configs.append((f"{name} [baseline]", *configs[j][1:]))
            steps.append(make_step(bobj, bparams, images, labels, args.batch_size, eps0, method, fusion, kappa,
                                   warmup_weight=ww))
        if args.fused_relu:
            configs.append((f"{name} [fused ReLU]", *configs[j][1:]))
            steps.append(fused_step(make_step(obj, params, images, labels, args.batch_size, eps0, method, fusion,
                                              kappa, warmup_weight=ww)))
            first_fused[len(steps) - 1] = 0.0
    # round robin, so that load changes on a shared machine hit every configuration alike
    times: list[list[float]] = [[] for _ in configs]
    for i in range(args.steps + 2):
        for j, step in enumerate(steps):
            t = step()
            if i == 0 and j in first_fused:
                first_fused[j] = t
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
    if first_fused:
        print("first fused-ReLU step of each row (compilation included): "
              + ", ".join(f"{configs[j][0]}: {t:.1f} s" for j, t in first_fused.items()))
        if fused_relu_unavailable():
            print(f"fused ReLU rules fell back to eager: {fused_relu_unavailable()}")


if __name__ == "__main__":
    main()
