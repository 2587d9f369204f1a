"""The fast kernels against PyTorch's own, one thread: each pair alternated, median of ``--repeats`` calls.

    PYTHONPATH=src python benchmarks/bench_kernels.py [--repeats 30] [--threads 1]

* the first layer's transposed convolution (a CROWN pass's rows pushed back; the input gradient of an
  IBP pass or an attack step): ``F.conv_transpose2d`` vs ``bounds.conv.fold_transpose`` (one matrix
  product and ``fold``), DM-small's first layer on MNIST (1→16, 4×4, stride 2, batch 256) and
  CIFAR-10 (3→16, batch 128), and its second layer (16→32, where oneDNN wins and stays in use);
* the context head's output convolution (1×1, 16→1 at 28×28, batch 256, forward + backward, float32 and
  under bf16 autocast): ``nn.Conv2d`` vs ``models.generator.pointwise_conv``;
* bilinear upsampling (forward + backward, one channel, batch 256): ``F.interpolate`` vs
  ``models.generator.upsample_bilinear``.

Prints a Markdown table (ms per call, PyTorch / ours) and the largest difference of the values.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ctxbudget.bounds.conv import fold_transpose
from ctxbudget.models.generator import pointwise_conv, upsample_bilinear
from ctxbudget.runtime import tune_allocator


def timed_pair(a: Callable[[], torch.Tensor], b: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float, float]:
    """Median ms of ``a`` and ``b`` (alternated after 3 warm-up calls each) and max |a() − b()|."""
    for _ in range(3):
        a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for f, ts in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    diff = float((a().float() - b().float()).abs().max())
    return 1000 * sorted(ta)[repeats // 2], 1000 * sorted(tb)[repeats // 2], diff


def transposed(batch: int, ci: int, co: int, size: int, k: int, stride: int):
    w = torch.randn(co, ci, k, k)
    out = (size - k) // stride + 1
    A = torch.randn(batch, co, out, out)
    return (lambda: F.conv_transpose2d(A, w, None, stride),
            lambda: fold_transpose(A, w, (stride, stride), (0, 0), (1, 1), (size, size)))


def fwd_bwd(f: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, bf16: bool) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        x = x0.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = f(x)
        y.float().sum().backward()
        return y.detach()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, shape in (("transposed conv, MNIST first layer (1→16, 4×4/2, batch 256)", (256, 1, 16, 28, 4, 2)),
                        ("transposed conv, CIFAR-10 first layer (3→16, 4×4/2, batch 128)", (128, 3, 16, 32, 4, 2)),
                        ("transposed conv, second layer (16→32, 4×4/1, batch 256; not folded)", (256, 16, 32, 13, 4, 1))):
        rows.append((name, *timed_pair(*transposed(*shape), args.repeats)))
    conv = nn.Conv2d(16, 1, 1)
    feats = torch.randn(256, 16, 28, 28)
    for bf16 in (False, True):
        rows.append((f"1×1 conv 16→1 at 28×28, batch 256, fwd+bwd{', bf16 autocast' if bf16 else ''}",
                     *timed_pair(fwd_bwd(conv, feats, bf16), fwd_bwd(lambda x: pointwise_conv(conv, x), feats, bf16),
                                 args.repeats)))
    for src, dst in ((4, 28), (14, 28), (4, 14)):
        x0 = torch.randn(256, 1, src, src)
        size = (dst, dst)
        rows.append((f"bilinear {src}×{src} → {dst}×{dst}, batch 256, fwd+bwd",
                     *timed_pair(fwd_bwd(lambda x, size=size: F.interpolate(x, size=size, mode="bilinear",
                                                                            align_corners=False), x0, False),
                                 fwd_bwd(lambda x, size=size: upsample_bilinear(x, size), x0, False), args.repeats)))
    print(f"| kernel ({args.threads} thread(s), median of {args.repeats}) | PyTorch (ms) | ours (ms) "
          "| PyTorch / ours | max diff |")
    print("|---|---|---|---|---|")
    for name, a, b, d in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f} | {d:.1e} |")


if __name__ == "__main__":
    main()
