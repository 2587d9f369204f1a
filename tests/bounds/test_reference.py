"""Golden values computed with auto_LiRPA (tests/bounds/reference/*.pt) are reproduced."""
from __future__ import annotations

import os

import pytest
import torch

from ctxbudget.bounds import Bounder, compute_bounds, margin_spec

from .conftest import REFERENCE_DIR, build_from_spec, reference_dir

NETS = ["mlp", "dm_small_random", "dm_small_trained", "conv_rgb"]
METHODS = {"IBP": "ibp", "CROWN-IBP": "crown-ibp", "CROWN": "crown"}
RTOL = 1e-4
# Full CROWN bounds every intermediate neuron with its own row: on the conv nets we check a subset
# of the samples of each case (bounds are computed per sample, so a subset is an exact check).
# The test marked slow checks every sample (a few minutes on 2 cores).
CROWN_SAMPLES = {"mlp": 8, "dm_small_random": 1, "dm_small_trained": 1, "conv_rgb": 1}


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.detach() - b).abs() / b.abs().clamp(min=1.0)).max())


@pytest.mark.parametrize("net_name", NETS)
@pytest.mark.parametrize("method", list(METHODS))
def test_reference_values(refdir, net_name: str, method: str) -> None:
    _check_reference(refdir, net_name, method, all_samples=False)


@pytest.mark.slow   # full CROWN on every sample takes minutes
@pytest.mark.parametrize("net_name", NETS[1:])
def test_reference_values_crown_all_samples(refdir, net_name: str) -> None:
    _check_reference(refdir, net_name, "CROWN", all_samples=True)


def _check_reference(refdir, net_name: str, method: str, all_samples: bool) -> None:
    path = refdir / f"{net_name}.pt"
    assert path.exists(), f"{path} missing"
    data = torch.load(path, weights_only=False)
    net = build_from_spec(data["spec"])
    net.load_state_dict(data["state_dict"])
    net.eval()
    worst = 0.0
    for case in data["cases"]:
        nb = CROWN_SAMPLES[net_name] if method == "CROWN" and not all_samples else case["x"].shape[0]
        x, y = case["x"][:nb], case["y"][:nb]
        eps = case["eps"][:nb].clone().requires_grad_(True)
        xl, xu = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        bd = Bounder(net, xl, xu)  # one Bounder: logits and margins share the intermediate bounds
        K = bd.K
        A = bd.spec(None)
        res = bd.lower_rows(torch.cat([A, -A], 1), METHODS[method])
        lo, up = res[:, :K], -res[:, K:]
        if method == "IBP":  # plain layer-wise IBP of the logits, as compute_bounds does for C=None
            lo, up = compute_bounds(net, xl, xu, "ibp")
        M = bd.spec(margin_spec(y, K))
        res = bd.lower_rows(torch.cat([M, -M], 1), METHODS[method])
        ml, mu = res[:, : K - 1], -res[:, K - 1:]
        (g,) = torch.autograd.grad(ml.sum(), eps)
        got = {"logits_lower": lo, "logits_upper": up, "margins_lower": ml, "margins_upper": mu,
               "grad_eps_of_sum_margins_lower": g}
        for key, val in got.items():
            ref = case[f"{method}/{key}"][:nb]
            assert val.shape == ref.shape, key
            e = _err(val, ref)
            worst = max(worst, e)
            assert e <= RTOL, f"{net_name} {method} {key} scale={case['scale']}: rel err {e:.3g}"
    print(f"{net_name} {method}: worst relative error {worst:.2e}")


def test_compute_bounds_api_matches_reference(refdir) -> None:
    """The public compute_bounds (lower+upper, C folded) gives the reference margins."""
    data = torch.load(refdir / "dm_small_trained.pt", weights_only=False)
    net = build_from_spec(data["spec"])
    net.load_state_dict(data["state_dict"])
    case = data["cases"][1]
    x, eps, y = case["x"], case["eps"], case["y"]
    xl, xu = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    for name in ("IBP", "CROWN-IBP"):
        lo, up = compute_bounds(net, xl, xu, method=name.lower(), C=margin_spec(y, 10))
        assert _err(lo, case[f"{name}/margins_lower"]) <= RTOL
        assert _err(up, case[f"{name}/margins_upper"]) <= RTOL
        lo, up = compute_bounds(net, xl, xu, method=name.lower())
        assert _err(lo, case[f"{name}/logits_lower"]) <= RTOL
        assert _err(up, case[f"{name}/logits_upper"]) <= RTOL


def test_reference_files_ship_with_the_tests() -> None:
    """The golden values live in tests/bounds/reference, so the reference tests never skip on a fresh clone."""
    assert {p.stem for p in REFERENCE_DIR.glob("*.pt")} >= set(NETS)
    if "CTXBUDGET_REFERENCE" not in os.environ:
        assert reference_dir() == REFERENCE_DIR.resolve()
