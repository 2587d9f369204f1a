"""``register_run``: add a finished, evaluated run to a registry (``ctxbudget models register``).

What is copied: the final weights (``final_weights.pt`` as written by ``train``; for runs finished
before that file existed, the same payload extracted from ``final.pt`` or from
``checkpoints/last.pt`` at the run's last epoch), the resolved ``config.yaml``, ``results.json``
and, when ``visualize`` wrote one, ``figures/budget_stats.json`` (the contextuality statistics of
``evaluate`` are inside ``results.json``). Refused, with one line: a folder that holds no run, a run
that has not reached its last epoch, a run without ``results.json`` or whose ``results.json``
evaluates other weights than the final ones, a name already registered (unless ``replace``), and
weights that would take the packaged registry over :data:`~ctxbudget.registry.manifest.SIZE_BUDGET`.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from .. import __version__
from ..config import RunConfig, load_config
from ..errors import RegistryError, UserError
from ..final_weights import (
    FINAL_WEIGHTS,
    FINAL_WEIGHTS_INFO,
    FinalWeights,
    payload_from_checkpoint,
    sha256_bytes,
    verify_bytes,
    weights_from_bytes,
)
from ..run import FINAL, LAST, Checkpoint, assemble_run, atomic_write_bytes, is_run_dir, read_config, read_metrics
from .manifest import SIZE_BUDGET, ModelEntry, Registry, check_name, packaged_root, registry_root


@dataclass
class Source:
    """The final weights of a run and the file they were read from (relative to the run directory)."""

    weights: FinalWeights
    data: bytes
    file: str


def _yaml_scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[:-3].strip() if text.endswith("...") else text


def _value(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg.to_dict()
    for part in key.split("."):
        node = node[part]
    return node


def derive_command(cfg: RunConfig, out: str) -> str:
    """``ctxbudget train --config NAME --out OUT --set …``: the packaged config closest to ``cfg`` (fewest
    keys that matter to training differ, ``reproduce``'s ``config_mismatch``) and a ``--set`` per such key."""
    from ..presets import config_names, packaged_config
    from ..reproduce.runner import config_mismatch

    best: tuple[int, str, list[str]] | None = None
    for name in config_names():
        diff = config_mismatch(load_config(str(packaged_config(name))), cfg)
        if best is None or len(diff) < best[0]:
            best = (len(diff), name, diff)
    if best is None:
        raise RegistryError("no packaged configs found to derive the training command from; give --command")
    _, name, diff = best
    sets = "".join(f" --set {shlex.quote(f'{k}={_yaml_scalar(_value(cfg, k))}')}" for k in diff)
    return f"ctxbudget train --config {name} --out {shlex.quote(out)}{sets}"


def describe_schedule(cfg: RunConfig) -> str:
    """One line: epochs, the ε0 ramp and the training images, e.g. ``16 epochs, linear ε0 ramp from epoch 2 over 10``."""
    s, o, d = cfg.schedule, cfg.optim, cfg.data
    text = f"{o.epochs} epochs, {s.kind} ε0 ramp from epoch {s.start} over {s.length}"
    return text + (f", first {d.train_limit} training images" if d.train_limit is not None else "")


def _head(cfg: RunConfig) -> Optional[str]:
    from ..reproduce.runner import head_name

    return head_name(cfg) if cfg.budget.kind == "learned" else None


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path} is not valid JSON ({exc}); {what}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path} does not hold a JSON object; {what}")
    return data


def final_weights_of(run_dir: Path, cfg: RunConfig) -> Source:
    """The run's final weights: ``final_weights.pt`` (checked against ``final_weights.json``), else
    extracted from ``final.pt``, else from ``checkpoints/last.pt``; RegistryError unless they are
    from the run's last epoch (``optim.epochs``)."""
    resume = f"finish it with `ctxbudget train --resume {run_dir}`"
    path = run_dir / FINAL_WEIGHTS
    if path.is_file():
        data = path.read_bytes()
        info_path = run_dir / FINAL_WEIGHTS_INFO
        if info_path.is_file():
            info = _read_json(info_path, "train the run again or delete it to register from final.pt")
            verify_bytes(data, path, str(info.get("sha256")), int(info.get("size", -1)), f"final weights of {run_dir}")
        source = Source(weights_from_bytes(data, path), data, FINAL_WEIGHTS)
    else:
        found = next((name for name in (FINAL, LAST) if (run_dir / name).is_file()), None)
        if found is None:
            raise RegistryError(f"{run_dir} is not finished: it holds no final weights ({FINAL_WEIGHTS}, {FINAL} or "
                                f"{LAST}); {resume}")
        try:
            weights = payload_from_checkpoint(Checkpoint.load(run_dir / found))
        except UserError as exc:
            raise RegistryError(str(exc)) from None
        source = Source(weights, weights.to_bytes(), found)
    epoch = source.weights.epoch
    if epoch is None or int(epoch) != cfg.optim.epochs:
        raise RegistryError(f"{run_dir} is not finished: its {source.file} is from epoch "
                            f"{'?' if epoch is None else epoch} of {cfg.optim.epochs}; {resume}")
    return source


def _check_results(results: dict, epoch: Optional[int], run_dir: Path) -> None:
    """RegistryError when ``results.json`` names another epoch than the final weights'."""
    evaluated = (results.get("checkpoint") or {}).get("epoch")
    if evaluated is not None and epoch is not None and int(evaluated) != int(epoch):
        raise RegistryError(f"{run_dir}/results.json evaluates epoch {evaluated}, the final weights are from epoch "
                            f"{epoch}; run `ctxbudget evaluate {run_dir}` again")


