"""The training loop: joint certified training of the classifier and the budget generator.

``train(cfg, out_dir)`` starts a run, ``resume(run_dir)`` continues one exactly where its last
checkpoint stopped (weights, Adam state, schedule position; data order is a pure function of
(seed, epoch), so nothing else needs restoring). One epoch is the unit of work: a run that is
interrupted (Ctrl-C, kill) loses at most the epoch in progress.

Each optimizer step (global step s, epoch e):
  ε0(s) = ramp(s)·ε_max,  κ(s), β(s) from ``schedules``,  lr from the epoch's milestones;
  loss  = ``Objective``: κ·CE(f(x), y) + (1 − κ)·robust CE on [clip(x − ε(x)), clip(x + ε(x))].
After each epoch: test clean / verified error at the current ε0 with ``eval.method``; one line per
split in ``metrics.jsonl`` (``metrics.EpochRow``); checkpoint ``last`` (and ``best`` once the ramp is complete;
``run.Checkpoint``). At the end: ``final.pt`` and the registrable ``final_weights.pt`` (float32 weights,
sha256 in ``final_weights.json``; ``ctxbudget.final_weights``).

Launched by torchrun, every rank takes a strided share of each global batch (``batch_size`` is the
global batch), gradients are averaged by DistributedDataParallel, metrics are summed across
ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import run as rundir
from ..bounds import Bounder
from ..bounds.relu import set_fused_relu
from ..bounds.verify import certify, margin_lower_bounds
from ..budgets import LearnedBudget, input_box
from ..config import RunConfig, config_from_dict, merge
from ..contextuality import ContextualityAccumulator, contextuality_row
from ..data import augment_crop_flip, get_dataset
from ..errors import UserError
from ..final_weights import write_final_weights
from ..models import initialize_
from ..runtime import generator_dtype
from . import distributed as D
from .metrics import EpochRow
from .objective import Objective, StepSums
from .schedules import RampSchedule, learning_rate, mixing_weight, warmup_weight


def make_adam(groups: list[dict], weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused (single-kernel) update where this torch build supports it for the
    parameters' device (CPU since torch 2.4), else the default implementation. Fused is the same
    algorithm; on this project's 2-core CPU it saves ~10 % of a learned-budget step (the
    generator's 4.9 M weights). The choice is a function of the build only, so resumed runs take
    the same path."""
    try:
        return torch.optim.Adam(groups, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(groups, weight_decay=weight_decay)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Owns data, models, optimizer and the run directory of one training run."""

    def __init__(self, cfg: RunConfig, run_dir: Path, device_name: str | None = None, progress: bool | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist, self.device = D.setup(device_name or cfg.device)
        self.progress = progress
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        set_fused_relu(cfg.fused_relu)   # compiled lazily on first use; eager where it cannot be
        _seed_everything(cfg.seed)

        d = cfg.data
        train = get_dataset(d.name, "train", root=d.root, download=d.download, seed=d.seed, path=d.path,
                            classes=d.classes)
        test = get_dataset(d.name, "test", root=d.root, download=d.download, seed=d.seed, path=d.path,
                           classes=d.classes)
        self.info = train.info
        if d.path is not None and d.classes is None:    # record the class order (an image folder's), so that
            d.classes = list(train.info.classes)         # evaluation labels the images as training did
        n_train = len(train) if d.train_limit is None else min(d.train_limit, len(train))
        n_test = len(test) if d.test_limit is None else min(d.test_limit, len(test))
        self.train_x = train.images[:n_train].to(self.device)
        self.train_y = train.labels[:n_train].to(self.device)
        self.test_x = test.images[:n_test].to(self.device)
        self.test_y = test.labels[:n_test].to(self.device)
        self.test_regions = None if test.regions is None else test.regions[:n_test].to(self.device)

        if cfg.budget.generator_precision == "auto":   # record what "auto" chose, so evaluation matches
            cfg.budget.generator_precision = str(generator_dtype("auto", self.device)).replace("torch.", "")
        self.classifier, self.threat = rundir.build_models(cfg, self.info.input_shape, self.info.num_classes,
                                                           self.info.mean, self.info.std, device=self.device)
        initialize_(self.classifier, cfg.model.init)
        self.classifier.to(self.device)
        self.threat.to(self.device)
        lc = cfg.loss
        self.objective = Objective(self.classifier, self.threat, warmup_tol=lc.warmup_tol, mtl_alpha=lc.mtl_alpha,
                                   attack_steps=lc.attack_steps, attack_step_size=lc.attack_step_size)
        self.step_module: nn.Module = self.objective
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)

        o = cfg.optim
        groups = [{"params": list(self.classifier.parameters()), "lr": o.lr, "base_lr": o.lr}]
        gen_params = list(self.threat.parameters())
        if gen_params:
            glr = o.generator_lr if o.generator_lr is not None else o.lr
            groups.append({"params": gen_params, "lr": glr, "base_lr": glr})
        self.optimizer = make_adam(groups, weight_decay=o.weight_decay)

        self.batch_size = min(o.batch_size, n_train)
        self.steps_per_epoch = max(1, n_train // self.batch_size)
        s = cfg.schedule
        self.ramp = RampSchedule(s.kind, s.start, s.length, self.steps_per_epoch, s.mid)
        self.eps_max = cfg.budget.eps0 * cfg.budget.train_eps_factor
        self.epoch = 0          # epochs completed
        self.step = 0           # optimizer steps completed
        self.best = math.inf    # best test verified error at the full ε0

    # ------------------------------------------------------------------ persistence
    def state(self) -> rundir.Checkpoint:
        """Everything needed to resume (``checkpoints/last.pt``)."""
        return rundir.Checkpoint(classifier=self.classifier.state_dict(), generator=self._generator_weights(),
                                 optimizer=self.optimizer.state_dict(), epoch=self.epoch, step=self.step,
                                 best=self.best, config=self.cfg.to_dict(), torch_rng=torch.get_rng_state())

    def _generator_weights(self) -> dict | None:
        """The generator's state dict (None for uniform budgets)."""
        return self.threat.generator.state_dict() if isinstance(self.threat, LearnedBudget) else None

    def final_state(self) -> rundir.Checkpoint:
        """The weights at the end of training (``final.pt``; no optimizer, best or RNG state)."""
        return rundir.Checkpoint(classifier=self.classifier.state_dict(), generator=self._generator_weights(),
                                 epoch=self.epoch, step=self.step, config=self.cfg.to_dict())

    def load_state(self, state: rundir.Checkpoint, path: Path | None = None) -> None:
        path = path or self.run_dir / rundir.LAST
        rundir.load_weights(self.classifier, state.classifier, path, self.cfg)
        if isinstance(self.threat, LearnedBudget):
            if state.generator is None:
                raise UserError("checkpoint has no generator weights but the config asks for learned budgets")
            rundir.load_weights(self.threat.generator, state.generator, path, self.cfg)
        if state.optimizer is None or state.epoch is None or state.step is None or state.best is None \
                or state.torch_rng is None:
            raise UserError(f"checkpoint {path} holds weights only (no optimizer state); it cannot be resumed")
        self.optimizer.load_state_dict(state.optimizer)
        self.epoch, self.step, self.best = int(state.epoch), int(state.step), float(state.best)
        torch.set_rng_state(state.torch_rng)

    def _log(self, text: str) -> None:
        if not self.dist.is_main:
            return
        tqdm.write(text)
        with open(self.run_dir / rundir.LOG, "a") as fh:
            fh.write(text + "\n")

    # ------------------------------------------------------------------ epochs
    def _batches(self, epoch: int):
        """This rank's share of each global batch of epoch ``epoch`` (augmented if configured).

        The order is a permutation seeded by (seed, epoch); augmentation is drawn for the whole
        global batch before the strided split, so N ranks see exactly what one process would.
        """
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.train_x), generator=g)
        share = slice(self.dist.rank, None, self.dist.world_size)
        for i in range(self.steps_per_epoch):
            idx = perm[i * self.batch_size:(i + 1) * self.batch_size].to(self.device)
            x, y = self.train_x[idx], self.train_y[idx]
            if self.cfg.data.augment:
                x = augment_crop_flip(x, pad=4, generator=g)
            yield x[share], y[share]

    def train_epoch(self, epoch: int) -> EpochRow:
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(group["base_lr"], epoch, cfg.optim.lr_milestones, cfg.optim.lr_decay)
        self.classifier.train()
        self.threat.train()
        totals: StepSums | None = None
        eps_min, eps_max = math.inf, -math.inf
        start = time.perf_counter()
        show = self.dist.is_main and (self.progress if self.progress is not None else sys.stderr.isatty())
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{cfg.optim.epochs}", leave=False,
                   disable=not show, dynamic_ncols=True)
        eps0 = 0.0
        for x, y in self._batches(epoch):
            frac = self.ramp(self.step)
            eps0 = frac * self.eps_max
            kappa = mixing_weight(frac, cfg.loss.kappa_final)
            beta = mixing_weight(frac, cfg.loss.beta_final)
            loss, stats = self.step_module(x, y, eps0, kappa, beta, cfg.loss.method, cfg.loss.fusion,
                                           warmup_weight(frac, cfg.loss.warmup_reg))
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at epoch {epoch}, step {self.step} (ε0 = {eps0:.4g}); "
                                   "lower the learning rate or enable optim.grad_clip")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip is not None:
                params = [p for grp in self.optimizer.param_groups for p in grp["params"]]
                nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            self.optimizer.step()
            self.step += 1
            totals = stats.sums if totals is None else totals + stats.sums
            if eps0 > 0:
                eps_min = min(eps_min, float(stats.eps_min))
                eps_max = max(eps_max, float(stats.eps_max))
            n = float(totals.n)
            bar.set_postfix(loss=f"{float(totals.loss) / n:.3f}", err=f"{float(totals.clean_wrong) / n:.3f}",
                            ver=f"{float(totals.verified_wrong) / n:.3f}", eps0=f"{eps0:.3f}")
            bar.update()
        bar.close()
        assert totals is not None          # steps_per_epoch ≥ 1
        t = StepSums.from_tensor(D.all_reduce_(totals.to_tensor(self.device)))
        lims = D.all_reduce_(torch.tensor([eps_min, -eps_max], dtype=torch.float64, device=self.device), op="min").tolist()
        n, eps_n = float(t.n), float(t.eps_n)
        return EpochRow(epoch=epoch, split="train", step=self.step, eps0=eps0,
                        loss=float(t.loss) / n, robust_loss=float(t.robust) / n,
                        clean_err=float(t.clean_wrong) / n, verified_err=float(t.verified_wrong) / n,
                        mean_eps=float(t.eps_sum) / eps_n if eps_n else 0.0,
                        min_eps=lims[0] if math.isfinite(lims[0]) else 0.0,
                        max_eps=-lims[1] if math.isfinite(lims[1]) else 0.0,
                        lr=self.optimizer.param_groups[0]["lr"], kappa=kappa, beta=beta,
                        seconds=time.perf_counter() - start)

    @torch.no_grad()
    def evaluate(self, epoch: int, eps0: float) -> EpochRow:
        """Clean and verified error on this rank's share of the test split, summed over ranks."""
        start = time.perf_counter()
        self.classifier.eval()
        self.threat.eval()
        r, w = self.dist.rank, self.dist.world_size
        xs, ys = self.test_x[r::w], self.test_y[r::w]
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)  # n, clean_wrong, verified_wrong, loss, eps_sum
        mins = torch.tensor([math.inf, math.inf], dtype=torch.float64, device=self.device)  # min eps, −max eps
        regions = None if self.test_regions is None else self.test_regions[r::w]
        context = (ContextualityAccumulator(tuple(xs.shape[1:]), dataset_name=self.cfg.data.name,
                                            regions=regions is not None, shift=math.log(eps0))
                   if isinstance(self.threat, LearnedBudget) and eps0 > 0 else None)
        bs = self.cfg.eval.batch_size
        for i in range(0, len(xs), bs):
            x, y = xs[i:i + bs], ys[i:i + bs]
            logits = self.classifier(x)
            correct = logits.argmax(1) == y
            eps = self.threat(x, eps0)
            if context is not None:
                context.update(eps, x, None if regions is None else regions[i:i + bs])
            lo, hi = input_box(x, eps)
            bd = Bounder(self.classifier, lo, hi, x)   # one IBP pass for the margins and certify's τ
            margins = margin_lower_bounds(self.classifier, lo, hi, y, self.cfg.eval.method, bounder=bd)
            verified = certify(self.classifier, lo, hi, y, self.cfg.eval.method, lower=margins, correct=correct,
                               x=x, bounder=bd).verified
            flat = eps.reshape(len(y), -1)
            sums += torch.stack([torch.tensor(float(len(y)), device=self.device), (~correct).sum(), (~verified).sum(),
                                 nn.functional.cross_entropy(logits, y, reduction="sum"), flat.mean(1).sum()]).double()
            mins = torch.minimum(mins, torch.stack([flat.min(), -flat.max()]).double())
        D.all_reduce_(sums)
        D.all_reduce_(mins, op="min")
        n = max(sums[0].item(), 1.0)
        row = EpochRow(epoch=epoch, split="test", step=self.step, eps0=eps0, loss=sums[3].item() / n,
                       clean_err=sums[1].item() / n, verified_err=sums[2].item() / n, mean_eps=sums[4].item() / n,
                       min_eps=mins[0].item() if n else 0.0, max_eps=-mins[1].item() if n else 0.0,
                       method=self.cfg.eval.method)
        if context is not None:
            context.load_sums(D.all_reduce_(context.sums().to(self.device)))
            if context.state[0] >= 2:
                row.contextuality = contextuality_row(context.result())
        row.seconds = time.perf_counter() - start
        return row

    # ------------------------------------------------------------------ main loop
    def fit(self) -> EpochRow | None:
        cfg = self.cfg
        last_test: EpochRow | None = None
        if self.epoch >= cfg.optim.epochs:
            self._log(f"run already finished ({self.epoch}/{cfg.optim.epochs} epochs)")
        for epoch in range(self.epoch + 1, cfg.optim.epochs + 1):
            row = self.train_epoch(epoch)
            eps0 = row.eps0
            rows = [row]
            ramp_done = eps0 >= self.eps_max
            if epoch % cfg.eval.every == 0 or epoch == cfg.optim.epochs:
                last_test = self.evaluate(epoch, eps0)
                rows.append(last_test)
            self.epoch = epoch
            improved = last_test is not None and last_test.epoch == epoch and ramp_done \
                and last_test.verified_err < self.best
            if improved and last_test is not None:
                self.best = last_test.verified_err
            if self.dist.is_main:
                for r in rows:
                    rundir.append_metrics(self.run_dir, r.to_json())
                state = self.state()
                state.save(self.run_dir / rundir.LAST)
                if improved:
                    state.save(self.run_dir / rundir.BEST)
            D.barrier()
            test_txt = (f" | test clean {last_test.clean_err:.2%} verified {last_test.verified_err:.2%}"
                        if last_test is not None and last_test.epoch == epoch else "")
            self._log(f"epoch {epoch:3d}/{cfg.optim.epochs} eps0 {eps0:.4f} | train loss {row.loss:.4f} "
                      f"clean {row.clean_err:.2%} verified {row.verified_err:.2%} | "
                      f"eps mean {row.mean_eps:.4f} [{row.min_eps:.3f}, {row.max_eps:.3f}]{test_txt} "
                      f"| {row.seconds:.1f}s")
        if self.dist.is_main:
            final = self.final_state()
            final.save(self.run_dir / rundir.FINAL)
            write_final_weights(self.run_dir, final)     # final_weights.pt + .json: what the registry stores
        D.barrier()
        return last_test


