"""The device a command runs its model on: ``--device auto|cpu|cuda|cuda:N`` and torchrun ranks.

Every command that runs a model takes ``--device`` (:func:`add_device_argument`) with the same
default as ``train``: ``auto`` = this process's CUDA GPU when torch sees one, else the CPU. Under
``torchrun`` :func:`evaluation_processes` joins the process group (gloo on the CPU, nccl on CUDA;
``cuda`` means the rank's local GPU) and gives it back when the command ends. A device that does
not exist is one line (``UserError``).
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Iterator

import torch

from .errors import UserError

DEVICE_HELP = "auto | cpu | cuda | cuda:N (default: auto = CUDA when available, else cpu)"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` with the same default and meaning as ``ctxbudget train --device``."""
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (CPU for a module without any)."""
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def resolve(name: str) -> torch.device:
    """``name`` as a torch device of this process (one process; see :func:`evaluation_processes`)."""
    from .train import distributed as D  # imported here: ctxbudget.run imports this module

    try:
        return D.resolve_device(name)
    except ValueError as err:
        raise UserError(str(err)) from None


@contextmanager
def evaluation_processes(name: str) -> Iterator[tuple[int, torch.device]]:
    """``(rank, device)`` of this process: ``(0, resolve(name))`` alone, or under torchrun the rank
    and its device after joining the process group, which is torn down on exit."""
    from .train import distributed as D

    try:
        info, device = D.setup(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    try:
        yield info.rank, device
    finally:
        if info.enabled:
            D.teardown()
