"""Process-group helpers for ``torchrun`` (DDP). One process per device; no process management here.

``setup()`` reads the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK) and initialises the
default process group (nccl on CUDA, gloo on CPU). Without those variables everything runs as a
single process and the helpers are no-ops.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → cuda (this process's local GPU) if available else cpu; ``cuda`` → cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available (use --device cpu)")
        return torch.device("cuda", local_rank)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (auto | cpu | cuda | cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r} (auto | cpu | cuda | cuda:N)")
    return device


def setup(device_name: str) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun; return (DistInfo, device)."""
    if not launched_by_torchrun():
        return DistInfo(), resolve_device(device_name)
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank), device


def teardown() -> None:
    """Destroy the process group (if any). Called by ``ctxbudget train`` when training ends: a gloo
    group left to the interpreter's exit sometimes aborts a rank ("terminate called without an
    active exception") after the run was written, and torchrun then reports the run as failed."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()         # no rank tears the group down while another still talks to it
        except Exception:          # a peer already gone: nothing left to wait for
            pass
        dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    """True in a process that ``torchrun`` started as one rank of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def exit_rank(code: int) -> NoReturn:
    """Exit with ``code``. A torchrun rank flushes its streams and log handlers and leaves with
    ``os._exit``, without the interpreter's finalisation: gloo's worker threads can outlive
    :func:`teardown` (the DDP reducer keeps the process group alive) and their destruction during
    finalisation sometimes aborts a rank ("terminate called without an active exception", SIGABRT)
    after its run was written, which torchrun then reports as a failed job. Every output of a
    command is written and closed before the command returns, so nothing is lost. Any other process
    exits normally (``SystemExit``)."""
    if not launched_by_torchrun():
        raise SystemExit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):      # a closed or broken pipe: nothing left to flush
            pass
    os._exit(code)


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum | min | max) when a process group exists; identity otherwise."""
    if dist.is_available() and dist.is_initialized():
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
