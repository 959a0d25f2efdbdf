"""The resnet study (issue 32): the study's gated ResNet shrunk with its own SGD-momentum
optimizer equals masked training, the uniform width meets a MAC target as closely as any
uniform scaling, the journal's per-channel statistics against numpy, the final network of a
shrunk checkpoint, image-shaped user data, and the whole study end to end on 8x8 images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from widthlab.data import from_arrays
from widthlab.engine.modules import make_optimizer
from widthlab.errors import UsageError
from widthlab.nn.resnet import ResNetConfig
from widthlab.nn.surgery import model_gates, shrink_, size_penalty
from widthlab.store import Store
from widthlab.studies.resnet import PROFILES, STUDY
from widthlab.studies.resnet.analysis import k95
from widthlab.studies.resnet.config import ALTERNATIVES, LEARNED, learned_config
from widthlab.studies.resnet.train import (
    build_dense,
    build_gated,
    group_stats,
    plain_model,
    state_config,
    uniform_config,
)
from widthlab.units import size_attrs

SMALL = ResNetConfig(stage_widths=(6, 8, 10), blocks=2, image_size=12)
DEAD = {"stages.1.1.conv1:out": [0, 3], "stream:stages.1": [2, 5]}  # an inner width, a stream


def _step(model, opt, x, y, price, n):
    for _ in range(n):
        opt.zero_grad()
        (F.cross_entropy(model(x), y) + price * size_penalty(model)).backward()
        opt.step()


def test_study_gates_shrunk_with_sgd_momentum_equal_masked_training():
    """Kill channels of an inner group and of a stream group, shrink with the study's own
    optimizer (SGD momentum, weight decay, gates in their own group): outputs unchanged, and
    the next 20 steps equal training the masked network."""
    p = PROFILES["standard"]
    x = torch.randn(8, 1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    pair = []
    for _ in range(2):
        torch.set_default_dtype(torch.float64)  # the traced example too
        try:
            model = build_gated(SMALL, 0, p.price_by, p.gate_kind)
        finally:
            torch.set_default_dtype(torch.float32)
        gates = {g.key: g for g in model_gates(model)}
        with torch.no_grad():
            for key, units in DEAD.items():
                gates[key].gate[units] = -1.0
        opt = make_optimizer(model, learned_config(p))
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == p.momentum
        _step(model, opt, x, y, p.price, 3)
        pair.append((model, opt))
    (masked, mopt), (shrunk, sopt) = pair
    removed = shrink_(shrunk, sopt)
    assert {k: v for k, v in removed.items() if v} == {k: len(v) for k, v in DEAD.items()}
    assert shrunk.current_config().stage_widths == (6, 6, 10)
    assert shrunk.current_config().block_widths[1] == (8, 6)
    assert shrunk.current_config().macs() < SMALL.macs()
    masked.eval(), shrunk.eval()
    torch.testing.assert_close(shrunk(x), masked(x), atol=1e-5, rtol=0)
    masked.train(), shrunk.train()
    _step(masked, mopt, x, y, p.price, 20)
    _step(shrunk, sopt, x, y, p.price, 20)
    masked.eval(), shrunk.eval()
    torch.testing.assert_close(shrunk(x), masked(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("target", [3e6, 1.24e7, 2.0e7])
def test_uniform_width_is_the_closest_uniform_scaling(target):
    cfg = ResNetConfig()
    got = uniform_config(cfg, target)
    brute = min(abs(dataclasses.replace(
        cfg, stage_widths=tuple(max(1, round(w * f)) for w in cfg.stage_widths),
        block_widths=tuple(tuple(max(1, round(w * f)) for w in r) for r in cfg.block_widths)
    ).macs() - target) for f in np.arange(0.01, 1.0, 2e-4))
    assert abs(got.macs() - target) <= brute
    assert abs(got.macs() - target) < 0.05 * target
    ratio = [g / w for g, w in zip(got.stage_widths, cfg.stage_widths, strict=True)]
    assert max(ratio) - min(ratio) < 0.1  # one factor for every width


def test_journal_stats_against_numpy():
    model = build_dense(SMALL, 0).eval()
    with torch.no_grad():  # block 0.1's inner channel 2 is always 0: dead
        model.stages[0][1].bn1.weight[2] = 0.0
        model.stages[0][1].bn1.bias[2] = -1.0
    x = torch.randn(5, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    stats = group_stats(model, x)
    with torch.no_grad():
        h = F.relu(model.bn1(model.conv1(x)))
        b0 = model.stages[0][0]
        h = F.relu(b0.bn2(b0.conv2(F.relu(b0.bn1(b0.conv1(h))))) + h)
        inner = F.relu(model.stages[0][1].bn1(model.stages[0][1].conv1(h))).double().numpy()
    ref = inner.transpose(1, 0, 2, 3).reshape(6, -1).std(1, ddof=1)
    np.testing.assert_allclose(stats["inner0.1"], ref, rtol=1e-5, atol=1e-7)
    assert stats["inner0.1"][2] == 0
    assert set(stats) == {"stream0", "stream1", "stream2", *(f"inner{s}.{b}" for s in range(3)
                                                              for b in range(2))}
    assert [len(stats[f"stream{s}"]) for s in range(3)] == [6, 8, 10]


def test_k95_is_the_fewest_channels_holding_95_percent_of_the_variance():
    rng = np.random.default_rng(0)
    for _ in range(20):
        std = rng.exponential(size=rng.integers(1, 40))
        var = std ** 2
        brute = min(k for k in range(1, len(var) + 1)
                    if np.sort(var)[::-1][:k].sum() >= 0.95 * var.sum() - 1e-12)
        assert k95(std) == brute


def test_the_final_network_of_a_shrunk_gated_checkpoint():
    torch.manual_seed(0)
    model = build_gated(SMALL, 0)
    with torch.no_grad():
        for g in model_gates(model):
            g.gate.uniform_(0.5, 1.5)
        {g.key: g for g in model_gates(model)}["stages.2.0.conv1:out"].gate[[1, 4]] = -1.0
    shrink_(model)
    x = torch.randn(4, 1, 12, 12)
    plain = plain_model({"model": model.state_dict(), "sizes": size_attrs(model)}, SMALL)
    assert plain.current_config() == model.current_config()
    assert state_config(plain.state_dict(), SMALL).block_widths[2] == (8, 10)
    model.eval()
    torch.testing.assert_close(plain(x), model(x), atol=1e-5, rtol=1e-5)


def test_images_keep_their_shape_and_flat_data_says_why_not():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2, 5, 5)), np.arange(40) % 3
    d = from_arrays(x, y, val_size=0, test_size=10)
    assert d.sample_shape == (2, 5, 5) and d.n_features == 50
    im = d.images()
    assert im.train.x.shape == (30, 2, 5, 5) and im.n_features == 50
    torch.testing.assert_close(im.train.x.flatten(1), d.train.x)
    assert from_arrays(x[:, 0], y).sample_shape == (1, 5, 5)
    flat = from_arrays(x.reshape(40, -1), y)
    assert flat.sample_shape is None
    with pytest.raises(UsageError, match="no image shape"):
        flat.images()


@pytest.mark.parametrize("budget", [{}, {"target_ratio": 2.0, "gate_kind": "relative_l1",
                                     "cut_tries": 4, "eager_latency": True,
                                     "prunes_per_epoch": 2, "budget_score": "median"}])
def test_the_study_end_to_end_on_small_images(tmp_path, budget):
    """Every step on 8x8 images: the alternatives meet the learned multiply-adds, the cost
    analysis counts what the network says, the learned run shrank and its epochs are stored;
    with a MAC budget the learned run ends at most at dense / target_ratio; the plain eager
    latency is measured only when the profile asks (quick: not)."""
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    x = rng.normal(size=(120, 1, 8, 8)) + y[:, None, None, None] * 0.5
    data = from_arrays(x, y, name="tiny", val_size=0, test_size=40)
    alts = ALTERNATIVES
    runs = STUDY.run("tiny", "quick", store=tmp_path, data=data, alternatives=alts,
                     train_size=None, test_size=None, **budget)
    st = Store.open(tmp_path)
    t = STUDY.tables(st, {"tiny": runs.runs})["tiny"]
    f = t.final.set_index("method")
    assert set(f.index) == {"dense", LEARNED, *alts}
    learned = f.macs[LEARNED]
    assert learned < f.macs["dense"]  # the quick price removes channels
    if budget:
        assert learned <= f.macs["dense"] / budget["target_ratio"]
    for m in alts:
        assert abs(f.macs[m] - learned) <= 0.25 * learned, (m, f.macs[m], learned)
        if m != "uniform":  # cut to at most the learned multiply-adds
            assert f.macs[m] <= learned, (m, f.macs[m], learned)
    np.testing.assert_allclose(f.cost_macs, f.macs)  # counted on the module == the config
    assert (f.latency_b64_ms > 0).all()
    if budget:
        assert (f.latency_eager_b64_ms > 0).all() and (f.speedup_eager_b64 > 0).all()
    else:
        assert f.latency_eager_b64_ms.isna().all()
    assert list(t.curves[t.curves.method == LEARNED].epoch) == [1, 2]
    assert len(t.groups) == 12 and (t.groups.learned_width <= t.groups.width).all()
    verdicts = STUDY.verdicts({"tiny": t})["tiny"]
    assert len(verdicts) == 5 and all(v.text for v in verdicts)


def _minus_one(cfg: ResNetConfig, key: str) -> ResNetConfig:
    """``cfg`` with one unit fewer in the group ``key`` (a stage's stream or a block's inner)."""
    stages, inner = list(cfg.stage_widths), [list(r) for r in cfg.block_widths]
    if key.startswith("stream:stages."):
        stages[int(key.split(".")[-1])] -= 1
    else:
        s, b = (int(v) for v in key.split(":")[0].split(".")[1:3])
        inner[s][b] -= 1
    return dataclasses.replace(cfg, stage_widths=tuple(stages),
                               block_widths=tuple(map(tuple, inner)))


@pytest.mark.parametrize("price_by,power", [("macs", 1.0), ("sqrt_macs", 0.5)])
def test_price_scales_are_a_units_multiply_adds_over_the_mean_units(price_by, power):
    # reference: the multiply-adds one unit of a group carries = the drop of ResNetConfig.macs()
    # when the group loses one unit (exact: every conv is bilinear in its in/out channels)
    model = build_gated(SMALL, 0, price_by, "hard_concrete")
    gates = model_gates(model)
    assert len(gates) == 3 + 3 * 2 and all(g.kind.name == "hard_concrete" for g in gates)
    per = np.array([SMALL.macs() - _minus_one(SMALL, g.key).macs() for g in gates], float)
    want = (per / per.mean()) ** power
    np.testing.assert_allclose([g.price_scale for g in gates], want, rtol=1e-12)
    flat = build_gated(SMALL, 0, "unit", "l1")
    assert all(g.price_scale == 1.0 and g.kind.name == "l1" for g in model_gates(flat))


def test_the_final_network_of_a_shrunk_hard_concrete_checkpoint():
    torch.manual_seed(0)
    model = build_gated(SMALL, 0, "macs", "hard_concrete")
    with torch.no_grad():
        for g in model_gates(model):
            g.gate.uniform_(-1.0, 3.0)
        {g.key: g for g in model_gates(model)}["stream:stages.1"].gate[[0, 5]] = -9.0
    shrink_(model)
    assert model.current_config().stage_widths == (6, 6, 10)
    plain = plain_model({"model": model.state_dict(), "sizes": size_attrs(model)}, SMALL)
    x = torch.randn(4, 1, 12, 12)
    model.eval()  # the evaluation gate (deterministic) is what the plain network folds in
    torch.testing.assert_close(plain(x), model(x), atol=1e-5, rtol=1e-5)


def test_the_profile_refuses_an_unknown_gate_kind_or_price_by():
    with pytest.raises(UsageError, match="gate_kind"):
        dataclasses.replace(PROFILES["quick"], gate_kind="l0").validate()
    with pytest.raises(UsageError, match="price_by"):
        dataclasses.replace(PROFILES["quick"], price_by="flops").validate()
    with pytest.raises(UsageError, match="target_ratio"):
        dataclasses.replace(PROFILES["quick"], target_ratio=0.5).validate()
    with pytest.raises(UsageError, match="min_width_frac"):
        dataclasses.replace(PROFILES["quick"], min_width_frac=0.0).validate()
    with pytest.raises(UsageError, match="width_multiple"):
        dataclasses.replace(PROFILES["quick"], width_multiple=0).validate()
    with pytest.raises(UsageError, match="prunes_per_epoch"):
        dataclasses.replace(PROFILES["quick"], prunes_per_epoch=0).validate()
    with pytest.raises(UsageError, match="budget_score"):
        dataclasses.replace(PROFILES["quick"], budget_score="mean").validate()


def test_the_later_budget_fields_join_the_learned_identity_only_when_set():
    """prunes_per_epoch / budget_score at their defaults leave the learned run's settings
    (its identity) as they were before the fields existed; set, they are in it and in the
    run's MacBudget."""
    from widthlab.studies.resnet.compute import learned_step
    from widthlab.studies.steps import RunContext

    rng = np.random.default_rng(0)
    data = from_arrays(rng.normal(size=(40, 1, 8, 8)), np.arange(40) % 2, name="tiny",
                       val_size=0, test_size=10)
    base = dataclasses.replace(PROFILES["quick"], target_ratio=2.0, train_size=None,
                               test_size=None)

    def step(**kw):
        ctx = RunContext(None, "tiny", dataclasses.replace(base, **kw), {}, {}, data=data)
        return learned_step(ctx)

    old = step()
    assert list(old.describe["settings"]) == [
        "epochs", "train_size", "test_size", "batch_size", "lr", "momentum", "weight_decay",
        "seed", "price", "price_by", "gate_lr", "free_frac", "warmup_frac", "target_ratio",
        "min_width_frac", "width_multiple"]
    new = step(prunes_per_epoch=3, budget_score="median")
    assert new.describe["settings"] == {**old.describe["settings"], "prunes_per_epoch": 3,
                                        "budget_score": "median"}
    budget = new.trainable.keywords["budget"]
    assert (budget.per_epoch, budget.score) == (3, "median")
    assert "score" not in old.trainable.keywords["budget"].identity()


