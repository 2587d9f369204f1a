"""Process-wide performance settings used by the command line and the benchmarks.

Bound propagation allocates and frees many large tensors per step (the A matrices of CROWN are
S×B times an activation: 230 MB each for the margins of DM-large at batch 128). glibc serves
blocks above its mmap threshold (at most 32 MB by default) with a fresh ``mmap`` and returns them
on ``free``, so every such tensor is page-faulted in again, and the kernel zeroes every page: on
the 2-core machines of this project that made a DM-large CROWN-IBP margin step spend 66 s of
system time for 71 s of user time (15 M page faults for 3 steps). :func:`tune_allocator` keeps
freed memory in the heap instead (``mallopt``): the same step runs 2–3× faster, at the price of a
resident size that stays near its peak (memory is returned only when more than 2 GiB is free at
the top of the heap).

It changes the whole process, so the library never calls it on import: ``ctxbudget`` commands do
(set ``CTXBUDGET_MALLOC_TUNING=0`` to opt out), and scripts may call it themselves.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LIMIT = 2**31 - 1  # mallopt takes an int

_tuned = False


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds to 2 GiB (Linux with glibc; elsewhere a no-op).

    Returns True if the settings are in effect. Idempotent; ``CTXBUDGET_MALLOC_TUNING=0`` disables.
    """
    global _tuned
    if _tuned:
        return True
    if os.environ.get("CTXBUDGET_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, _LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, _LIMIT))
    return _tuned


# ------------------------------------------------------------------ generator precision
GENERATOR_PRECISIONS = ("auto", "float32", "bfloat16")


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` multiplies bf16 matrices natively (so bf16 autocast pays off).

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: the AMX-BF16 or AVX-512 BF16 instruction sets
    (``/proc/cpuinfo`` flags ``amx_bf16`` / ``avx512_bf16``; Linux only, elsewhere False). Without
    them bf16 is emulated and slower than float32.
    """
    import torch

    dev = device if isinstance(device, torch.device) else torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type != "cpu":
        return False
    return bool(_cpu_flags() & {"amx_bf16", "avx512_bf16"})


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_autocast_on(device_type: str) -> bool:
    """Whether a bf16 request runs under ``torch.autocast`` on this device type (``"cpu"``, ``"cuda"``);
    elsewhere the generator and the attack stay in float32."""
    return device_type in ("cpu", "cuda")


def _wants_bf16(precision: str, device: str | torch.device, what: str) -> bool:
    """``precision`` (``float32``, ``bfloat16``, or ``auto``: bf16 where :func:`fast_bf16` holds) resolved
    on ``device``; ValueError naming ``what`` for another value."""
    if precision not in GENERATOR_PRECISIONS:
        raise ValueError(f"{what} precision must be one of {', '.join(GENERATOR_PRECISIONS)}, got {precision!r}")
    return fast_bf16(device) if precision == "auto" else precision == "bfloat16"


def generator_dtype(precision: str, device: str | torch.device = "cpu") -> torch.dtype:
    """``torch.float32`` or ``torch.bfloat16`` for the budget generator's matrix products.

    ``precision``: ``float32``, ``bfloat16``, or ``auto`` (bf16 where :func:`fast_bf16` holds).
    Only the generator (which chooses the box) runs in bf16; bounds and the budget projection stay
    in full precision, so certificates are unaffected.
    """
    import torch

    return torch.bfloat16 if _wants_bf16(precision, device, "generator") else torch.float32


# ------------------------------------------------------------------ attack precision
ATTACK_PRECISIONS = GENERATOR_PRECISIONS


def attack_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"float32"`` or ``"bfloat16"``: the PGD attack's matrix products (``evaluate.pgd_attack``).

    ``precision``: ``float32``, ``bfloat16``, or ``auto`` (bf16 where :func:`fast_bf16` holds). The
    attack only searches the box: its margins and its broken decision are float32 either way.
    """
    return "bfloat16" if _wants_bf16(precision, device, "attack") else "float32"
