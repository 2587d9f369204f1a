"""Re-decide 'verified' for every results row with the final rule (bounds.verify.certify) and compare
with the plain '> 0' rule the evaluation of commit 52ad172 used.

    python results/diagnostics/rule_recheck.py RESULTS_DIR OUT.json   # RESULTS_DIR holds the runs' final.pt
"""
import glob, json, sys, torch
from ctxbudget.run import load_run
from ctxbudget.evaluate.evaluate import load_split
from ctxbudget.budgets import input_box
from ctxbudget.bounds import compute_bounds, margin_spec
from ctxbudget.bounds.verify import certify
torch.set_num_threads(2)
out = {}
root = sys.argv[1].rstrip("/") + "/"
for d in sorted(glob.glob(root + "*/*/final.pt")):
    d = d.rsplit("/", 1)[0]
    run = load_run(d)
    ds = load_split(run, "test")
    k = run.classifier[-1].out_features
    diff = n_ok_old = n_ok_new = 0
    for s in range(0, len(ds.images), 1000):
        x, y = ds.images[s:s+1000], ds.labels[s:s+1000]
        with torch.no_grad():
            lo, hi = input_box(x, run.threat(x))
            correct = run.classifier(x).argmax(1) == y
            for m in ("ibp", "crown-ibp"):
                lb = compute_bounds(run.classifier, lo, hi, m, C=margin_spec(y, k), bound_upper=False)[0]
                old = correct & (lb.min(1).values > 0)
                new = certify(run.classifier, lo, hi, y, m, lower=lb, correct=correct, x=x).verified
                diff += int((old != new).sum()); n_ok_old += int(old.sum()); n_ok_new += int(new.sum())
    out[d.replace(root, "")] = {"verified_old_rule": n_ok_old, "verified_new_rule": n_ok_new, "decisions_that_differ": diff}
    print(d, out[d.replace(root, "")], flush=True)
json.dump(out, open(sys.argv[2], "w"), indent=1)
