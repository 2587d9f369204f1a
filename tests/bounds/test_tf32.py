"""TF32 is off wherever a bound is computed on CUDA: a TF32 convolution is not a float32 bound."""
from __future__ import annotations

import pytest
import torch

from ctxbudget.bounds import Bounder, engine
from ctxbudget.models import get_model


@pytest.fixture
def tf32_flags():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_forbid_tf32_turns_both_flags_off_for_cuda(tf32_flags):
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    engine.forbid_tf32(torch.device("cpu"))
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    engine.forbid_tf32(torch.device("cuda", 0))
    assert not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32


def test_every_bounder_forbids_tf32_on_its_box_device(monkeypatch):
    seen = []
    monkeypatch.setattr(engine, "forbid_tf32", seen.append)
    net = get_model("dm-small", (1, 28, 28), 10)
    x = torch.rand(2, 1, 28, 28)
    Bounder(net, x - 0.1, x + 0.1)
    assert seen == [torch.device("cpu")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bounder_leaves_tf32_off(tf32_flags):
    torch.backends.cudnn.allow_tf32 = True
    net = get_model("dm-small", (1, 28, 28), 10).cuda()
    x = torch.rand(2, 1, 28, 28, device="cuda")
    Bounder(net, x - 0.1, x + 0.1)
    assert not torch.backends.cudnn.allow_tf32
