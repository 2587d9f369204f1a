"""The product-and-fold convolution path (bounds/conv.py) against PyTorch's own kernels."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ctxbudget.bounds import conv

# (Ci, Co, H, W, kernel, stride, padding, dilation): MNIST/CIFAR first layers, odd sizes, padding,
# dilation, and shapes where the last rows/columns of the input are read by no output
CASES = [(1, 16, 28, 28, 4, 2, 0, 1), (3, 16, 32, 32, 4, 2, 0, 1), (1, 8, 29, 27, 3, 2, 1, 1),
         (2, 5, 12, 11, 3, 1, 2, 2), (4, 3, 10, 10, (3, 2), (2, 3), (1, 0), 1), (3, 4, 9, 9, 4, 3, 0, 1)]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@pytest.mark.parametrize("case", CASES)
def test_fold_transpose_is_the_adjoint_of_conv2d(case):
    Ci, Co, H, W, k, s, p, d = case
    k, s, p, d = map(_pair, (k, s, p, d))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(Co, Ci, *k, generator=g, dtype=torch.float64)
    x = torch.randn(3, Ci, H, W, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w, None, s, p, d)
    A = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (ref,) = torch.autograd.grad(y, x, A)                   # Aᵀ pushed back by PyTorch
    got = conv.fold_transpose(A, w, s, p, d, (H, W))
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conv.conv_transpose(A, w, s, p, d, (H, W)), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_fold_transpose_gradients_match_conv_transpose2d(case):
    """Gradients for the rows and the weight (a training step's CROWN pass) equal those of PyTorch's
    transposed convolution; the rows' gradient comes back in the standard memory layout."""
    Ci, Co, H, W, k, s, p, d = case
    k, s, p, d = map(_pair, (k, s, p, d))
    g = torch.Generator().manual_seed(4)
    w = torch.randn(Co, Ci, *k, generator=g, dtype=torch.float64, requires_grad=True)
    out_hw = F.conv2d(torch.zeros(1, Ci, H, W, dtype=torch.float64), w.detach(), None, s, p, d).shape[2:]
    A = torch.randn(3, Co, *out_hw, generator=g, dtype=torch.float64, requires_grad=True)
    got = conv.fold_transpose(A, w, s, p, d, (H, W))
    full = [(out_hw[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + 1 for i in range(2)]
    ref = F.conv_transpose2d(A, w, None, s, p, (H - full[0], W - full[1]), 1, d)
    gy = torch.randn(ref.shape, generator=g, dtype=torch.float64).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    got_grads = torch.autograd.grad(got, (A, w), gy)       # an upstream gradient in channels-last layout
    for a, b in zip(got_grads, torch.autograd.grad(ref, (A, w), gy)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert got_grads[0].is_contiguous()
    if H * W <= 144:
        torch.autograd.gradcheck(lambda a, v: conv.fold_transpose(a, v, s, p, d, (H, W)), (A, w))


@pytest.mark.parametrize("case", CASES)
def test_conv2d_gradients_match_pytorch(case):
    Ci, Co, H, W, k, s, p, d = case
    k, s, p, d = map(_pair, (k, s, p, d))
    g = torch.Generator().manual_seed(1)
    w = torch.randn(Co, Ci, *k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(Co, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, Ci, H, W, generator=g, dtype=torch.float64, requires_grad=True)
    out = conv.conv2d(x, w, b, s, p, d)
    ref = F.conv2d(x, w, b, s, p, d)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert out.grad_fn is not None and "FoldGradConv" in type(out.grad_fn).__name__
    gy = torch.randn(out.shape, generator=g, dtype=torch.float64)
    for got, want in zip(torch.autograd.grad(out, (x, w, b), gy), torch.autograd.grad(ref, (x, w, b), gy)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if H * W <= 144:  # numerical gradients on the small cases
        torch.autograd.gradcheck(lambda a, v, c: conv.conv2d(a, v, c, s, p, d), (x, w, b))
        # |W| (the IBP radius pass): the gradient reaches W through abs
        torch.autograd.gradcheck(lambda a, v: conv.conv2d(a, v.abs(), None, s, p, d), (x, w))


def test_paths_are_chosen_by_channels_and_device():
    w1 = torch.zeros(16, 1, 4, 4)
    wide = torch.zeros(32, conv.FOLD_MAX_IN_CHANNELS + 1, 4, 4)
    assert conv.use_fold(w1) and not conv.use_fold(wide)
    x = torch.zeros(2, 1, 8, 8, requires_grad=True)
    assert "FoldGradConv" in type(conv.conv2d(x, w1, None, (1, 1), (0, 0), (1, 1)).grad_fn).__name__
    # no input gradient wanted: PyTorch's own convolution (its weight-only backward is fast)
    y = conv.conv2d(x.detach(), w1.requires_grad_(), None, (1, 1), (0, 0), (1, 1))
    assert "FoldGradConv" not in type(y.grad_fn).__name__
    with torch.no_grad():
        assert conv.conv2d(x, w1, None, (1, 1), (0, 0), (1, 1)).grad_fn is None


def test_wide_layers_keep_conv_transpose():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(8, 6, 3, 3, generator=g, dtype=torch.float64)
    A = torch.randn(2, 8, 5, 5, generator=g, dtype=torch.float64)
    ref = F.conv_transpose2d(A, w, None, 2, 1, 0)            # 5 → 9
    torch.testing.assert_close(conv.conv_transpose(A, w, (2, 2), (1, 1), (1, 1), (9, 9)), ref)
    ref10 = F.conv_transpose2d(A, w, None, 2, 1, 1)          # 5 → 10: one row/column no output reads
    torch.testing.assert_close(conv.conv_transpose(A, w, (2, 2), (1, 1), (1, 1), (10, 10)), ref10)


def test_fold_forward_same_logits_and_input_gradient():
    from ctxbudget.models import get_model
    torch.manual_seed(3)
    model = get_model("dm-small", (1, 28, 28), 10).eval()
    net = conv.fold_forward(model)
    assert net is not model
    x = torch.rand(5, 1, 28, 28, requires_grad=True)
    out, ref = net(x), model(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0],
                               rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 attack steps: PyTorch's own kernels
        y = net(x)
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_fold_forward_leaves_other_models_alone():
    from torch import nn
    wide = nn.Sequential(nn.Conv2d(8, 4, 3), nn.ReLU())
    assert conv.fold_forward(wide) is wide
    class Net(nn.Module):
        def forward(self, x):
            return x
    other = Net()
    assert conv.fold_forward(other) is other