def test_the_latency_verdict_reads_the_deployed_speed_up_and_states_the_eager_one():
    from widthlab.studies.resnet.verdicts import latency_falls

    # dense 30M MACs 60 ms; learned 3x fewer MACs, 27 ms deployed (2.22x: 0.74 of 3x),
    # eager 90 ms -> 60 ms (1.5x: 0.5 of it); uniform in between
    f = pd.DataFrame({"method": ["dense", LEARNED, "uniform"], "macs": [30e6, 10e6, 10.5e6],
                      "latency_b1_ms": [2.0, 1.0, 1.1], "latency_b64_ms": [60.0, 27.0, 30.0],
                      "latency_eager_b64_ms": [90.0, 60.0, 58.0]})
    f = f.assign(macs_ratio=30e6 / f.macs, speedup_b64=60.0 / f.latency_b64_ms,
                 speedup_eager_b64=90.0 / f.latency_eager_b64_ms)
    v = latency_falls(f)
    assert v.holds and v.numbers["share"] == pytest.approx(60 / 27 / 3)
    assert v.numbers["eager_share"] == pytest.approx(1.5 / 3) and "(0.50 of it)" in v.text
    slow = f.assign(speedup_b64=f.speedup_eager_b64)  # the eager numbers alone would fail
    assert not latency_falls(slow).holds
    no_eager = f.assign(speedup_eager_b64=np.nan)
    assert latency_falls(no_eager).holds and "eager" not in latency_falls(no_eager).text


