"""Allocator tuning (``ctxbudget.runtime``): in effect on Linux/glibc, opt-out works, and it removes
the page faults of repeated large allocations. Each case runs in a fresh interpreter (the setting is
process-wide)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning is Linux-only")

SCRIPT = """
import resource, sys, torch
from ctxbudget.runtime import tune_allocator
tuned = tune_allocator()
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def churn():
    for _ in range(10):
        a = torch.ones(64 * 2**20 // 4)   # 64 MiB, above glibc's default mmap threshold
        b = a * 2
        del a, b
churn()  # the heap grows to its working size
f0 = faults()
churn()
print(tuned, faults() - f0)
"""


def _run(env_extra: dict) -> tuple[bool, int]:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
    tuned, faults = out.stdout.split()
    return tuned == "True", int(faults)


def test_tuning_removes_page_faults_and_can_be_disabled() -> None:
    tuned, faults_tuned = _run({"CTXBUDGET_MALLOC_TUNING": "1"})
    off, faults_default = _run({"CTXBUDGET_MALLOC_TUNING": "0"})
    if not tuned:
        pytest.skip("no glibc mallopt on this system")
    assert not off
    pages = 64 * 2**20 // 4096
    assert faults_default > 15 * pages         # every allocation (20 of them) faulted in again
    assert faults_tuned < 3 * pages            # seen: 0 to 1 × pages once the heap has grown


def test_attack_precision_resolves_auto_by_the_device() -> None:
    from ctxbudget.runtime import attack_precision, fast_bf16

    assert attack_precision("auto", "cpu") == ("bfloat16" if fast_bf16("cpu") else "float32")
    assert attack_precision("float32", "cpu") == "float32" and attack_precision("bfloat16", "cpu") == "bfloat16"
    assert attack_precision("auto", "meta") == "float32"
    with pytest.raises(ValueError, match="attack precision"):
        attack_precision("float16")
