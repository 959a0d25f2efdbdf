"""Growing a bank: grow_ changes no output at insertion, leaves the other models' training bitwise
unchanged, continues like a naive Adam loop whose new units start with zero state; the growth
rule's scores equal autograd's float64 gradient, its selection obeys the price and the bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from widthlab.engine.optim import BankOptimizer
from widthlab.errors import UsageError
from widthlab.nn.bank import MLPBank, ModelSpec
from widthlab.nn.gated import SparsifierGate
from widthlab.nn.growth import (
    BenefitRule,
    GrowingGate,
    outgoing_gradient,
    output_error,
    output_weight,
    refit_fraction,
    removal_costs,
)

D = 20
SPECS = [ModelSpec((8,), seed=0), ModelSpec((16,), seed=1, lr=3e-3),
         ModelSpec((8,), seed=2, weight_decay=1e-3), ModelSpec((6, 4), seed=3)]


pytestmark = pytest.mark.usefixtures("one_thread")


def batches(n, batch=32, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield torch.randn(batch, d, generator=g), torch.randint(0, 10, (batch,), generator=g)


def bank_of(specs=SPECS, chunk=7, gate=True) -> tuple[MLPBank, BankOptimizer]:
    bank = MLPBank(specs, D, 10, chunk=chunk)
    if gate:
        bank.add_modifier(GrowingGate(1e-3, lr=1e-2))
    return bank, BankOptimizer(bank, lr=1e-3)


def rows(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g) / math.sqrt(D), torch.randn(n, generator=g) * 0.1


def test_grow_keeps_every_output_bitwise_and_matches_a_fresh_bank():
    bank, _ = bank_of()
    x, _ = next(batches(1))
    with torch.no_grad():
        before = bank(x)
    inits = [rows(5, 1), rows(3, 2)]
    done = bank.grow_([0, 3], [5, 3], init=inits)
    assert bank.archs == [(13,), (16,), (8,), (9, 4)]
    assert [a.tolist() for a in done.added] == [[8, 9, 10, 11, 12], [], [], [6, 7, 8]]
    assert done.n_added == 8 and len(bank.groups) == 4  # the two (8,) models are apart now
    with torch.no_grad():
        torch.testing.assert_close(bank(x), before, rtol=0, atol=0)
        for m, (w, b) in zip((0, 3), inits, strict=True):
            mlp = bank.export(m)
            torch.testing.assert_close(mlp.layers[0].weight[-len(w):], w, rtol=0, atol=0)
            torch.testing.assert_close(mlp.layers[0].bias[-len(b):], b, rtol=0, atol=0)
            assert not mlp.layers[1].weight[:, -len(w):].any()  # zero outgoing weights
            torch.testing.assert_close(mlp(x), before[:, m], rtol=1e-5, atol=1e-6)  # other path
    gate = bank.modifiers[0]
    assert gate.gate.shape == gate.mask.shape == (bank.n_hidden,)
    assert bool((gate.gate == 1).all()) and bool((gate.mask == 1).all())
    layout = bank.layout_state()
    fresh = MLPBank(SPECS, D, 10, chunk=7, widths=layout["widths"], grown=True)
    fresh.add_modifier(GrowingGate(1e-3, lr=1e-2))
    fresh.load_state_dict(bank.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), bank(x), rtol=0, atol=0)
    with pytest.raises(UsageError, match="grown=True"):
        MLPBank(SPECS, D, 10, widths=layout["widths"])


def test_grown_then_shrunk_back_to_spec_widths_still_records_its_layout():
    bank, _ = bank_of(gate=True)
    assert bank.layout_state() is None
    bank.grow_(1, 2)
    keep = torch.ones(bank.n_hidden, dtype=torch.bool)
    a, _ = bank.slices[1]
    keep[a:a + 2] = False  # two original units go: width 16 again, other ids
    bank.shrink_(keep)
    assert bank.archs[1] == (16,)
    layout = bank.layout_state()
    a, b = bank.slices[1]
    assert layout["unit_ids"][a:b].tolist() == list(range(2, 18))


def test_other_models_train_bitwise_identically_when_one_grows():
    """Same batches; one bank grows model 0 at step 10 and model 2 at step 20, the other
    never: every parameter and Adam moment of models 1 and 3 are equal bit for bit."""
    def run(grow: bool):
        bank, opt = bank_of()
        for step, (x, y) in enumerate(batches(40)):
            if grow and step in (10, 20):
                done = bank.grow_(0 if step == 10 else 2, 4,
                                  generator=torch.Generator().manual_seed(step))
                opt = opt.grown(bank, done)
            bank.zero_grad()
            bank.loss(x, y).sum().backward()
            opt.step()
        return bank, opt

    (_, opt_a), (b, opt_b) = run(False), run(True)
    assert b.archs[0] == (12,) and b.archs[2] == (12,)
    for m in (1, 3):
        for ta, tb in zip(opt_a.model_tensors[m], opt_b.model_tensors[m], strict=True):
            assert torch.equal(ta, tb)
            sa, sb = opt_a.opt.state[ta], opt_b.opt.state[tb]
            assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_after_a_grow_equals_a_naive_adam_loop_with_zero_state_for_new_units():
    """Reference: plain float64 tensors and torch.optim.Adam; at the grow step the layers get
    the new rows/columns and their exp_avg/exp_avg_sq entries are zero, step counts kept."""
    spec = ModelSpec((6,), seed=4)
    bank, opt = bank_of([spec, ModelSpec((5,), seed=5)], chunk=4, gate=False)
    mlp = bank.export(0).double()
    params = [p.detach().clone().requires_grad_(True) for p in mlp.parameters()]
    ref = torch.optim.Adam(params, lr=1e-3)
    new_w, new_b = rows(3, 7)
    for step, (x, y) in enumerate(batches(30)):
        if step == 12:
            done = bank.grow_(0, 3, init=(new_w, new_b))
            opt = opt.grown(bank, done)
            grown = [torch.cat([params[0].detach(), new_w.double()]),
                     torch.cat([params[1].detach(), new_b.double()]),
                     F.pad(params[2].detach(), (0, 3)), params[3].detach()]
            state = [ref.state[p] for p in params]
            params = [g.clone().requires_grad_(True) for g in grown]
            ref = torch.optim.Adam(params, lr=1e-3)
            pads = [(0, 0, 0, 3), (0, 3), (0, 3), (0, 0)]
            for p, s, pad in zip(params, state, pads, strict=True):
                ref.state[p] = {"step": s["step"].clone(),
                                "exp_avg": F.pad(s["exp_avg"], pad),
                                "exp_avg_sq": F.pad(s["exp_avg_sq"], pad)}
        bank.zero_grad()
        bank.loss(x, y).sum().backward()
        opt.step()
        ref.zero_grad()
        h = F.relu(x.double() @ params[0].t() + params[1])
        F.cross_entropy(h @ params[2].t() + params[3], y).backward()
        ref.step()
    for (name, view, _), p in zip(bank.model_params(0), params, strict=True):
        err = (view.double() - p.detach()).abs().max() / p.detach().abs().max()
        assert err < 2e-5, name


def test_growth_scores_equal_autograd_in_float64():
    """The predicted decrease of a candidate is out_lr * |dL/dv|_1 for its zero outgoing
    weights v: checked against autograd on each model with the candidate appended."""
    specs = [ModelSpec((7,), seed=0), ModelSpec((3,), seed=1)]
    bank = MLPBank(specs, D, 10)
    x, y = next(batches(1, batch=64, seed=3))
    w = torch.randn(2, 5, D, dtype=torch.float64) / math.sqrt(D)
    b = torch.randn(2, 5, dtype=torch.float64) * 0.1
    with torch.no_grad():
        got = outgoing_gradient(x.double(), output_error(bank, x, y).double(), w, b)
    for m in range(2):
        mlp = bank.export(m).double()
        w1 = mlp.layers[1].weight.detach()
        for k in range(5):
            v = torch.zeros(10, 1, dtype=torch.float64, requires_grad=True)
            h = F.relu(x.double() @ mlp.layers[0].weight.t() + mlp.layers[0].bias)
            a = F.relu(x.double() @ w[m, k] + b[m, k])[:, None]
            logits = h @ w1.t() + a @ v.t() + mlp.layers[1].bias
            (gv,) = torch.autograd.grad(F.cross_entropy(logits, y), v)
            torch.testing.assert_close(got[m, k], gv[:, 0], rtol=1e-5, atol=1e-7)


def test_the_noise_of_a_score_is_the_variance_of_a_mean_over_samples():
    """numpy float64: per-sample gradients delta_n * a_n, var(ddof=1) / N; on an error
    independent of the inputs (no real gradient) the debiased score averages 0, the raw one
    does not."""
    bank = MLPBank([ModelSpec((5,), seed=0)], D, 10)
    x, y = next(batches(1, batch=400, seed=8))
    delta = output_error(bank, x, y).double()
    w = torch.randn(1, 3, D, dtype=torch.float64) / math.sqrt(D)
    b = torch.zeros(1, 3, dtype=torch.float64)
    grad, noise = outgoing_gradient(x.double(), delta, w, b, noise=True)
    a = np.maximum(x.double().numpy() @ w[0].numpy().T, 0)  # (N, K)
    per = delta[:, 0].numpy()[:, None, :] * a[:, :, None]  # (N, K, C)
    np.testing.assert_allclose(grad[0].numpy(), per.mean(0), rtol=1e-10)
    np.testing.assert_allclose(noise[0].numpy(), per.var(0, ddof=1) / len(x), rtol=1e-10)
    g = torch.Generator().manual_seed(9)
    pure = torch.randn(400, 2000, 10, generator=g, dtype=torch.float64)  # 2000 draws, no x
    w = torch.randn(2000, 1, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    grad, noise = outgoing_gradient(x.double(), pure, w, torch.zeros(2000, 1).double(),
                                    noise=True)
    raw = grad.abs().sum(-1)
    clean = raw - math.sqrt(2 / math.pi) * noise.sqrt().sum(-1)
    assert abs(clean.mean()) < 3 * clean.std() / math.sqrt(2000) < raw.mean() / 10


def test_gradmax_directions_maximise_the_linearised_gradient():
    """The top right singular vector u of E[delta x^T] gives the largest |E[delta (u.x)]|
    of all unit directions: larger than 500 random ones, equal to the top singular value."""
    bank = MLPBank([ModelSpec((8,), seed=0)], D, 10)
    x, y = next(batches(1, batch=256, seed=4))
    delta = output_error(bank, x, y)[:, 0].double()  # (N, C)
    corr = delta.t() @ x.double() / len(x)  # (C, in)
    u = torch.linalg.svd(corr).Vh[0]
    best = (corr @ u).norm()
    rand = F.normalize(torch.randn(500, D, dtype=torch.float64), dim=1)
    assert best >= (rand @ corr.t()).norm(dim=1).max()
    np.testing.assert_allclose(best.item(), np.linalg.svd(corr.numpy())[1][0], rtol=1e-12)


@pytest.mark.parametrize("init", ["gradmax", "random", "split"])
def test_the_rule_obeys_the_price_the_bound_and_the_distance(init):
    bank = MLPBank([ModelSpec((8,), seed=0), ModelSpec((40,), seed=1)], D, 10)
    x, y = next(batches(1, batch=128, seed=5))
    free = GrowingGate(0.0, init=init, max_new=6, max_frac=0.5, max_cos=0.9)
    bank.add_modifier(free)
    plan = free.propose(bank, x, y, step=20)
    assert plan.models == [0, 1] and plan.counts == [4, 6]  # ceil(0.5 * 8), max_new
    for m, (w, _) in zip(plan.models, plan.init, strict=True):
        unit = F.normalize(w, dim=1)
        cos = unit @ unit.t() - 2 * torch.eye(len(w))
        assert cos.max() <= 0.9
        a, b = bank.slices[m]
        if init != "split":
            assert (unit @ F.normalize(bank.w0.detach()[a:b], dim=1).t()).max() <= 0.9
    again = free.propose(bank, x, y, step=20)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(plan.init, again.init, strict=True))
    assert plan.ids[0].tolist() == [8, 9, 10, 11]
    # the price: a unit is added iff out_lr * |G|_1 > lambda / horizon
    k = GrowingGate([1e9, 0.0], init=init, horizon=1.0)
    bank2 = MLPBank([ModelSpec((8,), seed=0), ModelSpec((40,), seed=1)], D, 10)
    bank2.add_modifier(k)
    assert k.propose(bank2, x, y, step=20).models == [1]
    assert k.propose(bank2, x, y, step=20, alive=[True, False]) is None


def test_growth_errors_name_the_fix():
    with pytest.raises(UsageError, match="unknown growth init"):
        GrowingGate(1e-3, init="magic")
    with pytest.raises(UsageError, match="every"):
        GrowingGate(1e-3, every=0)
    bank = MLPBank([ModelSpec((4,), seed=0)], D, 10)
    bank.add_modifier(SparsifierGate(1e-3))
    with pytest.raises(UsageError, match="cannot gain units"):
        bank.grow_(0, 2)
    deep = MLPBank([ModelSpec((4, 3), seed=0)], D, 10)
    deep.add_modifier(GrowingGate(1e-3))
    x, y = next(batches(1))
    with pytest.raises(UsageError, match="one-hidden-layer"):
        deep.modifiers[0].propose(deep, x, y, step=0)
    with pytest.raises(UsageError, match="a weight"):
        deep.grow_(0, 2, init=rows(3, 0))
    with pytest.raises(UsageError, match="distinct model indices"):
        deep.grow_([0, 0], 1)


def test_new_units_are_charged_after_their_grace_period():
    """The penalty equals lambda * sum(relu(g)) over the units born at least `grace` steps
    ago (a naive per-unit loop), and all units once every grace period is over."""
    bank = MLPBank([ModelSpec((3,), seed=0), ModelSpec((2,), seed=1)], D, 10)
    mod = GrowingGate([1e-2, 3e-2], grace=5)
    bank.add_modifier(mod)
    with torch.no_grad():
        mod.gate.copy_(torch.tensor([0.5, 2.0, -1.0, 1.5, 0.25]))
    mod.before_step(10)
    done = bank.grow_([0, 1], [2, 1])  # born at step 10: gate 1
    mod.before_step(12)
    bank.grow_(1, 1)  # born at step 12
    assert [a.tolist() for a in done.added] == [[3, 4], [2]]

    def naive(step):
        out = [0.0, 0.0]
        for i, (g, born) in enumerate(zip(mod.gate.tolist(), mod.born.tolist(), strict=True)):
            m = int(mod.unit_model[i])
            if step - born >= 5:
                out[m] += [1e-2, 3e-2][m] * max(g, 0.0)
        return torch.tensor(out)

    for step, charged in ((12, 5), (15, 8), (17, 9), (30, 9)):
        mod.before_step(step)
        torch.testing.assert_close(mod.penalty(), naive(step))
        assert sum(step - b >= 5 for b in mod.born.tolist()) == charged


def test_no_growth_when_the_median_gate_is_low_or_after_until():
    """min_gate: the median charged gate (numpy) decides; until: no unit after that step."""
    bank = MLPBank([ModelSpec((9,), seed=0), ModelSpec((6,), seed=1)], D, 10)
    mod = GrowingGate(0.0, min_gate=0.6, until=50, candidates=8)
    bank.add_modifier(mod)
    gates = np.array([0.1, 0.2, 0.3, 0.5, 0.55, 0.9, 1.0, 1.2, -0.4,   # median of live 0.525
                      0.7, 0.6, 0.65, 0.0, 2.0, 0.61])                  # median of live 0.65
    with torch.no_grad():
        mod.gate.copy_(torch.tensor(gates))
    for m, (a, b) in enumerate(bank.slices):
        g = gates[a:b]
        assert mod.median_gate(m) == pytest.approx(np.median(g[g > 0]))
    x, y = next(batches(1, batch=64))
    assert mod.propose(bank, x, y, step=20).models == [1]
    assert mod.propose(bank, x, y, step=51) is None
    with torch.no_grad():
        mod.gate.fill_(1.0)
    assert mod.propose(bank, x, y, step=50).models == [0, 1]


def test_a_model_proposes_the_same_units_alone_and_in_a_bank():
    """Candidates are drawn per model (keyed by its spec's seed): model S grows the same
    units next to other models as alone (the same random draws; scores to float rounding)."""
    s = ModelSpec((10,), seed=7)
    x, y = next(batches(1, batch=96, seed=6))
    plans = []
    for specs in ([s], [ModelSpec((5,), seed=1), s, ModelSpec((30,), seed=2)]):
        bank = MLPBank(specs, D, 10)
        mod = GrowingGate(0.0, init="random", max_new=3, candidates=12)
        bank.add_modifier(mod)
        plan = mod.propose(bank, x, y, step=40)
        k = plan.models.index(len(specs) // 2)
        plans.append((plan.counts[k], plan.init[k]))
    (n_a, (w_a, b_a)), (n_b, (w_b, b_b)) = plans
    assert n_a == n_b == 3
    torch.testing.assert_close(w_a, w_b, rtol=0, atol=0)
    torch.testing.assert_close(b_a, b_b, rtol=0, atol=0)


# ----------------------------------------------------------------------------- benefit rule
def gated_bank(widths=(7, 13), seed=0):
    bank = MLPBank([ModelSpec((w,), seed=i) for i, w in enumerate(widths)], D, 10)
    return bank, torch.Generator().manual_seed(seed)


def test_removal_costs_equal_exact_importance_and_its_first_order_term():
    """removal_costs = widthlab.metrics.importance.exact_importance of the exported model (its
    gates as the scale); linear=False = that minus d/dt CE(logits - t a_i w_i) at t=0, the
    derivative taken by float64 autograd."""
    from widthlab.metrics.importance import exact_importance

    bank, g = gated_bank()
    mod = GrowingGate(1e-3, rule=BenefitRule())
    bank.add_modifier(mod)
    with torch.no_grad():
        mod.gate.copy_(torch.rand(bank.n_hidden, generator=g) * 2 - 0.2)  # some gates dead
    x, y = next(batches(1, batch=300, seed=3))
    with torch.no_grad():
        _, act = bank.hidden(x, track=False)
        logits = bank.head(act)
    for m, (a, b) in enumerate(bank.slices):
        w = output_weight(bank, m)
        cost = removal_costs(logits[:, m], act[:, a:b], w, y)
        ref = exact_importance(bank.export(m), x, y, scale=F.relu(mod.gate.detach()[a:b]))
        np.testing.assert_allclose(cost.numpy(), ref, rtol=0, atol=1e-6)
        assert (cost[mod.gate.detach()[a:b] <= 0] == 0).all()  # a dead unit costs nothing
        curv = removal_costs(logits[:, m], act[:, a:b], w, y, linear=False)
        for i in range(b - a):
            t = torch.zeros((), dtype=torch.float64, requires_grad=True)
            z = logits[:, m].double() - t * act[:, a + i, None].double() * w[:, i].double()
            slope, = torch.autograd.grad(F.cross_entropy(z, y), t)
            assert curv[i].item() == pytest.approx(ref[i] - slope.item(), abs=1e-6)


def naive_decision(rule, price, costs, width, young, mature, max_new, max_frac):
    """The benefit rule's decision from its formulas (numpy): units to add (> 0), remove (< 0)."""
    b = float(np.quantile(costs, rule.quantile))
    ratio = b / price
    if ratio > rule.band:
        return max(min(math.ceil(mature * ratio ** (1 / rule.alpha) - width), max_new,
                       max(1, math.ceil(max_frac * width))), 0)
    if ratio >= rule.remove_at or young:
        return 0
    return -max(min(math.ceil(width - mature * ratio ** (1 / rule.alpha_remove)),
                    math.floor(rule.max_remove * mature)), 0)


def test_the_benefit_rule_grows_removes_and_waits_by_its_formulas():
    """Three models at prices below, near and above their median removal cost: the one priced
    low grows by the sized count, the one priced high masks its cheapest mature units (never a
    young one), all as the rule's formulas computed with numpy from exact_importance; a model
    with young units removes nothing; nothing before warmup, no growth after until, no removal
    in the run's last `settle` steps."""
    from widthlab.metrics.importance import exact_importance

    bank, g = gated_bank((12, 10, 9))
    x = torch.randn(256, D, generator=g)
    y = (x @ torch.randn(D, 10, generator=g)).argmax(1)  # learnable labels
    opt = BankOptimizer(bank, lr=1e-2)
    for _ in range(60):  # trained a little: units with positive removal costs
        bank.zero_grad()
        bank.loss(x, y).sum().backward()
        opt.step()
    costs = [exact_importance(bank.export(m), x, y) for m in range(3)]
    med = [float(np.median(c)) for c in costs]
    rule = BenefitRule(linear=True, max_remove=0.6, warmup=10, settle=20)
    prices = [med[0] / 8, med[1] / 1.1, med[2] * 6]  # grow, inside the band, remove
    mod = GrowingGate(0.0, price=prices, rule=rule, max_new=5, max_frac=1.0, until=60,
                      candidates=16, grace=5)
    bank.add_modifier(mod)
    assert mod.propose(bank, x, y, step=5) is None  # before warmup
    want = [naive_decision(rule, prices[m], costs[m], b - a, 0, b - a, 5, 1.0)
            for m, (a, b) in enumerate(bank.slices)]
    assert want[0] > 0 and want[1] == 0 and want[2] < 0
    plan = mod.propose(bank, x, y, step=20)
    assert plan.models == [0] and plan.counts == [want[0]]
    a, b = bank.slices[2]
    dropped = (mod.mask[a:b] == 0).nonzero().flatten().numpy()
    np.testing.assert_array_equal(np.sort(dropped), np.sort(np.argsort(costs[2])[:-want[2]]))
    assert mod.removed.tolist() == [0, 0, -want[2]]
    done = bank.grow_(*plan.args(), ids=plan.ids)  # model 0 now has young units
    mod.committed(plan)
    assert done.n_added == want[0]
    with torch.no_grad():
        mod.price[0] = 1e9  # priced out, but its young units block any removal
    mod.propose(bank, x, y, step=21)
    assert mod.removed[0] == 0 and int((mod.mask[bank.slices[0][0]:bank.slices[0][1]] == 0)
                                         .sum()) == 0
    with torch.no_grad():
        mod.price[1] = med[1] / 8
        mod.price[2] = 1e9
    assert mod.propose(bank, x, y, step=61, end=200) is None  # past until: 1 does not grow
    removed = int(mod.removed[2])
    assert removed > -want[2]  # model 2 still removes (before the last `settle` steps)
    mod.propose(bank, x, y, step=181, end=200)
    assert int(mod.removed[2]) == removed  # within them


def test_benefit_rule_errors_name_the_fix():
    with pytest.raises(UsageError, match="quantile"):
        BenefitRule(quantile=1.5)
    with pytest.raises(UsageError, match="band"):
        BenefitRule(band=0.5)
    with pytest.raises(UsageError, match="max_remove"):
        BenefitRule(max_remove=1.0)
    bank, _ = gated_bank()
    with pytest.raises(UsageError, match="price needs"):
        bank.add_modifier(GrowingGate(1e-3, price=[1e-3, 1e-3, 1e-3]))
    gate = GrowingGate(1e-3, rule={"quantile": 0.25})  # a stored description's dict
    assert gate.rule == BenefitRule(quantile=0.25)
    assert gate.describe()["rule"]["quantile"] == 0.25


def test_refit_fraction_is_the_share_the_other_units_cannot_fit():
    """refit_fraction (ridge 0, no dof correction) = the mean squared residual of each unit's
    activation least-squares fitted by the others and a constant, over its mean square; a unit
    that is a combination of others gets 0, one independent of them about 1 - k / n (the
    in-sample fit), which the dof correction undoes."""
    g = torch.Generator().manual_seed(0)
    h = F.relu(torch.randn(400, 6, generator=g) + 0.3)
    h[:, 5] += 0.7 * h[:, 4]  # partly shared
    frac = refit_fraction(h, ridge=0.0, dof=False)
    for i in range(h.shape[1]):
        others = torch.cat([h[:, :i], h[:, i + 1:], torch.ones(len(h), 1)], 1).double()
        coef = torch.linalg.lstsq(others, h[:, i:i + 1].double()).solution
        resid = (h[:, i:i + 1].double() - others @ coef).square().mean()
        assert frac[i].item() == pytest.approx(float(resid / h[:, i].double().square().mean()),
                                              abs=1e-6)
    both = torch.cat([h, h[:, :2] @ torch.tensor([[0.5], [2.0]])], 1)  # 0.5 a0 + 2 a1
    frac = refit_fraction(both, ridge=0.0, dof=False)
    assert frac[0] < 1e-3 and frac[1] < 1e-3 and frac[6] < 1e-3  # exactly collinear
    assert frac[2] > 0.5  # independent units keep their share
    free = F.relu(torch.randn(200, 40, generator=g))
    raw, fixed = refit_fraction(free, 0.0, dof=False), refit_fraction(free, 0.0)
    assert float(raw.mean()) < 0.8 and abs(float(fixed.mean()) - float(
        ((free - free.mean(0)).square().mean(0) / free.square().mean(0)).mean())) < 0.1
