"""Verdicts do not depend on the batch size or the thread count (docs/method.md, "Budgets across
batches, threads and machines"): ε(x)'s last bits may, a verdict may not (except within the rounding
tolerance of 0, which these examples are not near)."""
from __future__ import annotations

import numpy as np
import torch

from ctxbudget.evaluate import evaluate_model, load_split
from ctxbudget.run import load_run


def _verdicts(run_dir, batch_size: int, threads: int) -> dict[str, np.ndarray]:
    """Per-example verdicts (and the margin bounds) of the first 48 test images."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = load_run(run_dir)
        ds = load_split(run, "test")
        _, rec = evaluate_model(run.classifier, run.threat, ds.images[:48], ds.labels[:48], batch_size=batch_size,
                                liu_limit=0, attack_steps=5, attack_targets=0, methods=("ibp", "crown-ibp"),
                                return_records=True)
    finally:
        torch.set_num_threads(before)
    return rec


def test_same_verdicts_for_every_batch_size_and_thread_count(trained_run):
    base = _verdicts(trained_run, 128, 1)
    certified = int(base["verified_learned_any"].sum())
    assert 5 <= certified <= 45, f"need a mix of verdicts to compare, got {certified} of 48 certified"
    for b, t in [(1, 1), (7, 1), (128, 2), (7, 2)]:
        other = _verdicts(trained_run, b, t)
        for name in ("correct", "verified_learned_any", "verified_uniform_any", "verified_learned_crown_ibp",
                     "verified_learned_ibp"):
            assert np.array_equal(other[name], base[name]), (b, t, name)
        # the bounds themselves agree to rounding (ε's last bits may differ)
        np.testing.assert_allclose(other["min_lb_learned"], base["min_lb_learned"], rtol=1e-4, atol=1e-4)