def _finished_epoch_without_weights(run_dir: Path, cfg: RunConfig, results: dict) -> int:
    """The last epoch a run without weights files reached (``results.json``'s checkpoint, else the metrics)."""
    epoch = (results.get("checkpoint") or {}).get("epoch")
    if epoch is None:
        epoch = max((int(r.get("epoch", 0)) for r in read_metrics(run_dir)), default=0)
    if int(epoch) != cfg.optim.epochs:
        raise RegistryError(f"{run_dir} is not finished: it reached epoch {epoch} of {cfg.optim.epochs}")
    return int(epoch)


def _check_target(registry: Registry, name: str, replace: bool, size: int) -> Optional[ModelEntry]:
    """The entry being replaced (or None); RegistryError for a taken name or a blown size budget."""
    old = registry.get(name)
    if old is not None and not replace:
        raise RegistryError(f"model {name} is already registered in {registry.root}; give --replace to overwrite it")
    packaged = registry.root.resolve() == packaged_root().resolve()
    if packaged:
        code = packaged_root().parent
        if code.parent.name != "src" or not (code.parent.parent / "pyproject.toml").is_file():
            raise RegistryError(f"the packaged registry {registry.root} belongs to an installed package; register "
                                "from a source checkout, or give --registry DIR (or set CTXBUDGET_MODELS)")
        total = registry.stored_bytes() - ((old.size or 0) if old is not None else 0) + size
        if total > SIZE_BUDGET:
            raise RegistryError(f"{name}'s weights ({size / 1e6:.1f} MB) would bring the packaged registry to "
                                f"{total / 1e6:.1f} MB (budget {SIZE_BUDGET / 1e6:.0f} MB); register it with --not-stored")
    return old


def portable_path(path: str | Path) -> str:
    """``path`` as the manifest records it: relative to the working directory when it lies below it,
    else its last three parts; the shipped manifest holds no absolute path of the machine that
    registered the model."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(*p.parts[-3:]).as_posix()


def register_run(run_dir: str | Path, name: str, *, description: str | None = None, command: str | None = None,
                 schedule: str | None = None, root: str | Path | None = None, stored: bool = True,
                 replace: bool = False) -> ModelEntry:
    """Register the finished, evaluated run in ``run_dir`` as ``name`` in the registry ``root``
    (``registry_root``: else ``$CTXBUDGET_MODELS``, else the packaged one); return its entry.

    ``stored=False`` lists the model without its weights (too large to ship): ``command`` tells how to
    train it. ``description`` defaults to the config's, ``command`` to :func:`derive_command`'s,
    ``schedule`` to :func:`describe_schedule`'s. Writes the weights file, then the manifest (atomically)."""
    check_name(name)
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise RegistryError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = read_config(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise RegistryError(f"{run_dir} has no results.json; run `ctxbudget evaluate {run_dir}` first")
    results = _read_json(results_path, f"run `ctxbudget evaluate {run_dir}` again")
    registry = Registry.load(registry_root(root))
    source: Optional[Source] = None
    if stored:
        source = final_weights_of(run_dir, cfg)
        epoch, step = source.weights.epoch, source.weights.step
        _check_results(results, epoch, run_dir)
        assemble_run(cfg, source.weights.to_checkpoint(), run_dir / source.file, run_dir)   # the weights fit the config
    else:
        epoch, step = _finished_epoch_without_weights(run_dir, cfg, results), (results.get("checkpoint") or {}).get("step")
    old = _check_target(registry, name, replace, len(source.data) if source is not None else 0)
    stats_path = run_dir / "figures" / "budget_stats.json"
    weights: Optional[dict] = None
    if source is not None:
        digest = sha256_bytes(source.data)
        weights = {"file": f"{name}-{digest[:12]}.pt", "sha256": digest, "size": len(source.data), "dtype": "float32",
                   "parameters": source.weights.parameters()}
    config = cfg.to_dict()
    if config["data"]["root"] and Path(config["data"]["root"]).is_absolute():
        config["data"]["root"] = None          # a path of this machine; a registered model reads --data-dir
    results = {**results, "run_dir": portable_path(results.get("run_dir", run_dir))}
    entry = ModelEntry(name=name, description=description or cfg.description or name,
                       command=command or derive_command(cfg, f"runs/{name}"), dataset=cfg.data.name,
                       schedule=schedule or describe_schedule(cfg), head=_head(cfg), epoch=epoch, step=step,
                       config=config, results=results, weights=weights,
                       budget_stats=_read_json(stats_path, "run `ctxbudget visualize` again") if stats_path.is_file() else None,
                       source={"run_dir": portable_path(run_dir), "weights_from": source.file if source else None,
                               "ctxbudget": __version__},
                       root=registry.root)
    fresh = source is not None and entry.weights_path is not None and not entry.weights_path.exists()
    if source is not None and entry.weights_path is not None:
        atomic_write_bytes(entry.weights_path, source.data)
    registry.models = [m for m in registry.models if m.name != name] + [entry]
    try:
        registry.save()
    except OSError:
        if fresh and entry.weights_path is not None:      # the manifest never named it: leave no orphan
            entry.weights_path.unlink(missing_ok=True)
        raise
    stale = old.weights_path if old is not None else None
    if stale is not None and stale != entry.weights_path and stale.is_file() \
            and all(m.weights_path != stale for m in registry.models):
        stale.unlink()
    return entry
