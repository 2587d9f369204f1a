"""The context head's fast kernels (1×1 convolution, bilinear upsampling) against PyTorch's own."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctxbudget.models.generator import ContextHead, pointwise_conv, upsample_bilinear


@pytest.mark.parametrize("ci,co,bias", [(16, 1, True), (16, 3, True), (1, 1, True), (3, 3, False), (8, 2, True)])
def test_pointwise_conv_equals_conv2d(ci, co, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(ci, co, 1, bias=bias).double()
    x = torch.randn(3, ci, 7, 5, dtype=torch.float64, requires_grad=True)
    got, ref = pointwise_conv(conv, x), conv(x)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    params = (x, *conv.parameters())
    for a, b in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_pointwise_conv_keeps_the_dtype_of_bf16_features():
    conv = nn.Conv2d(16, 1, 1)
    x = torch.randn(2, 16, 4, 4).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = pointwise_conv(conv, x), conv(x)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("src,dst", [((4, 4), (28, 28)), ((14, 14), (28, 28)), ((4, 4), (14, 14)), ((15, 15), (29, 29)),
                                     ((5, 3), (32, 17)), ((28, 28), (28, 28))])
def test_upsample_bilinear_equals_interpolate(src, dst):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *src, dtype=torch.float64, requires_grad=True)
    got = upsample_bilinear(x, dst)
    ref = F.interpolate(x, size=dst, mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(ref, x, g)[0],
                               rtol=1e-12, atol=1e-12)
    x32 = x.detach().float()
    torch.testing.assert_close(upsample_bilinear(x32, dst), F.interpolate(x32, size=dst, mode="bilinear",
                                                                          align_corners=False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("resolution", ["full", "half", "low"])
def test_context_head_equals_its_reference_forward(resolution):
    """The head with the fast kernels gives the logits of the same head written with nn.Conv2d and
    F.interpolate (float64: summation order only)."""
    torch.manual_seed(2)
    head = ContextHead((1, 28, 28), resolution=resolution).double()
    for p in head.parameters():  # FiLM, coarse map and skip start at zero: give them values
        p.data.normal_(0, 0.3)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    ref_out = _reference_forward(head, x)
    torch.testing.assert_close(head(x), ref_out, rtol=1e-10, atol=1e-10)


def _reference_forward(head: ContextHead, x: torch.Tensor) -> torch.Tensor:
    from ctxbudget.models.generator import COARSE_RANGE, INK_POOL, INK_SCALE, max_pool_same
    b = x.shape[0]
    if head.skip is None:
        feats = head.local(x)
    elif head.resolution == "low":
        first, feats = x, head.local(F.avg_pool2d(x, 2, ceil_mode=True))
    else:
        first = head.local[1](head.local[0](x))
        feats = head.local[2:](F.avg_pool2d(first, 2, ceil_mode=True))
    pooled = torch.cat([feats.mean(dim=(2, 3)), F.adaptive_avg_pool2d(x, 4).flatten(1)], dim=1)
    z = head.summary(pooled)
    scale, shift = head.film(z).chunk(2, dim=1)
    feats = feats * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    coarse = COARSE_RANGE * torch.tanh(head.coarse(z)).view(b, head.channels, *head.grid)
    coarse = F.interpolate(coarse, size=head.local_size, mode="bilinear", align_corners=False)
    logits = head.out(feats) + coarse
    if head.skip is not None:
        logits = F.interpolate(logits, size=head.size, mode="bilinear", align_corners=False) + head.skip(first)
    return logits + head.ink_weight * torch.tanh(max_pool_same(x, INK_POOL) / INK_SCALE)
