"""One dataclass tree describes a run; YAML in and out; ``--set key=value`` overrides; validation.

A config file is a YAML mapping with the sections below (every key optional; defaults shown by
``ctxbudget train --print-config``). Unknown sections or keys are errors, so a typo never silently
falls back to a default. Units: ε values are pixel units ([0, 1] images); epochs count from 1.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable, cast, get_type_hints

import yaml

from .bounds.engine import DIFFERENTIABLE_METHODS, or_list
from .budgets import BUDGET_KINDS, validate_budget_params
from .errors import UserError
from .models import INITS
from .models.generator import HEADS, PADDINGS, RESOLUTIONS
from .presets import resolve_config
from .runtime import GENERATOR_PRECISIONS

#: bound methods of the training loss (``loss.method``)
METHODS_TRAIN = ("ibp", "crown-ibp")
#: bound methods of the per-epoch test evaluation (``eval.method``; α-CROWN is too slow there)
EVAL_METHODS = DIFFERENTIABLE_METHODS


@dataclass
class DataConfig:
    name: str = "mnist-sample"            # registered data set (ctxbudget data list)
    root: str | None = None               # data root as given (stored so); None → $CTXBUDGET_DATA, else ~/.cache/ctxbudget
    path: str | None = None               # image-folder only: folder or .tar/.tar.gz/.zip with train/<class>/, test/<class>/
                                          # (as given; a relative path is relative to the working directory)
    classes: list[str] | None = None      # image-folder only: class folders in label order; None → sorted (training
                                          # records the order it used here)
    download: bool = False                # fetch missing files (MD5-checked)
    augment: bool = False                 # random crop (pad 4) + horizontal flip, CIFAR style
    train_limit: int | None = None        # use only the first N training examples (quick runs)
    test_limit: int | None = None         # evaluate on the first N test examples each epoch
    seed: int = 0                         # seed of synthetic constructions (watermarks, pairs)


@dataclass
class ModelConfig:
    name: str = "dm-small"                # dm-small | dm-medium | dm-large | dm-small-bn | dm-medium-bn |
                                          # dm-small-px | dm-small-px-bn (a 1×1 pixel stem before DM-small)
    init: str = "default"                 # default (PyTorch) | ibp (Shi et al. 2021: N(0, (√(2π)/fan_in)²))


@dataclass
class BudgetConfig:
    kind: str = "learned"                 # learned (generator g_θ) | uniform (ε_i = ε0)
    eps0: float = 0.4                     # target: geometric-mean budget, volume n·log ε0
    alpha_lo: float = 0.5                 # lower limit l = α_lo·ε0
    alpha_hi: float = 2.0                 # upper limit u = min(α_hi·ε0, 1)
    train_eps_factor: float = 1.0         # train at factor·ε0 (CROWN-IBP CIFAR: 1.1), evaluate at ε0
    generator: str = "context"            # context (local + global context; follows the image) | dense (the
                                          # paper: Linear head, stores position-fixed masks) | conv (local) |
                                          # mix: (1 − w)·context + w·dense logits, w = generator_mix
    generator_padding: str = "replicate"  # context head only (the others ignore it): replicate | zeros
                                          # (pixels near the border know where they are; Watermarked MNIST, whose
                                          # mark sits in the margins, needs it on the cpu schedule)
    generator_precision: str = "auto"     # auto | float32 | bfloat16: the generator's matmuls (auto: bf16
                                          # where the hardware has fast bf16); bounds stay full precision
    generator_resolution: str = "full"    # context head only: full | half (most of its local path on 2×2-pooled
                                          # features, upsampled, plus a full-resolution skip: ~1.6× cheaper)
                                          # | low (all of it on the 2×2-pooled image, skip from the pixels)
    generator_mix: float = 0.5            # mix head only: w in [0, 1] (0: the context head, 1: the dense head)
    generator_mix_range: float | None = None  # mix head only: the dense logits bounded to R·tanh(·/R) (null: unbounded)


@dataclass
class ScheduleConfig:
    kind: str = "linear"                  # linear | smoothed (Gowal et al.: x^4 then linear)
    start: int = 2                        # epoch whose first step starts the ramp (natural before)
    length: int = 60                      # ramp length in epochs
    mid: float = 0.25                     # smoothed: fraction of the ramp that is polynomial


@dataclass
class LossConfig:
    method: str = "crown-ibp"             # bound used for the robust loss: ibp | crown-ibp
    fusion: bool = True                   # loss fusion (one backward row) vs margin CE (K−1 rows)
    kappa_final: float = 0.5              # natural-loss weight κ: 1 → κ_final as ε0 ramps (CIFAR: 0)
    beta_final: float = 0.0               # CROWN-IBP weight β: 1 → β_final as ε0 ramps
    warmup_reg: float = 0.0               # λ0 of Shi et al.'s warm-up regularisers (IBP bound tightness + ReLU
                                          # balance): weight λ0·(1 − ε0(t)/ε0_max) during the ramp; 0 = off
    warmup_tol: float = 0.5               # their tolerance τ (penalty where a ratio falls below τ)
    mtl_alpha: float | None = None        # MTL-IBP: robust term α·(bound loss) + (1 − α)·(PGD loss); null = off
    attack_steps: int = 1                 # MTL-IBP: PGD steps (random start in the box, best iterate kept)
    attack_step_size: float = 10.0        # MTL-IBP: PGD step of pixel i in units of ε_i (≥ 2: jumps to a corner)


@dataclass
class OptimConfig:
    epochs: int = 100
    batch_size: int = 256
    lr: float = 5e-4                      # Adam, classifier and generator
    generator_lr: float | None = None     # None → lr
    weight_decay: float = 0.0
    lr_milestones: list[int] = field(default_factory=list)  # epochs after which lr ×= lr_decay
    lr_decay: float = 0.1
    grad_clip: float | None = None        # max global gradient norm; None → no clipping


@dataclass
class EvalConfig:
    method: str = "ibp"                   # per-epoch verified error: ibp | crown-ibp | crown
    every: int = 1                        # evaluate the test split every N epochs (and the last)
    batch_size: int = 1000


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"                  # auto | cpu | cuda | cuda:N
    num_threads: int | None = None        # torch CPU threads; None → torch default
    deterministic: bool = True            # torch.use_deterministic_algorithms (warn only)
    fused_relu: bool = False              # the bound engine's ReLU rules through torch.compile (eager fallback)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def inert_keys(self) -> set[tuple[str, ...]]:
        """Keys (as ``to_dict`` paths) that this config's run never reads: the generator head's keys for
        uniform budgets, the context head's padding for the other heads. Two configs that differ only in
        keys inert for both describe the same training (``reproduce`` matches stored runs with this)."""
        b = self.budget
        if b.kind == "uniform":
            return {("budget", "generator"), ("budget", "generator_padding"), ("budget", "generator_precision"),
                    ("budget", "generator_resolution"), ("budget", "generator_mix"), ("budget", "generator_mix_range")}
        if b.generator == "mix":
            return set()
        if b.generator == "context":
            return {("budget", "generator_mix"), ("budget", "generator_mix_range")}
        return {("budget", "generator_padding"), ("budget", "generator_resolution"), ("budget", "generator_mix"),
                ("budget", "generator_mix_range")}

    def _validate_data_source(self) -> None:
        """data.path / data.classes: required / allowed only for a data set built per path (image-folder)."""
        from .data.registry import takes_path

        d = self.data
        if takes_path(d.name):
            if not d.path:
                raise UserError(f"data.path is required with data.name {d.name!r}: a folder or a .tar/.tar.gz/.zip "
                                "archive holding train/<class>/ and test/<class>/")
            if d.classes is not None and len(d.classes) < 2:
                raise UserError(f"data.classes must name at least 2 class folders (or be null: sorted), got {d.classes!r}")
        elif d.path is not None or d.classes is not None:
            key = "data.path" if d.path is not None else "data.classes"
            raise UserError(f"{key} is read only with data.name image-folder (data.name is {d.name!r}); remove it")

    def validate(self) -> RunConfig:
        """Raise ``UserError`` naming the key for any setting that cannot work."""
        from .train.schedules import RAMP_KINDS

        b = self.budget
        if b.kind not in BUDGET_KINDS:
            raise UserError(f"budget.kind must be {or_list(tuple(repr(k) for k in BUDGET_KINDS))}, got {b.kind!r}")
        try:
            validate_budget_params(b.eps0, b.alpha_lo, b.alpha_hi)
        except ValueError as exc:
            raise UserError(f"budget: {exc}") from None
        if not 0 < b.train_eps_factor or b.eps0 * b.train_eps_factor > 1:
            raise UserError(f"budget.train_eps_factor must be > 0 with eps0·factor ≤ 1, got {b.train_eps_factor}")
        if b.generator not in HEADS:
            raise UserError(f"budget.generator must be one of {', '.join(HEADS)}, got {b.generator!r}")
        if b.generator_padding not in PADDINGS:
            raise UserError(f"budget.generator_padding must be one of {', '.join(PADDINGS)}, got {b.generator_padding!r}")
        if not (isinstance(b.generator_mix, (int, float)) and 0.0 <= float(b.generator_mix) <= 1.0):
            raise UserError(f"budget.generator_mix must be a number in [0, 1], got {b.generator_mix!r}")
        r = b.generator_mix_range
        if r is not None and not (isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < float(r) < float("inf")):
            raise UserError(f"budget.generator_mix_range must be a positive number (logits) or null, got {r!r}")
        if b.generator_resolution not in RESOLUTIONS:
            raise UserError(f"budget.generator_resolution must be one of {', '.join(RESOLUTIONS)}, "
                            f"got {b.generator_resolution!r}")
        if b.generator_precision not in GENERATOR_PRECISIONS:
            raise UserError(f"budget.generator_precision must be one of {', '.join(GENERATOR_PRECISIONS)}, "
                            f"got {b.generator_precision!r}")
        s = self.schedule
        if s.kind not in RAMP_KINDS:
            raise UserError(f"schedule.kind must be {or_list(tuple(repr(k) for k in RAMP_KINDS))}, got {s.kind!r}")
        if s.start < 1 or s.length < 0 or not 0 < s.mid < 1:
            raise UserError("schedule: start ≥ 1, length ≥ 0 and 0 < mid < 1 are required")
        if self.loss.method not in METHODS_TRAIN:
            raise UserError(f"loss.method must be one of {METHODS_TRAIN}, got {self.loss.method!r}")
        for key in ("kappa_final", "beta_final"):
            if not 0 <= getattr(self.loss, key) <= 1:
                raise UserError(f"loss.{key} must lie in [0, 1], got {getattr(self.loss, key)}")
        lc = self.loss
        if not (lc.warmup_reg >= 0 and math.isfinite(lc.warmup_reg)):
            raise UserError(f"loss.warmup_reg must be ≥ 0 (0 = off), got {lc.warmup_reg}")
        if not (lc.warmup_tol > 0 and math.isfinite(lc.warmup_tol)):
            raise UserError(f"loss.warmup_tol must be positive, got {lc.warmup_tol}")
        if lc.mtl_alpha is not None and not 0 <= lc.mtl_alpha <= 1:
            raise UserError(f"loss.mtl_alpha must lie in [0, 1] (or null: off), got {lc.mtl_alpha}")
        if lc.attack_steps < 1:
            raise UserError(f"loss.attack_steps must be ≥ 1, got {lc.attack_steps}")
        if not (lc.attack_step_size > 0 and math.isfinite(lc.attack_step_size)):
            raise UserError(f"loss.attack_step_size must be positive, got {lc.attack_step_size}")
        o = self.optim
        if o.epochs < 1 or o.batch_size < 1:
            raise UserError("optim.epochs and optim.batch_size must be ≥ 1")
        if not (o.lr > 0 and math.isfinite(o.lr)):
            raise UserError(f"optim.lr must be positive, got {o.lr}")
        if o.grad_clip is not None and not (o.grad_clip > 0 and math.isfinite(o.grad_clip)):
            raise UserError(f"optim.grad_clip must be positive or null, got {o.grad_clip}")
        if o.generator_lr is not None and not (o.generator_lr > 0 and math.isfinite(o.generator_lr)):
            raise UserError(f"optim.generator_lr must be positive or null, got {o.generator_lr}")
        if not (0 < o.lr_decay and math.isfinite(o.lr_decay)):
            raise UserError(f"optim.lr_decay must be a positive factor, got {o.lr_decay}")
        if not (0 <= o.weight_decay and math.isfinite(o.weight_decay)):
            raise UserError(f"optim.weight_decay must be ≥ 0, got {o.weight_decay}")
        if self.eval.batch_size < 1:
            raise UserError(f"eval.batch_size must be ≥ 1, got {self.eval.batch_size}")
        if self.eval.method not in EVAL_METHODS:
            raise UserError(f"eval.method must be {or_list(EVAL_METHODS)}, got {self.eval.method!r}")
        if self.eval.every < 1:
            raise UserError("eval.every must be ≥ 1")
        self._validate_data_source()
        for key in ("train_limit", "test_limit"):
            limit = getattr(self.data, key)
            if limit is not None and limit < 1:
                raise UserError(f"data.{key} must be ≥ 1 (or null for the whole split), got {limit}")
        if self.num_threads is not None and self.num_threads < 1:
            raise UserError(f"num_threads must be ≥ 1 (or null for torch's default), got {self.num_threads}")
        if self.model.init not in INITS:
            raise UserError(f"model.init must be one of {', '.join(INITS)}, got {self.model.init!r}")
        return self


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert a YAML value against a dataclass field type hint (simple types only)."""
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise UserError(f"{key} may not be null")
    if hint is bool or text == "bool":
        if isinstance(value, bool):
            return value
        raise UserError(f"{key} must be true or false, got {value!r}")
    if hint is int or text.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float or text.startswith("float"):
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str or text.startswith("str"):
        if not isinstance(value, str):
            raise UserError(f"{key} must be a string, got {value!r}")
        return value
    if text.startswith("list[str]"):           # YAML reads folder names such as 0, 1 as integers
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise UserError(f"{key} must be a list of names, got {value!r}")
        return [str(v) for v in value]
    if text.startswith("list"):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise UserError(f"{key} must be a list of integers, got {value!r}")
        return list(value)
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
                        f"valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if is_dataclass(hint):
            kwargs[name] = _from_dict(cast(type, hint), value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    return cls(**kwargs)


#: what a stored config (a run's config.yaml, a registered model's manifest entry) meant by a key it lacks
#: because it was written before the key existed: the generator head before ``budget.generator`` (the
#: paper's dense head), the context head's resolution before ``budget.generator_resolution`` (full)
LEGACY_KEYS: dict[tuple[str, str], Any] = {("budget", "generator"): "dense",
                                           ("budget", "generator_resolution"): "full"}


def stored_config_from_dict(data: dict | None) -> RunConfig:
    """:func:`config_from_dict` for a config written by an earlier version: keys it lacks take the
    value they had then (:data:`LEGACY_KEYS`), not today's default."""
    data = dict(data or {})
    for (section, key), value in LEGACY_KEYS.items():
        part = data.get(section)
        if isinstance(part, dict) and key not in part:
            data[section] = part = {**part, key: value}
    return config_from_dict(data)


def config_from_dict(data: dict | None) -> RunConfig:
    """Build and validate a ``RunConfig`` from a nested mapping (e.g. parsed YAML)."""
    return _from_dict(RunConfig, data or {}).validate()


def parse_overrides(items: Iterable[str]) -> dict:
    """``["optim.lr=1e-3", "budget.kind=uniform"]`` → nested dict (values parsed as YAML scalars)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE (e.g. optim.lr=1e-3), got {item!r}")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise UserError(f"--set: empty key in {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise UserError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {p} is not a section")
        node[parts[-1]] = value
    return out


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge (override wins); returns a new dict."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """Defaults ← YAML file or packaged config name (optional) ← ``--set`` overrides, validated."""
    data = read_yaml(resolve_config(path)) if path is not None else {}
    return config_from_dict(merge(data, parse_overrides(overrides)))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
