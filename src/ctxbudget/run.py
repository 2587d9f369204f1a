"""The run directory: resolved config, metrics, human log, checkpoints (atomic), ``load_run``.

Layout of a run directory::

    config.yaml            the resolved RunConfig (every key, defaults filled in)
    metrics.jsonl          one JSON object per epoch and split (see ``ctxbudget.train.trainer``)
    train.log              one human-readable line per epoch
    checkpoints/last.pt    everything needed to resume (weights, optimizer, step, RNG states)
    checkpoints/best.pt    the epoch with the lowest test verified error at the target ε0
    final.pt               final weights of classifier and generator (written when training ends)
    final_weights.pt       the same weights in float32 as a registrable file, with its sha256 in
                           final_weights.json (``ctxbudget.final_weights``; ``ctxbudget models register``)

Checkpoints are written to a temporary file in the same folder, fsync'ed and renamed, so a crash
never leaves a half-written file behind.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import nn

from .budgets import BudgetModel, LearnedBudget, UniformBudget
from .config import RunConfig, dump_config, read_yaml, stored_config_from_dict
from .data import DatasetInfo, get_info
from .devices import module_device
from .errors import UserError
from .models import BudgetGenerator, get_model
from .runtime import generator_dtype

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
LOG = "train.log"
LAST = "checkpoints/last.pt"
BEST = "checkpoints/best.pt"
FINAL = "final.pt"
LOCK = ".lock"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``.NAME.*.tmp`` beside it (fsync, rename), with the mode an
    ordinary ``open()`` would give (0666 minus the umask; ``mkstemp`` alone gives 0600).

    A write that fails (disk full, no permission) removes the temp file and raises ``OSError`` whose
    one-line message names the file and says that its previous version is left as it was."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_failed(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_failed(path, exc) from None
        raise


def _write_failed(path: Path, exc: OSError) -> OSError:
    """The one-line error of a failed atomic write (same errno)."""
    what = exc.strerror or str(exc)
    before = f"the previous {path.name} is left as it was" if path.exists() else f"{path.name} was not written"
    return OSError(exc.errno, f"could not write {path}: {what}; {before}")


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete ``.NAME.*.tmp`` files that a write killed half-way left in the run directory and its
    ``checkpoints/`` (only one process writes a run, so none of them is in use). Returns them."""
    gone = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                if p.is_file():
                    p.unlink()
                    gone.append(p)
    return gone


#: settings that may change when a run is resumed; anything else would change what was trained.
RESUMABLE_KEYS = ("optim.epochs", "optim.lr_milestones", "optim.lr_decay", "eval.method", "eval.every",
                  "eval.batch_size", "data.root", "data.path", "data.download", "num_threads", "device", "deterministic",
                  "fused_relu", "description")


