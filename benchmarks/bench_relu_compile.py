"""Micro-benchmark: eager vs ``torch.compile`` of the ReLU back-substitution
rule (the arithmetic of ``bounds/relu.py``'s ``_ReluBackward.forward``) on DM-small's first-ReLU
shape, batch 128, S = 1 (loss fusion) and 9 (margins) rows; one thread; alternating calls, median
of 15; checks that both give the same values. Usage: ``python benchmarks/bench_relu_compile.py``."""
import statistics
import time

import torch

torch.set_num_threads(1)


def rule(A, dl, du, bu):
    B, S = A.shape[:2]
    neg = A.clamp(max=0.0)
    new_A = torch.mul(A.clamp(min=0.0), dl).addcmul_(neg, du)
    bias = torch.bmm(neg.reshape(B, S, -1), bu.reshape(B, -1, 1)).squeeze(-1)
    return new_A, bias


def rule_c(A, dl, du, bu):
    B, S = A.shape[:2]
    neg = A.clamp(max=0.0)
    new_A = A.clamp(min=0.0) * dl + neg * du
    bias = (neg * bu).flatten(2).sum(-1)
    return new_A, bias


comp = torch.compile(rule_c, dynamic=False)
for S in (1, 9):
    A = torch.randn(128, S, 16, 13, 13)
    dl = torch.rand(128, 1, 16, 13, 13).round()
    du = torch.rand(128, 1, 16, 13, 13)
    bu = torch.rand(128, 1, 16, 13, 13)
    t = time.perf_counter()
    r1 = comp(A, dl, du, bu)
    tc = time.perf_counter() - t
    r0 = rule(A, dl, du, bu)
    assert torch.allclose(r0[0], r1[0]) and torch.allclose(r0[1], r1[1], atol=1e-4)
    e, c = [], []
    for _ in range(15):
        t = time.perf_counter()
        rule(A, dl, du, bu)
        e.append(time.perf_counter() - t)
        t = time.perf_counter()
        comp(A, dl, du, bu)
        c.append(time.perf_counter() - t)
    me, mc = statistics.median(e), statistics.median(c)
    print(f"S={S}: first compiled call {tc:.1f} s; eager {me * 1e3:.2f} ms, compiled {mc * 1e3:.2f} ms, "
          f"ratio {me / mc:.2f}x")
