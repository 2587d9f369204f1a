"""Fast-training recipe terms: Shi et al.'s warm-up regularisers and MTL-IBP's adversarial term."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctxbudget.bounds import Bounder, robust_cross_entropy
from ctxbudget.budgets import LearnedBudget, UniformBudget, input_box
from ctxbudget.config import load_config
from ctxbudget.errors import UserError
from ctxbudget.models import BudgetGenerator, Normalize, get_model
from ctxbudget.train.adversarial import adversarial_point, pgd_offsets
from ctxbudget.train.objective import Objective
from ctxbudget.train.regularizers import warmup_regularizers
from ctxbudget.train.schedules import RampSchedule, warmup_weight


# ------------------------------------------------------------------ warm-up regularisers
def _hand_net(normalize: bool) -> nn.Sequential:
    """Linear(2,3) → ReLU → Linear(3,2) → ReLU → Linear(2,1) with the weights of the worked example
    below; ``normalize`` puts Normalize(std 0.5) in front and halves the first weights (same
    pre-activation bounds, input radii twice as large)."""
    l1, l2, l3 = nn.Linear(2, 3), nn.Linear(3, 2), nn.Linear(2, 1)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0], [1.0, 1.0]]) * (0.5 if normalize else 1.0))
        l1.bias.copy_(torch.tensor([0.0, 0.5, -1.0]))
        l2.weight.copy_(torch.tensor([[2.0, 0.0, 1.0], [-1.0, 2.0, 0.0]]))
        l2.bias.copy_(torch.tensor([-0.5, 0.0]))
    layers = [l1, nn.ReLU(), l2, nn.ReLU(), l3]
    if normalize:
        layers.insert(0, Normalize([0.0, 0.0], [0.5, 0.5]))
    return nn.Sequential(*layers).double()


def test_warmup_regularizers_on_a_hand_computed_example():
    # box: centre (0.5, 0.2), radius 0.1 per input (so mean Δ0 = 0.1)
    xl = torch.tensor([[0.4, 0.1]], dtype=torch.float64)
    xu = torch.tensor([[0.6, 0.3]], dtype=torch.float64)
    # layer 1: centres W1·c + b1 = (0.5, 0.1, −0.3), radii |W1|·r = (0.1, 0.2, 0.2)
    #   l = (0.4, −0.1, −0.5), u = (0.6, 0.3, −0.1): neuron 1 active, neuron 3 inactive
    #   tightness: Δ0/mean Δ1 = 0.1/(0.5/3) = 0.6;   mean ratio 0.5/0.3 → min(5/3, 3/5) = 0.6
    #   variance ratio: c̄ = 0.1, (0.5 − 0.1)² / (−0.3 − 0.1)² = 1
    # after ReLU: [0.4, 0.6], [0, 0.3], [0, 0] → centres (0.5, 0.15, 0), radii (0.1, 0.15, 0)
    # layer 2: centres (1.0 + 0 − 0.5, −0.5 + 0.3) = (0.5, −0.2), radii (0.2, 0.1 + 0.3) = (0.2, 0.4)
    #   l = (0.3, −0.6), u = (0.7, 0.2): one active neuron, no inactive one → both ratios 0
    #   tightness: 0.1/0.3 = 1/3
    tol = 0.8
    tight = (max(tol - 0.6, 0) + max(tol - 1 / 3, 0)) / tol / 2
    balance = ((max(tol - 0.6, 0) + max(tol - 1.0, 0)) / tol + (tol + tol) / tol) / 2
    lt, lr = warmup_regularizers(Bounder(_hand_net(False), xl, xu), tol)
    assert lt.item() == pytest.approx(tight, abs=1e-12) and tight == pytest.approx(0.416667, abs=1e-6)
    assert lr.item() == pytest.approx(balance, abs=1e-12) and balance == pytest.approx(1.125)
    # at the paper's τ = 0.5 layer 1 is within tolerance on both counts
    lt, lr = warmup_regularizers(Bounder(_hand_net(False), xl, xu), 0.5)
    assert lt.item() == pytest.approx((0.5 - 1 / 3) / 0.5 / 2) and lr.item() == pytest.approx(1.0)
    # Δ0 is measured after Normalize: input radii 0.2, same pre-activation bounds
    lt, lr = warmup_regularizers(Bounder(_hand_net(True), xl, xu), tol)
    assert lt.item() == pytest.approx((max(tol - 0.2 / (0.5 / 3), 0) + (tol - 0.2 / 0.3)) / tol / 2)
    assert lr.item() == pytest.approx(balance)


def test_relu_balance_skips_layers_without_stable_neurons_and_has_finite_gradients():
    net = nn.Sequential(nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        net[0].bias.fill_(-0.5)
    x = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    r = torch.full_like(x, 0.1, requires_grad=True)
    lt, lr = warmup_regularizers(Bounder(net, x - r, x + r), 0.5)   # the neuron is unstable: 0/0 ratios
    assert lr.item() == 0.0 and lt.item() == 0.0                       # and Δ1 = Δ0
    # a one-sided layer (layer 2 of the worked example: ratios 0) gives a finite, non-zero gradient
    # (the authors' min(r, 1/r) form computes inf·0 = NaN there)
    c = torch.tensor([[0.5, 0.2]], dtype=torch.float64, requires_grad=True)
    _, lr = warmup_regularizers(Bounder(_hand_net(False), c - 0.1, c + 0.1), 0.8)
    (g,) = torch.autograd.grad(lr, c)
    assert torch.isfinite(g).all() and g.abs().sum() > 0     # layer 1's mean ratio 0.6 < τ moves with c


def test_warmup_weight_follows_the_volume_ramp():
    ramp = RampSchedule("linear", start=2, length=4, steps_per_epoch=10)
    assert [warmup_weight(ramp(s), 0.5) for s in (10, 30, 50, 90)] == [0.5, 0.25, 0.0, 0.0]


# ------------------------------------------------------------------ the objective
SHAPE = (1, 12, 12)


def _setup(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    net = get_model("dm-small-bn", SHAPE, 10).train()
    if kind == "learned":
        threat = LearnedBudget(BudgetGenerator(SHAPE), 0.0, 0.5, 2.0)
    else:
        threat = UniformBudget(0.0)
    x = torch.rand(8, *SHAPE)
    x[:, :, :3] = 0.0                                   # clipped pixels
    return net, threat, x, torch.arange(8) % 10


def _generator_grad(obj: Objective, x, y, **kw) -> float:
    obj.zero_grad(set_to_none=True)
    loss, _ = obj(x, y, 0.1, beta=0.0, method="ibp", **kw)
    loss.backward()
    return sum(float(p.grad.abs().sum()) for p in obj.threat.parameters() if p.grad is not None)


def test_gradient_reaches_the_generator_through_every_term():
    net, threat, x, y = _setup("learned")
    # each term alone (the others weighted 0 stay in the graph but contribute nothing)
    assert _generator_grad(Objective(net, threat), x, y, kappa=1.0) == 0.0         # natural only: none
    assert _generator_grad(Objective(net, threat), x, y, kappa=1.0, warmup_weight=1.0) > 0   # regularisers
    assert _generator_grad(Objective(net, threat, mtl_alpha=1.0), x, y, kappa=0.0) > 0       # bound
    assert _generator_grad(Objective(net, threat, mtl_alpha=0.0, attack_steps=2, attack_step_size=0.5),
                           x, y, kappa=0.0) > 0                                               # adversarial


def test_defaults_are_todays_objective_and_terms_add_up():
    net, threat, x, y = _setup("uniform")
    lo, hi = input_box(x, torch.full_like(x, 0.1))
    expect = robust_cross_entropy(net, lo, hi, y, method="ibp", beta=0.0, x=x)
    loss, stats = Objective(net, threat)(x, y, 0.1, kappa=0.0, beta=0.0, method="ibp")
    assert torch.allclose(loss, expect.mean()) and stats.warmup_reg == 0 and stats.adversarial == 0
    # the regulariser is added with its weight
    tight, balance = warmup_regularizers(Bounder(net, lo, hi, x), 0.5)
    loss, stats = Objective(net, threat)(x, y, 0.1, kappa=0.0, beta=0.0, method="ibp", warmup_weight=0.3)
    assert torch.allclose(loss, expect.mean() + 0.3 * (tight + balance))
    assert torch.allclose(stats.warmup_reg, 0.3 * (tight + balance) * 8)
    # MTL-IBP: α·bound + (1 − α)·adversarial CE at the PGD point (same random start: same seed)
    torch.manual_seed(5)
    loss, stats = Objective(net, threat, mtl_alpha=0.25, attack_steps=3, attack_step_size=0.5)(
        x, y, 0.1, kappa=0.5, beta=0.0, method="ibp")
    torch.manual_seed(5)
    bd = Bounder(net, lo, hi, x)
    t = pgd_offsets(bd.forward, x, torch.full_like(x, 0.1), y, 3, 0.5)
    adv = F.cross_entropy(bd.forward(adversarial_point(x, torch.full_like(x, 0.1), t)), y, reduction="none")
    natural = F.cross_entropy(net(x), y, reduction="none")
    assert torch.allclose(loss, (0.5 * natural + 0.5 * (0.25 * expect + 0.75 * adv)).mean(), atol=1e-6)
    assert torch.allclose(stats.adversarial, adv.sum())


def test_batchnorm_statistics_come_from_the_clean_batch_only():
    net, threat, x, y = _setup("learned")
    bn = net[2]
    obj = Objective(net, threat, mtl_alpha=0.5, attack_steps=3, attack_step_size=0.5)
    obj(x, y, 0.1, kappa=0.0, beta=0.0, method="ibp", warmup_weight=0.5)
    assert int(bn.num_batches_tracked) == 1                  # one update per step: the clean forward pass
    ref = get_model("dm-small-bn", SHAPE, 10)
    ref.load_state_dict({k: v for k, v in net.state_dict().items() if "running" not in k and "tracked" not in k},
                        strict=False)
    ref.train()(x)
    assert torch.allclose(bn.running_mean, ref[2].running_mean) and torch.allclose(bn.running_var, ref[2].running_var)


# ------------------------------------------------------------------ PGD on the per-pixel box
def test_pgd_stays_inside_the_clipped_per_pixel_box():
    net, _, x, y = _setup("uniform", seed=1)
    x[:, :, -2:] = 1.0                                              # clipped at the top as well
    eps = 0.02 + 0.3 * torch.rand(x.shape)                          # per-pixel budgets
    lo, hi = input_box(x, eps)
    bd = Bounder(net, lo, hi, x)
    for steps, size in ((1, 10.0), (4, 0.3), (7, 2.0)):
        t = pgd_offsets(bd.forward, x, eps, y, steps, size)
        assert t.abs().max() <= 1.0 and not t.requires_grad
        xa = adversarial_point(x, eps, t)
        assert bool((xa >= lo).all()) and bool((xa <= hi).all())
        assert any(p.grad is None for p in net.parameters())       # the attack left .grad alone


def test_one_large_pgd_step_finds_the_worst_corner_of_a_linear_model():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x = torch.rand(5, 1, 4, 4)
    x[:, :, 0] = 1.0
    eps = 0.05 + 0.2 * torch.rand(x.shape)
    y = torch.tensor([0, 1, 0, 1, 1])
    lo, hi = input_box(x, eps)
    t = pgd_offsets(net, x, eps, y, steps=1, step_size=10.0)
    # CE of 2 classes grows as the margin w_y − w_j falls: the maximiser is lo where it is positive, hi elsewhere
    w = net[1].weight.detach()
    d = (w[y] - w[1 - y]).view_as(x)
    worst = torch.where(d > 0, lo, hi)
    assert torch.equal(adversarial_point(x, eps, t), worst)


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("item,match", [
    ("loss.warmup_reg=-1", "loss.warmup_reg"), ("loss.warmup_tol=0", "loss.warmup_tol"),
    ("loss.mtl_alpha=1.5", "loss.mtl_alpha"), ("loss.attack_steps=0", "loss.attack_steps"),
    ("loss.attack_step_size=0", "loss.attack_step_size"), ("loss.attack_step_size=.inf", "loss.attack_step_size"),
])
def test_bad_recipe_values_are_one_line_errors(item, match):
    with pytest.raises(UserError, match=match):
        load_config(None, [item])


def test_recipe_defaults_are_off():
    loss = load_config(None).loss
    assert loss.warmup_reg == 0.0 and loss.mtl_alpha is None


# ------------------------------------------------------------------ the trainer
def test_trainer_with_every_recipe_option_resumes_exactly(tmp_path, interrupt_at_epoch):
    from ctxbudget.train import resume, train

    cfg = load_config(None, ["data.name=mnist-sample", "data.train_limit=80", "data.test_limit=40",
                             "optim.batch_size=40", "optim.epochs=3", "schedule.start=2", "schedule.length=2",
                             "model.name=dm-small-bn", "model.init=ibp", "loss.method=ibp", "loss.warmup_reg=0.5",
                             "loss.mtl_alpha=0.5", "loss.attack_steps=2", "loss.attack_step_size=0.5",
                             "optim.grad_clip=10", "budget.eps0=0.1", "num_threads=1"])
    straight = train(cfg, tmp_path / "straight", device="cpu", progress=False)
    with interrupt_at_epoch(3):
        train(cfg, tmp_path / "cut", device="cpu", progress=False)
    resumed = resume(tmp_path / "cut", device="cpu", progress=False)
    for a, b in ((straight.classifier, resumed.classifier), (straight.threat, resumed.threat)):
        sa, sb = a.state_dict(), b.state_dict()      # weights and BatchNorm running statistics
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any("running_mean" in k for k in straight.classifier.state_dict())


# ------------------------------------------------------------------ packaged recipe and experiment
def test_fast_configs_and_experiment():
    from ctxbudget.reproduce import EXPERIMENTS
    from ctxbudget.reproduce.experiments import schedule_overrides
    from ctxbudget.reproduce.runner import config_path

    learned, uniform = load_config("mnist-learned-0.4-fast"), load_config("mnist-uniform-0.4-fast")
    for cfg in (learned, uniform):
        assert (cfg.model.name, cfg.model.init, cfg.loss.method) == ("dm-small-bn", "ibp", "ibp")
        assert cfg.loss.warmup_reg == 0.5 and cfg.optim.grad_clip == 10.0 and cfg.loss.mtl_alpha is None
        assert (cfg.optim.epochs, cfg.schedule.start, cfg.schedule.length) == (70, 2, 20)
        assert cfg.budget.eps0 == 0.4
    a, b = learned.to_dict(), uniform.to_dict()
    a["budget"]["kind"] = "uniform"
    a["description"] = b["description"]
    assert a == b                                           # the pair differs only in the kind of budget
    exp = EXPERIMENTS["fast"]
    assert [r.config for r in exp.rows] == ["mnist-uniform-0.4-fast", "mnist-learned-0.4-fast", "mnist-learned-0.4-fast"]
    assert exp.rows[2].overrides == ("budget.eps0=0.8",) and exp.rows[2].paper == EXPERIMENTS["table1"].rows[4].paper
    assert exp.rows[1].paper == EXPERIMENTS["table1"].rows[1].paper
    for row in exp.rows:                                    # the cpu schedule keeps the recipe's classifier
        kind = "uniform" if "uniform" in row.name else "learned"
        cfg = load_config(config_path(row.config), schedule_overrides(exp, row, "cpu", kind))
        assert cfg.model.name == "dm-small-bn" and cfg.loss.warmup_reg == 0.5 and cfg.optim.epochs == 20