def check_resume_overrides(overrides: dict, current: dict) -> None:
    """UserError naming the first key of ``overrides`` (nested dict) outside :data:`RESUMABLE_KEYS`
    whose value differs from the run's ``current`` config (nested dict)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out: dict = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    now = flat(current)
    for key, value in flat(overrides).items():
        if key not in RESUMABLE_KEYS and (key not in now or now[key] != value):
            raise UserError(f"cannot change {key} of an existing run (it was trained with {now.get(key)!r}); "
                            f"start a new run with --out, or change only {', '.join(RESUMABLE_KEYS)}")


def load_weights(module: nn.Module, state: dict, path: Path, cfg: RunConfig) -> None:
    """``module.load_state_dict(state)``; a one-line UserError when the checkpoint does not fit the config."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])[:200]
        raise UserError(f"checkpoint {path} does not match the run's config.yaml (model.name {cfg.model.name!r}, "
                        f"budget.kind {cfg.budget.kind!r}, data.name {cfg.data.name!r}): {detail}") from None


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename over it."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by ``atomic_torch_save``; a clear UserError if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated zip, pickle garbage, …
        raise UserError(f"checkpoint {path} is corrupt or not a ctxbudget checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or "classifier" not in obj:
        raise UserError(f"checkpoint {path} is not a ctxbudget checkpoint (no classifier weights)")
    return obj


#: ``format`` of the checkpoints this version writes
CHECKPOINT_FORMAT = 1
#: the keys only a resumable checkpoint (``checkpoints/last.pt``, ``best.pt``) holds
TRAINING_STATE_KEYS = ("optimizer", "best", "torch_rng")


@dataclass
class Checkpoint:
    """The contents of a checkpoint file; the one reader and writer of its dict.

    ``checkpoints/last.pt`` and ``best.pt`` hold everything needed to resume (keys classifier,
    generator, optimizer, epoch, step, best, config, torch_rng, format); ``final.pt`` holds the
    weights only (classifier, generator, epoch, step, config, format): the training state is None
    there and its keys are not written. ``generator`` is None for uniform budgets.
    """

    classifier: dict
    generator: Optional[dict] = None
    epoch: Optional[int] = None
    step: Optional[int] = None
    config: Optional[dict] = None
    optimizer: Optional[dict] = None
    best: Optional[float] = None
    torch_rng: Optional[torch.Tensor] = None
    format: int = CHECKPOINT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """The dict saved to disk (the training-state keys only when set; key order as written since format 1)."""
        order = ("classifier", "generator", "optimizer", "epoch", "step", "best", "config", "torch_rng", "format")
        return {k: getattr(self, k) for k in order if k not in TRAINING_STATE_KEYS or getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, state: dict) -> Checkpoint:
        """From a loaded dict (any format-1 checkpoint; missing keys become None)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})

    def save(self, path: Path) -> None:
        """Write atomically (``atomic_torch_save``)."""
        atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read ``path`` (``load_checkpoint``: a clear UserError if missing, corrupt or no checkpoint)."""
        return cls.from_dict(load_checkpoint(path, map_location=map_location))


@contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN_DIR/.lock`` exclusively (``fcntl.flock``) while a process trains or evaluates the run.

    A second process that asks for the same run gets a ``UserError`` naming the holder's pid
    instead of both writing checkpoints and metrics into one directory. The lock is released when
    the block ends or the process dies (the kernel drops flocks of dead processes); the empty file
    stays. Where ``fcntl`` is missing (Windows) this is a no-op.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / LOCK, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            raise UserError(f"{run_dir} is in use by another ctxbudget process{f' (pid {holder})' if holder else ''}; "
                            "wait for it to finish or stop it") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()  # closing the file releases the lock


def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: ignore it
                continue
    return rows


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Keep only metric lines of epochs ≤ ``last_epoch`` (used on resume)."""
    rows = [r for r in read_metrics(run_dir) if int(r.get("epoch", 0)) <= last_epoch]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    atomic_write_bytes(Path(run_dir) / METRICS, text.encode())


def append_metrics(run_dir: Path, row: dict) -> None:
    with open(Path(run_dir) / METRICS, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    atomic_write_bytes(Path(run_dir) / CONFIG, dump_config(cfg).encode())


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a ctxbudget run directory (no {CONFIG})")
    return stored_config_from_dict(read_yaml(path))     # keys added since it was written: their old meaning


def build_models(cfg: RunConfig, input_shape: tuple[int, int, int], num_classes: int,
                 mean, std, device: str | torch.device = "cpu") -> tuple[nn.Sequential, BudgetModel]:
    """The classifier and the threat model a config describes (fresh weights, ε0 = 0).

    ``device`` only decides ``budget.generator_precision: auto`` (bf16 where it is fast there)."""
    classifier = get_model(cfg.model.name, input_shape, num_classes, mean=mean, std=std)
    if cfg.budget.kind == "learned":
        dtype = generator_dtype(cfg.budget.generator_precision, device)
        generator = BudgetGenerator(input_shape, head=cfg.budget.generator, padding=cfg.budget.generator_padding,
                                    resolution=cfg.budget.generator_resolution, mix=cfg.budget.generator_mix,
                                    mix_range=cfg.budget.generator_mix_range)
        threat: BudgetModel = LearnedBudget(generator, 0.0, cfg.budget.alpha_lo, cfg.budget.alpha_hi,
                                            compute_dtype=dtype)
    else:
        threat = UniformBudget(0.0)
    return classifier, threat


@dataclass
class Run:
    """A trained run, loaded for evaluation: classifier + threat model at the target ε0.

    ``config``: the run's resolved :class:`RunConfig` (``config_dict``: the same as a nested dict);
    ``input_shape``: (C, H, W) of its data set's images; ``meta``: which checkpoint was loaded
    (``checkpoint`` path, ``epoch`` and ``step`` where the file records them); ``info``: its data
    set's :class:`~ctxbudget.data.DatasetInfo` (None where unknown); ``model``: the name of the
    registered model it was loaded from (``load_run(NAME)``), None for a run directory."""

    run_dir: Path
    config: RunConfig
    classifier: nn.Sequential
    threat: BudgetModel
    input_shape: tuple[int, int, int]
    meta: dict = field(default_factory=dict)
    info: DatasetInfo | None = None
    model: Optional[str] = None

    @property
    def output_dir(self) -> Path:
        """Where ``evaluate`` and ``visualize`` write by default: the run directory; for a registered
        model (``model`` is its name, ``run_dir`` the read-only registry folder) ``runs/NAME`` under
        the working directory, so the registry is never written."""
        return Path("runs") / self.model if self.model is not None else self.run_dir

    @property
    def eps0(self) -> float:
        return self.threat.eps0

    @property
    def kind(self) -> str:
        return self.threat.kind

    @property
    def alpha_lo(self) -> float:
        return getattr(self.threat, "alpha_lo", 1.0)

    @property
    def alpha_hi(self) -> float:
        return getattr(self.threat, "alpha_hi", 1.0)

    @property
    def config_dict(self) -> dict[str, Any]:
        """``config`` as a nested dict (the layout of config.yaml)."""
        return self.config.to_dict()

    @property
    def dataset(self) -> str:
        return self.config.data.name

    @property
    def data_label(self) -> str:
        """How tables and figures name the data source, e.g. ``"cifar10-jpeg (CIFAR-10, JPEG copy)"``."""
        return self.info.label if self.info is not None else self.dataset

    @property
    def data_root(self) -> str | None:
        return self.config.data.root

    @property
    def device(self) -> torch.device:
        """Where the classifier's weights are (``load_run(…, device=)``)."""
        return module_device(self.classifier)

    def budgets(self, x: torch.Tensor) -> torch.Tensor:
        """ε(x) at the run's target ε0, same shape and device as x (pixel units; computed on the run's device)."""
        return self.threat(x.to(self.device)).to(x.device)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Arg-max class of each image of ``x`` (B×C×H×W), on x's device (computed on the run's device)."""
        return self.classifier(x.to(self.device)).argmax(1).to(x.device)

    def limits(self) -> tuple[float, float]:
        return self.threat.limits()

    def metrics(self) -> list[dict]:
        """The rows of ``metrics.jsonl`` (none for a registered model: the registry keeps no metrics)."""
        return [] if self.model is not None else read_metrics(self.run_dir)


def output_dir_for(run: Run, out: str | Path | None = None, sub: str = "") -> Path:
    """Where a command writes ``run``'s results or figures: ``out`` if given, else ``run.output_dir / sub``.

    For a registered model, a UserError instead of a folder inside the registry (which is never
    written), and instead of the default ``runs/NAME`` when that folder holds a training run of its own.
    (``run`` may be any object with the attributes used: objects without ``model`` count as run directories.)"""
    if getattr(run, "model", None) is None:
        return Path(out) if out is not None else Path(run.run_dir) / sub
    target = Path(out) if out is not None else run.output_dir / sub
    if out is None and is_run_dir(run.output_dir):
        raise UserError(f"{run.output_dir} holds a training run, not the outputs of registered model {run.model}; "
                        "give --out DIR")
    registry = Path(run.run_dir).resolve()
    resolved = target.resolve()
    if resolved == registry or registry in resolved.parents:
        raise UserError(f"{target} is inside the model registry {run.run_dir}, which is never written; give --out DIR")
    return target


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str = "final", *,
             registry: str | Path | None = None) -> Run:
    """Load a run directory, or a registered model by name, for evaluation (``checkpoint`` = final | best | last).

    A run directory (a folder holding ``config.yaml``) wins; otherwise ``run_dir`` is looked up as the
    name of a registered model (``ctxbudget models list``; registry folder ``registry``, else
    ``$CTXBUDGET_MODELS``, else the packaged one), whose weights file is checked against the sha256 of
    the manifest. ``final`` falls back to ``last`` when training has not finished; a registered
    model has final weights only. Models are in eval mode.
    """
    path = Path(run_dir)
    if not is_run_dir(path):
        from .registry import find_model, load_model, unknown_target

        entry = find_model(str(run_dir), root=registry)
        if entry is not None:
            return load_model(entry, device=device, checkpoint=checkpoint)
        if not path.exists():
            raise unknown_target(str(run_dir))
    return _load_run_dir(path, device, checkpoint)


def assemble_run(cfg: RunConfig, state: Checkpoint, path: Path, run_dir: Path, device: str | torch.device = "cpu",
                 model: str | None = None) -> Run:
    """Build the networks ``cfg`` describes, load ``state``'s weights (read from ``path``), put them in
    eval mode at the target ε0 and wrap them in a :class:`Run`."""
    info = get_info(cfg.data.name, cfg.data.path, cfg.data.classes)
    classifier, threat = build_models(cfg, info.input_shape, info.num_classes, info.mean, info.std, device=device)
    load_weights(classifier, state.classifier, path, cfg)
    if isinstance(threat, LearnedBudget):
        if state.generator is None:
            raise UserError(f"checkpoint {path} has no generator weights but config.yaml asks for learned budgets")
        load_weights(threat.generator, state.generator, path, cfg)
    threat.eps0 = cfg.budget.eps0
    classifier.to(device).eval()
    threat.to(device).eval()
    for p in list(classifier.parameters()) + list(threat.parameters()):
        p.requires_grad_(False)
    meta: dict[str, Any] = {k: v for k, v in (("epoch", state.epoch), ("step", state.step)) if v is not None}
    meta["checkpoint"] = str(path)
    return Run(run_dir=run_dir, config=cfg, classifier=classifier, threat=threat, input_shape=info.input_shape,
               meta=meta, info=info, model=model)


def _load_run_dir(run_dir: Path, device: str | torch.device, checkpoint: str) -> Run:
    """``load_run`` for a run directory."""
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} not found")
    cfg = read_config(run_dir)
    choices = {"final": FINAL, "best": BEST, "last": LAST}
    if checkpoint not in choices:
        raise UserError(f"checkpoint must be one of {sorted(choices)}, got {checkpoint!r}")
    path = run_dir / choices[checkpoint]
    if checkpoint == "final" and not path.is_file():
        path = run_dir / LAST
    if not path.is_file():
        raise UserError(f"{run_dir} holds no trained weights yet ({choices[checkpoint]} / {LAST} missing)")
    state = Checkpoint.load(path, map_location=device)
    return assemble_run(cfg, state, path, run_dir, device=device)
