"""Bound soundness on a device (CUDA), against sampled points, PGD and float64 CPU bounds.

    PYTHONPATH=src python benchmarks/gpu_soundness.py --device cuda     # exit 1 on any violation
    PYTHONPATH=src python benchmarks/gpu_soundness.py --device cpu      # the same check on the CPU

For DM-small on MNIST-shaped inputs (random weights, and after 30 natural Adam steps) and a learned-
budget box per example (context head, ε0 = 0.3): the margin lower bounds of every method computed
on the device in float32 must be (1) ≤ the margins of 256 sampled points and of a PGD attack in the
box, and (2) within a rounding tolerance of the same bounds computed in float64 on the CPU (not
for α-CROWN, whose slope optimisation may end elsewhere in float32). Prints
one Markdown row per (network, method): worst slack to samples/PGD and worst float32 − float64 gap.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from ctxbudget.bounds import compute_bounds, margin_spec
from ctxbudget.budgets import LearnedBudget, input_box
from ctxbudget.models import BudgetGenerator, get_model

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


def margins(net: nn.Module, x: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Margins C·f(x): x P×B×…, C B×K×classes → P×B×K."""
    p, b = x.shape[:2]
    logits = net(x.reshape(p * b, *x.shape[2:])).view(p, b, -1)
    return torch.einsum("bkc,pbc->pbk", C, logits)


def pgd_min(net: nn.Module, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, steps: int = 30) -> torch.Tensor:
    """Smallest margin (B×K) PGD finds in the box, per row of C."""
    x = ((lo + hi) / 2).detach().unsqueeze(0).expand(C.shape[1], *lo.shape).clone()   # K×B×…
    x.requires_grad_(True)
    step = (hi - lo) / 8
    for _ in range(steps):
        m = margins(net, x, C)                                              # K×B×K
        diag = m.diagonal(dim1=0, dim2=2)                                   # B×K: row k attacked by copy k
        grad, = torch.autograd.grad(diag.sum(), x)
        with torch.no_grad():
            x -= step.unsqueeze(0) * grad.sign()
            x.copy_(torch.maximum(torch.minimum(x, hi.unsqueeze(0)), lo.unsqueeze(0)))
    with torch.no_grad():
        return margins(net, x, C).diagonal(dim1=0, dim2=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all four)")
    args = ap.parse_args()
    device = torch.device(args.device)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        ap.error(f"--methods must name some of {', '.join(METHODS)}")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    gen = LearnedBudget(BudgetGenerator((1, 28, 28)), 0.3, 0.5, 2.0).eval()
    with torch.no_grad():
        lo, hi = input_box(x, gen(x) * 0.1)           # small boxes: some examples certify
    C = margin_spec(y, 10)
    net = get_model("dm-small", (1, 28, 28), 10)
    nets = {"random": net}
    trained = get_model("dm-small", (1, 28, 28), 10)
    opt = torch.optim.Adam(trained.parameters(), lr=1e-3)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(trained(x), y).backward()
        opt.step()
    nets["trained"] = trained
    bad = 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}")
    print("| network | method | min (sample/PGD margin − bound) | max |float32 device − float64 CPU| | verdict |")
    print("|---|---|---|---|---|")
    for net_name, model in nets.items():
        model = model.eval()
        ref64 = model.double()
        lo64, hi64, C64 = lo.double(), hi.double(), C.double()
        refs = {m: compute_bounds(ref64, lo64, hi64, method=m, C=C64, bound_upper=False)[0].detach() for m in methods}
        dev = model.float().to(device)
        lo_d, hi_d, C_d = lo.to(device), hi.to(device), C.to(device)
        with torch.no_grad():
            t = torch.rand(256, *lo.shape, device=device)
            sampled = margins(dev, lo_d + t * (hi_d - lo_d), C_d).amin(0)          # B×K
        attacked = pgd_min(dev, lo_d, hi_d, C_d)
        empirical = torch.minimum(sampled, attacked).cpu().double()
        for m in methods:
            bound = compute_bounds(dev, lo_d, hi_d, method=m, C=C_d, bound_upper=False)[0].detach().cpu().double()
            slack = float((empirical - bound).min())
            gap = float((bound - refs[m]).abs().max())
            tol = 1e-4 * (1 + float(refs[m].abs().max()))
            # α-CROWN optimises its slopes: float32 and float64 runs may end at different (sound) bounds
            ok = slack >= -tol and (gap <= tol or m == "alpha-crown")
            bad += not ok
            print(f"| {net_name} | {m} | {slack:.3g} | {gap:.3g} | {'ok' if ok else 'VIOLATION'} |")
        model.cpu()
    print("all bounds sound" if not bad else f"{bad} violation(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