def test_the_verdicts_over_seeds_use_paired_means_and_state_the_spread():
    from widthlab.studies.resnet.config import ALTERNATIVES
    from widthlab.studies.resnet.verdicts import across_seeds

    rng = np.random.default_rng(3)
    accs = {s: {m: 89 + rng.normal(0, 0.4) for m in ("dense", LEARNED, *ALTERNATIVES)}
            for s in range(4)}
    accs[0]["uniform"] = accs[0][LEARNED] + 0.5  # uniform wins one seed by half a point

    def table(s, ratio=2.6, speedup=1.9):
        a = accs[s]
        return pd.DataFrame({"method": list(a), "acc": list(a.values()),
                             "macs_ratio": [1.0] + [ratio] * (len(a) - 1),
                             "speedup_b64": [1.0] + [speedup] * (len(a) - 1)})

    finals = {s: table(s) for s in range(4)}
    target, beats, latency = across_seeds(finals)
    learned = np.array([accs[s][LEARNED] for s in range(4)])
    for m in ALTERNATIVES:
        diff = learned - np.array([accs[s][m] for s in range(4)])
        assert beats.numbers["margins"][m] == pytest.approx(diff.mean())
        assert f"sd {diff.std(ddof=1):.2f}" in beats.text
    assert beats.holds == all(v > 0 for v in beats.numbers["margins"].values())
    drop = np.array([accs[s]["dense"] - accs[s][LEARNED] for s in range(4)])
    assert target.numbers["drop"] == pytest.approx(drop.mean())
    assert target.holds == (drop.mean() <= 0.3)
    assert latency.holds and latency.numbers["share"] == pytest.approx(1.9 / 2.6)
    # one alternative clearly better on every seed: the claim fails and says by how much
    for s in range(4):
        accs[s]["slimming"] = accs[s][LEARNED] + 1.0
    worse = across_seeds({s: table(s, speedup=1.5) for s in range(4)})
    assert not worse[1].holds and worse[1].numbers["margins"]["slimming"] == pytest.approx(-1)
    assert "-1.00, sd 0.00 (beyond the spread)" in worse[1].text
    assert not worse[2].holds  # 1.5 / 2.6 < 0.7
    # a seed without its learned run: every claim fails and names it
    gap = {**finals, 9: finals[0][finals[0].method != LEARNED]}
    assert not any(v.holds for v in across_seeds(gap))
    assert "missing: [9]" in across_seeds(gap)[0].text
