import sys, torch
from ctxbudget.run import load_run
from ctxbudget.data import get_dataset
from ctxbudget.budgets import input_box
from ctxbudget.bounds import robust_cross_entropy
torch.set_num_threads(1)
run = load_run(sys.argv[1])
ds = get_dataset("watermarked-mnist", "test", root="../shared/data")
x, y, reg = ds.images[:500], ds.labels[:500], ds.regions[:500]
for e0 in (0.05, 0.1, 0.2):
    eps = torch.full_like(x, e0, requires_grad=True)
    lo, hi = input_box(x, eps)
    for method in ("ibp", "crown-ibp"):
        L = robust_cross_entropy(run.classifier, lo, hi, y, method=method, fusion=True, beta=1.0)
        g, = torch.autograd.grad(L.sum(), eps, retain_graph=True)
        lit = reg & (x > 0.05); out = ~reg; stroke = x > 0.5; box_dark = reg & (x <= 0.05)
        margin_empty = out & (x == 0)
        print(f"eps0 {e0} {method}: loss {L.mean():.3f} | dL/deps lit wm {g[lit].mean():.4g}  wm-box dark {g[box_dark].mean():.4g}  outside box {g[out].mean():.4g}  stroke {g[stroke].mean():.4g}  empty outside {g[margin_empty].mean():.4g}")