def _fit(trainer: Trainer) -> None:
    """Run ``trainer.fit()``; on Ctrl-C say how to continue (the last finished epoch is kept)."""
    try:
        trainer.fit()
    except KeyboardInterrupt:
        trainer._log(f"interrupted during epoch {trainer.epoch + 1}; "
                     f"resume with: ctxbudget train --resume {trainer.run_dir}")
        raise


def _check_out_dir(out: Path) -> None:
    if rundir.is_run_dir(out) or (out / rundir.METRICS).exists():
        raise UserError(f"{out} already holds a run; continue it with 'ctxbudget train --resume {out}' "
                        "or choose another --out")


def _exclusive(run_dir: Path) -> ContextManager[None]:
    """Rank 0 holds the run directory's lock (``run.exclusive``) while it trains; other ranks don't."""
    return rundir.exclusive(run_dir) if int(os.environ.get("RANK", "0")) == 0 else nullcontext()


def train(cfg: RunConfig, out_dir: str | Path, device: str | None = None, progress: bool | None = None) -> Trainer:
    """Start a new run in ``out_dir`` (must be new or empty of runs) and train it to the end."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    with _exclusive(out):
        return _train(cfg, out, device, progress)


def _train(cfg: RunConfig, out: Path, device: str | None, progress: bool | None) -> Trainer:
    if int(os.environ.get("RANK", "0")) == 0:
        _check_out_dir(out)
    trainer = Trainer(cfg, out, device_name=device, progress=progress)
    if trainer.dist.is_main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        rundir.write_config(out, cfg)
        trainer._log(f"ctxbudget run in {out}: {cfg.budget.kind} budgets, eps0 {cfg.budget.eps0}, "
                     f"{cfg.model.name} on {cfg.data.name} ({len(trainer.train_x)} train / {len(trainer.test_x)} test), "
                     f"{trainer.steps_per_epoch} steps/epoch, device {trainer.device}, world size {trainer.dist.world_size}")
    D.barrier()
    _fit(trainer)
    return trainer


def resume(run_dir: str | Path, overrides: dict | None = None, device: str | None = None,
           progress: bool | None = None) -> Trainer:
    """Continue the run in ``run_dir`` from ``checkpoints/last.pt`` (or from scratch if none yet)."""
    run_dir = Path(run_dir)
    rundir.read_config(run_dir)                # a clear error for a folder that holds no run
    with _exclusive(run_dir):
        return _resume(run_dir, overrides, device, progress)


def _resume(run_dir: Path, overrides: dict | None, device: str | None, progress: bool | None) -> Trainer:
    cfg = rundir.read_config(run_dir)
    if overrides:
        rundir.check_resume_overrides(overrides, cfg.to_dict())
        cfg = config_from_dict(merge(cfg.to_dict(), overrides))
    trainer = Trainer(cfg, run_dir, device_name=device, progress=progress)
    last = run_dir / rundir.LAST
    if last.is_file():
        trainer.load_state(rundir.Checkpoint.load(last, map_location=trainer.device), last)
    if trainer.epoch > cfg.optim.epochs:
        raise UserError(f"optim.epochs={cfg.optim.epochs} is less than the {trainer.epoch} epochs already trained")
    if trainer.dist.is_main:
        rundir.remove_stale_temp_files(run_dir)
        rundir.truncate_metrics(run_dir, trainer.epoch)
        if overrides:
            rundir.write_config(run_dir, cfg)
        trainer._log(f"resuming {run_dir} after epoch {trainer.epoch} (step {trainer.step})")
    D.barrier()
    _fit(trainer)
    return trainer
