"""Evaluation split across the ranks of a ``torchrun`` launch (CPU gloo or CUDA nccl).

The examples are cut into the batches a single process would use (``steps.batches``), and rank r
evaluates batches r, r + W, r + 2W, … (W ranks). Every per-example result is then summed across
ranks with zeros where a rank did not evaluate the example, so every rank ends with exactly the
arrays of one process (x + 0 = x in floating point; NaN and ±inf pass unchanged). The attack's
random starts are seeded per example (``attack.example_seeds``) and each batch is the batch one
process would see, so with the same thread count per process the arrays are bit-identical to a
single process's; with other thread counts ε(x) may differ in its last bits (docs/method.md,
"Budgets across batches, threads and machines").

Without a process group everything here is the identity: one rank, every batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's share of an evaluation: ``rank`` of ``world`` (one process: 0 of 1)."""

    rank: int = 0
    world: int = 1

    def mine(self, slices: list[slice]) -> list[slice]:
        """The batches this rank evaluates: every ``world``-th, starting at ``rank``."""
        return slices[self.rank::self.world]

    def owned(self, n: int, slices: list[slice]) -> np.ndarray:
        """Boolean mask (n,) of the examples in this rank's batches."""
        mask = np.zeros(n, bool)
        for s in self.mine(slices):
            mask[s] = True
        return mask


#: the shard of a process evaluating alone
ONE_PROCESS = Shard()


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    from ..train.distributed import all_reduce_  # imported here: the trainer imports the evaluation

    return all_reduce_(t, op)


def current_shard() -> Shard:
    """The shard of this process: from the default process group when one is initialised (``torchrun``
    with ``ctxbudget evaluate``), else one rank."""
    if not _group_active():
        return ONE_PROCESS
    return Shard(dist.get_rank(), dist.get_world_size())


def merge_owned(arrays: dict[str, np.ndarray], owned: np.ndarray, device: torch.device) -> dict[str, np.ndarray]:
    """Per-example ``arrays`` (each (n,) or (n, …)) completed from every rank: entries outside ``owned``
    come from the rank that owns them. Dtypes are kept (bool, integer and float; float64 on the wire,
    exact for these). One rank: returned as they are."""
    if not _group_active():
        return arrays
    out: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        mask = owned.reshape((-1,) + (1,) * (arr.ndim - 1))
        local = np.where(mask, arr.astype(np.float64), 0.0)
        t = torch.from_numpy(np.ascontiguousarray(local)).to(device)
        merged = _all_reduce(t, "sum").cpu().numpy()
        out[name] = merged.astype(bool) if arr.dtype == bool else merged.astype(arr.dtype)
    return out


def gather_strings(items: list[str]) -> list[str]:
    """Every rank's ``items`` concatenated in rank order (one rank: ``items``)."""
    if not _group_active():
        return items
    everyone: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, items)
    return [s for part in everyone for s in (part or [])]


def max_seconds(seconds: dict[str, float], device: torch.device) -> dict[str, float]:
    """Wall-clock seconds of each stage: the slowest rank's (one rank: as they are)."""
    if not _group_active():
        return seconds
    keys = sorted(seconds)
    t = torch.tensor([seconds[k] for k in keys], dtype=torch.float64, device=device)
    _all_reduce(t, "max")
    return dict(zip(keys, t.cpu().tolist()))
