"""Learned widths to a MAC budget (frontier.gate_budget): the prune removes exactly the fewest
lowest-relative-gate units that meet the target (a brute-force reference over ResNetConfig's
own MAC arithmetic), keeps floors and momentum at the kept indices, refuses an unreachable
target unchanged; the run follows its geometric schedule and leaves the free epochs alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from widthlab.data.tensors import DatasetSplits, Split
from widthlab.engine.modules import ModuleConfig, make_optimizer
from widthlab.errors import UsageError
from widthlab.frontier.gate_budget import MacBudget, MacBudgetRun, prune_gates_to_macs_
from widthlab.nn.resnet import ResNetConfig
from widthlab.nn.surgery import model_gates
from widthlab.studies.resnet.train import build_gated, example

SMALL = ResNetConfig(stage_widths=(6, 8, 10), blocks=2, image_size=12)


def _config(widths: dict[str, int]) -> ResNetConfig:
    """The ResNetConfig of gate key -> width (independent of the units graph)."""
    stages = tuple(widths[f"stream:stages.{s}"] for s in range(3))
    inner = tuple(tuple(widths[f"stages.{s}.{b}.conv1:out"] for b in range(2))
                  for s in range(3))
    return ResNetConfig(stage_widths=stages, blocks=2, block_widths=inner, image_size=12)


def _gated(seed: int = 0):
    model = build_gated(SMALL, 0, price_by="unit", kind="relative_l1")
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for g in model_gates(model):
            g.gate.copy_(torch.as_tensor(rng.uniform(0.05, 2.0, g.width), dtype=torch.float32))
    return model


def _reference(model, target: int, keep: dict[str, int], by: str = "max"):
    """Brute force: rank every unit by relu(g) / max (or / the lower median) over its group
    (each group's `keep` largest exempt), remove the k lowest for the smallest k whose config
    costs <= target."""
    gates = {g.key: g.gate.detach().double().numpy() for g in model_gates(model)}
    rows = []
    for key, g in gates.items():
        r = np.maximum(g, 0)
        if by == "robust_z":
            d = r - np.sort(r)[(len(r) - 1) // 2]
            s = d / np.sort(np.abs(d))[(len(r) - 1) // 2]
        else:
            s = r / (r.max() if by == "max" else np.sort(r)[(len(r) - 1) // 2])
        exempt = set(np.argsort(-s, kind="stable")[:keep.get(key, 1)].tolist())
        rows += [(s[u], key, u) for u in range(len(s)) if u not in exempt]
    rows.sort()
    for k in range(len(rows) + 1):
        widths = {key: len(g) for key, g in gates.items()}
        gone: dict[str, set] = {key: set() for key in gates}
        for _, key, u in rows[:k]:
            widths[key] -= 1
            gone[key].add(u)
        if _config(widths).macs() <= target:
            kept = {key: [u for u in range(len(g)) if u not in gone[key]]
                    for key, g in gates.items()}
            return k, _config(widths), kept
    return None


@pytest.mark.parametrize("ratio", [1.3, 2.0, 3.5])
def test_prune_removes_the_fewest_lowest_relative_gates_and_keeps_momentum(ratio):
    model = _gated()
    opt = make_optimizer(model, ModuleConfig(optimizer="sgd", lr=0.01, gate_lr=0.01))
    x = torch.randn(4, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    F.cross_entropy(model(x), torch.arange(4)).backward()
    opt.step()  # momentum buffers exist
    keep = {"stream:stages.0": 3, "stages.2.1.conv1:out": 4}
    target = int(SMALL.macs() / ratio)
    k, cfg, kept = _reference(model, target, keep)
    gates_before = {g.key: g.gate.detach().clone() for g in model_gates(model)}
    conv = model.stages[0][0].conv1.weight
    buf = opt.state[conv]["momentum_buffer"].clone()
    out = prune_gates_to_macs_(model, example(SMALL), target_macs=target, optimizer=opt,
                               keep=keep)
    assert model.current_config() == cfg
    assert out["macs"] == cfg.macs() <= target and out["macs_before"] == SMALL.macs()
    assert sum(out["removed"].values()) == k
    for g in model_gates(model):  # the kept units' gates, in order
        torch.testing.assert_close(g.gate.detach(), gates_before[g.key][kept[g.key]])
    assert model.current_config().stage_widths[0] >= 3
    new = opt.state[model.stages[0][0].conv1.weight]["momentum_buffer"]
    ref = buf[kept["stages.0.0.conv1:out"]][:, kept["stream:stages.0"]]
    torch.testing.assert_close(new, ref)
    model(x).sum().backward()
    opt.step()  # the optimizer still fits the shrunk model


def test_prune_refuses_an_unreachable_target_unchanged():
    model = _gated()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    keep = {g.key: g.width for g in model_gates(model)}  # every group at its full floor
    with pytest.raises(UsageError, match="cannot be reached"):
        prune_gates_to_macs_(model, example(SMALL), target_macs=SMALL.macs() - 1, keep=keep)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(UsageError, match="positive int"):
        prune_gates_to_macs_(model, example(SMALL), target_macs=0.5)
    with pytest.raises(UsageError, match="ratio"):
        MacBudget(ratio=1.0)


def test_a_failing_shrink_leaves_the_gates_open(monkeypatch):
    """The gates closed for the cut are opened again when the shrink refuses: nothing of the
    model changes."""
    from widthlab.frontier import gate_budget

    model = _gated()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    real = gate_budget.shrink_

    def refuses(m, *a, **k):  # the trial copies of the search shrink; the model refuses
        if m is model:
            raise UsageError("the optimizer's state cannot be sliced")
        return real(m, *a, **k)

    monkeypatch.setattr(gate_budget, "shrink_", refuses)
    with pytest.raises(UsageError, match="cannot be sliced"):
        prune_gates_to_macs_(model, example(SMALL), target_macs=SMALL.macs() // 2)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_run_follows_its_geometric_schedule_and_keeps_the_free_epochs():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 12, 12, generator=g), torch.arange(64) % 10
    data = DatasetSplits("tiny", Split(x, y), Split(x[:0], y[:0]), Split(x[:16], y[:16]),
                         0.0, 1.0, 0)
    cfg = ModuleConfig(epochs=5, warmup_epochs=1, free_epochs=1, price=1e-3, optimizer="sgd",
                       lr=0.05, gate_lr=0.05, batch_size=32)
    budget = MacBudget(ratio=3.0, min_frac=0.5)
    run = MacBudgetRun(lambda: build_gated(SMALL, 0, "sqrt_macs", "relative_l1"), data, cfg,
                       budget=budget, describe={"net": "small"})
    macs0 = SMALL.macs()
    macs = []
    for epoch in range(1, 6):
        run.train_epoch(epoch, lambda n: None)
        macs.append(run.model.current_config().macs())
    assert macs[0] == macs0  # the warm-up prunes nothing
    for k in (1, 2, 3):  # priced epochs 2-4: macs0 / 3 ** (k / 3)
        assert macs[k] <= macs0 / 3.0 ** (k / 3)
    assert macs[4] == macs[3]  # the free epoch keeps the widths
    cfg_end = run.model.current_config()
    assert min(cfg_end.stage_widths) >= 3 and cfg_end.stage_widths[2] >= math.ceil(0.5 * 10)
    other = MacBudgetRun(lambda: build_gated(SMALL, 0, "sqrt_macs", "relative_l1"), data, cfg,
                         budget=MacBudget(ratio=2.0, min_frac=0.5), describe={"net": "small"})
    assert other.run_id != run.run_id
    with pytest.raises(UsageError, match="priced epochs"):
        MacBudgetRun(lambda: build_gated(SMALL, 0), data,
                     ModuleConfig(epochs=2, free_epochs=2), budget=budget, describe={})


def _small_gated():
    return build_gated(SMALL, 0, "sqrt_macs", "relative_l1")


def test_a_bare_factory_stays_a_factory():
    """No describe: the factory is built once by the run (on the run's device) and its code is
    in the id; the budget is in the model's identity."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 12, 12, generator=g), torch.arange(8) % 10
    data = DatasetSplits("tiny", Split(x, y), Split(x[:0], y[:0]), Split(x, y), 0.0, 1.0, 0)
    cfg = ModuleConfig(epochs=3, free_epochs=1, price=1e-3)
    calls = []

    def counted():
        calls.append(1)
        return _small_gated()

    run = MacBudgetRun(counted, data, cfg, budget=MacBudget(ratio=2.0))
    assert len(calls) == 1 and run.describe["mac_budget"]["ratio"] == 2.0
    assert run.spec.models[0]["mac_budget"] == run.describe["mac_budget"]
    ids = {MacBudgetRun(m, data, cfg, budget=MacBudget(ratio=r)).run_id
           for m in (_small_gated, _small_gated()) for r in (2.0, 3.0)}
    assert len(ids) == 4  # the budget counts, and a factory's code (this module) is hashed


WIDE = ResNetConfig(stage_widths=(8, 12, 16), blocks=2, image_size=12)


@pytest.mark.parametrize("ratio", [1.5, 2.5])
def test_blocks_of_units_leave_together_by_their_best_unit(ratio):
    """multiple=4: every group keeps a multiple of 4 at or above its floor rounded up, its
    best-scored units; a block removed scores no higher than a removable block kept; the
    target is met and one block fewer (the last one removed) would not meet it."""
    model = build_gated(WIDE, 0, price_by="unit", kind="relative_l1")
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for g in model_gates(model):
            g.gate.copy_(torch.as_tensor(rng.uniform(0.05, 2.0, g.width), dtype=torch.float32))
    raw = {g.key: np.maximum(g.gate.detach().double().numpy(), 0) for g in model_gates(model)}
    scores = {k: s / s.max() for k, s in raw.items()}
    keep = {"stream:stages.2": 9}  # rounded up to 12
    target = int(WIDE.macs() / ratio)
    out = prune_gates_to_macs_(model, example(WIDE), target_macs=target, keep=keep, multiple=4)
    widths = {g.key: g.width for g in model_gates(model)}
    assert _config(widths) == model.current_config()
    assert out["macs"] == model.current_config().macs() <= target
    removed_best, kept_block_best = [], []
    for key, s in scores.items():
        w0, w = len(s), widths[key]
        assert w % 4 == 0 and w >= (12 if key in keep else 4)
        desc = np.sort(s)[::-1]  # the group's scores, best first
        kept = next(g for g in model_gates(model) if g.key == key).gate.detach().double()
        np.testing.assert_allclose(np.sort(kept.numpy())[::-1], np.sort(raw[key])[::-1][:w])
        blocks = [desc[i:i + 4] for i in range(w, w0, 4)]  # removed, best block first
        if blocks:
            removed_best.append((float(blocks[0].max()), key))
        floor = 12 if key in keep else 4
        if w - 4 >= floor:  # the next block this group would lose
            kept_block_best.append(float(desc[w - 4:w].max()))
    assert max(b for b, _ in removed_best) <= min(kept_block_best)
    # one block fewer: the last block removed back in, the target no longer met
    last_key = max(removed_best)[1]
    back = dict(widths)
    back[last_key] += 4
    assert _config(back).macs() > target
    assert sum(out["removed"].values()) == sum(len(s) - widths[k] for k, s in scores.items())
    with pytest.raises(UsageError, match="multiple"):
        prune_gates_to_macs_(model, example(WIDE), target_macs=target, multiple=0)
    with pytest.raises(UsageError, match="multiple"):
        MacBudget(ratio=2.0, multiple=2.5)


def test_prunes_within_a_priced_epoch_follow_the_finer_schedule():
    """per_epoch=3: the MACs change only after the optimizer steps round(j * n / 3) of a
    priced epoch (j = 1, 2) and at its end, each time to at most macs0 / ratio ** (i / 6)
    for the i-th point of 2 priced epochs x 3; the warm-up and the free epoch are left alone;
    per_epoch=1 leaves the stored identity as it was (no per_epoch key)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 12, 12, generator=g), torch.arange(96) % 10
    data = DatasetSplits("tiny", Split(x, y), Split(x[:0], y[:0]), Split(x[:16], y[:16]),
                         0.0, 1.0, 0)
    cfg = ModuleConfig(epochs=4, warmup_epochs=1, free_epochs=1, price=1e-3, optimizer="sgd",
                       lr=0.05, gate_lr=0.05, batch_size=16)  # 6 steps per epoch
    run = MacBudgetRun(_small_gated, data, cfg, budget=MacBudget(3.0, 0.5, per_epoch=3),
                       describe={"net": "small"})
    assert run.prune_points() == {2: 1, 4: 2}
    macs0 = SMALL.macs()
    trace, lost, recorded = [], [], []  # (epoch, step, macs after the step); units per epoch
    for epoch in range(1, 5):
        steps = iter(range(1, 7))
        before = sum(gate.width for gate in model_gates(run.model))
        run.train_epoch(epoch, lambda n, e=epoch, s=steps: trace.append(
            (e, next(s), run.model.current_config().macs())))
        trace.append((epoch, "end", run.model.current_config().macs()))
        lost.append(before - sum(gate.width for gate in model_gates(run.model)))
        recorded.append(sum(run.last_record["removed"].values()))
    changed = [(e, s, m) for (e, s, m), (_, _, prev) in zip(trace[1:], trace, strict=False)
               if m != prev]
    assert [(e, s) for e, s, _ in changed] == [(2, 2), (2, 4), (2, "end"),
                                               (3, 2), (3, 4), (3, "end")]
    for i, (_, _, m) in enumerate(changed, start=1):
        assert m <= macs0 / 3.0 ** (i / 6)
    assert all(m == macs0 for e, _, m in trace if e == 1)
    assert trace[-1][2] == changed[-1][2]  # the free epoch keeps the widths
    assert recorded == lost and lost[1] > 0 and lost[2] > 0  # each record counts all prunes
    assert "per_epoch" not in MacBudgetRun(_small_gated, data, cfg, budget=MacBudget(3.0, 0.5),
                                           describe={"net": "small"}).describe["mac_budget"]
    assert run.describe["mac_budget"]["per_epoch"] == 3
    with pytest.raises(UsageError, match="per_epoch"):
        MacBudget(2.0, per_epoch=0)


@pytest.mark.parametrize("by", ["median", "robust_z"])
def test_median_scores_rank_against_the_group_median_not_a_runaway_gate(by):
    """score="median": the fewest lowest relu(g) / median(relu(g)) units, "robust_z": of
    (r - median(r)) / median(|r - median(r)|) (numpy reference); a group whose largest gate
    ran away (all its other units scaled down alike under "max") is no longer cut first."""
    model = _gated(seed=2)
    runaway = "stages.2.0.conv1:out"
    with torch.no_grad():
        for g in model_gates(model):
            if g.key == runaway:
                g.gate[0] = 40.0
    target = int(SMALL.macs() / 1.6)
    k, cfg, kept = _reference(model, target, {}, by=by)
    gates_before = {g.key: g.gate.detach().clone() for g in model_gates(model)}
    by_max = _gated(seed=2)
    by_max.load_state_dict(model.state_dict())
    out = prune_gates_to_macs_(model, example(SMALL), target_macs=target, score=by)
    assert model.current_config() == cfg and out["macs"] == cfg.macs() <= target
    assert sum(out["removed"].values()) == k
    for g in model_gates(model):
        torch.testing.assert_close(g.gate.detach(), gates_before[g.key][kept[g.key]])
    prune_gates_to_macs_(by_max, example(SMALL), target_macs=target, score="max")
    width = {g.key: g.width for g in model_gates(model)}
    width_max = {g.key: g.width for g in model_gates(by_max)}
    assert width_max[runaway] == 1 < width[runaway]  # "max" empties the runaway's group
    with pytest.raises(UsageError, match="score"):
        MacBudget(2.0, score="mean")
