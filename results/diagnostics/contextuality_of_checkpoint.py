import sys, torch
sys.argv.pop(0)
from ctxbudget.run import load_run
from ctxbudget.data import get_dataset
from ctxbudget.contextuality import budget_contextuality
from ctxbudget import viz
torch.set_num_threads(1)
run = load_run(sys.argv[0], checkpoint="last")
ds = get_dataset(run.dataset, "test", root="/work/shared/data")
n = 500
c = budget_contextuality(run.threat, ds.images[:n], dataset_name=run.dataset, regions=None if ds.regions is None else ds.regions[:n])
print({k: (v if not isinstance(v, dict) else round(v["ratio"], 3)) for k, v in c.items()})
with torch.no_grad():
    eps = run.threat(ds.images[:10])
viz.save_figure(viz.budget_grid(ds.images[:10], eps, run.limits()[1]), sys.argv[1], formats=("png",))
