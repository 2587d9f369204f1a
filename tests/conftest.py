"""Fixtures shared by the export and certify tests."""
import pytest


@pytest.fixture
def tiny_run_dir(tmp_path):
    """An untrained learned-budget run on mnist-sample (DM-small, ε0 = 0.3) written with ctxbudget.run."""
    import torch

    from ctxbudget.config import config_from_dict
    from ctxbudget.data import get_info
    from ctxbudget.run import FINAL, atomic_torch_save, build_models, write_config

    torch.manual_seed(0)
    cfg = config_from_dict({"data": {"name": "mnist-sample"}, "model": {"name": "dm-small"},
                            "budget": {"kind": "learned", "eps0": 0.3, "alpha_lo": 0.5, "alpha_hi": 2.0}})
    info = get_info("mnist-sample")
    classifier, threat = build_models(cfg, info.input_shape, info.num_classes, info.mean, info.std)
    out = tmp_path / "run"
    out.mkdir()
    write_config(out, cfg)
    atomic_torch_save({"classifier": classifier.state_dict(), "generator": threat.generator.state_dict()}, out / FINAL)
    return out
