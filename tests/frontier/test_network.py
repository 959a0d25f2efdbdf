"""Whole-network allocation: savings against the models' own size formulas, the loss scale
against per-sample autograd, and refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier import network
from widthlab.frontier.group import group_frontier
from widthlab.frontier.models import _consumers, collect, consumer_sites, model_loss
from widthlab.frontier.network import cut_network, network_groups, plain_costs, unit_costs
from widthlab.nn import GPT, GPTConfig, ResNet, ResNetConfig
from widthlab.units import build_graph

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(m):
    return sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())


@pytest.mark.parametrize("kinds", [("channels",), ("channels", "stream")])
def test_resnet_macs_saving_is_the_configs_macs(kinds):
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(stage_widths=(4, 8), blocks=2, image_size=12)).eval()
    x, y = torch.randn(48, 1, 12, 12), torch.randint(0, 10, (48,))
    graph = build_graph(model, x[:2])
    before = model.current_config().macs()
    grps = network_groups(model, graph, kinds)
    assert {g.kind for g in grps} == set(kinds)
    per = unit_costs(model, grps, x[:1])
    total = sum(g.size * per[g.name]["macs"] for g in grps)
    nc = cut_network(model, graph, (x, y), target="macs", amount=0.4, groups=grps)
    after = model.current_config().macs()
    saved = nc.allocation.curve[-1][0]
    assert saved >= 0.4 * total - 1e-9 and nc.allocation.met
    assert {g.name: g.size for g in graph.groups if g.name in nc.allocation.widths} == \
        nc.allocation.widths
    assert model(x).shape == (48, 10)
    if kinds == ("channels",):  # no weight between two cut groups: each unit's MACs, exactly
        assert before - after == pytest.approx(saved, abs=1e-6)
        return
    # a conv between a stream and an inner group loses (a + b - ab/c...) : counted twice
    # for a unit pair removed from both, so the per-unit saving over-counts, never under-counts
    assert 0 < before - after < saved
    w = nc.allocation.widths
    cfg = ResNetConfig(stage_widths=tuple(w[f"stream:stages.{s}"] for s in range(2)), blocks=2,
                       block_widths=tuple(tuple(w[f"stages.{s}.{b}.conv1:out"] for b in range(2))
                                          for s in range(2)), image_size=12)
    assert after == cfg.macs()


def test_gpt_params_saving_is_the_parameter_count():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=16, n_ffn=32, block_size=8,
                          vocab_size=11)).eval()
    x, y = torch.randint(0, 11, (32, 8)), torch.randint(0, 11, (32, 8))
    graph = build_graph(model, x[:2])
    grps = network_groups(model, graph)
    assert sorted(g.kind for g in grps) == ["ffn", "ffn", "heads", "heads"]  # no stream
    before = _params(model)
    nc = cut_network(model, graph, (x, y), target="params", amount=0.5)
    assert before - _params(model) == pytest.approx(nc.allocation.curve[-1][0])
    assert nc.allocation.curve[-1][0] >= 0.5 * nc.total
    for name, k in nc.allocation.widths.items():
        assert graph[name].size == k


def test_loss_target_stays_within_the_predicted_increase():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, n_ffn=16, block_size=6,
                          vocab_size=7)).eval()
    x, y = torch.randint(0, 7, (30, 6)), torch.randint(0, 7, (30, 6))
    graph = build_graph(model, x[:2])
    nc = cut_network(model, graph, (x, y), target="loss", amount=1e-3, apply=False,
                     rounds=1)
    assert nc.allocation.curve[-1][1] <= 1e-3 if nc.allocation.curve else True
    assert model.blocks[0].mlp.fc.out_features == 16  # apply=False: untouched


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(x)))


def test_scale_is_half_the_mean_squared_per_sample_gradient():
    torch.manual_seed(0)
    model = Head().double().eval()
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    graph = build_graph(model, x[:2])
    nc = cut_network(model, graph, (x, y), target="params", amount=0.3, apply=False,
                     batch=16, scale="fisher", rounds=1)
    # reference: per-sample gradient of sample i's loss in the consumer's outputs, by autograd
    sq = []
    for i in range(len(x)):
        h = torch.tanh(model.fc(x[i:i + 1]))
        z = model.out(h)
        z.retain_grad()
        nn.functional.cross_entropy(z, y[i:i + 1]).backward()
        sq.append(z.grad.square().mean())
    assert nc.scale["fc:out"] == pytest.approx(float(torch.stack(sq).mean()) / 2, rel=1e-10)


def test_refusals():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, n_ffn=16, block_size=6,
                          vocab_size=7)).eval()
    x, y = torch.randint(0, 7, (30, 6)), torch.randint(0, 7, (30, 6))
    graph = build_graph(model, x[:2])
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(UsageError, match="fallback must be an uncompensated"):
        cut_network(model, graph, (x, y), amount=0.5, groups=["stream:model"], fallback="obs")
    with pytest.raises(UsageError, match="fallback must be an uncompensated"):  # its bias
        cut_network(model, graph, (x, y), amount=0.5, groups=["stream:model"], fallback="flap")
    with pytest.raises(UsageError, match="rounds"):
        cut_network(model, graph, (x, y), amount=0.5, apply=False)
    with pytest.raises(UsageError, match="scale"):
        cut_network(model, graph, (x, y), amount=0.5, scale="hessian")
    with pytest.raises(UsageError, match="target"):
        cut_network(model, graph, (x, y), target="seconds", amount=0.5)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model_loss(model, (x, y))[0] > 0


def test_measured_scale_is_the_groups_own_half_cut_loss_over_its_error():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, n_ffn=16, block_size=6,
                          vocab_size=7)).double().eval()
    for p in model.parameters():
        p.data.normal_(0, 0.4)
    x, y = torch.randint(0, 7, (30, 6)), torch.randint(0, 7, (30, 6))
    graph = build_graph(model, x[:2])
    fisher = cut_network(model, graph, (x, y), amount=0.3, apply=False, rounds=1,
                         scale="fisher").scale
    meas = cut_network(model, graph, (x, y), amount=0.3, apply=False, rounds=1,
                       scale="measured").scale
    both = cut_network(model, graph, (x, y), amount=0.3, apply=False, rounds=1).scale
    from widthlab.frontier.models import model_frontier  # noqa: PLC0415

    for name in ("blocks.0.mlp.fc:out", "blocks.0.attn:heads"):
        k = graph[name].size // 2
        fr = model_frontier(model, graph, name, (x, y), (x, y), ks=[k], allow_same=True)
        want = max(fr.loss[k] - fr.dense_loss, 0) / fr.frontier.calib_losses[k]
        assert meas[name] == pytest.approx(want, rel=1e-9)
        assert both[name] == max(meas[name], fisher[name])


def test_plain_costs_are_the_zeroed_columns_output_error():
    """Independent numpy reference: the consumers' mean squared output change when the first
    k units of the order have their input columns zeroed (no refit), summed over consumers."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=8, n_ffn=16, block_size=6,
                          vocab_size=7)).double().eval()
    x = torch.randint(0, 7, (20, 6))
    graph = build_graph(model, x[:2])
    grp = graph["stream:model"]
    assert grp.mixers
    sites = consumer_sites(model, grp)
    acts, _, _ = collect(model, sites, (x, x))
    cons = _consumers(sites, acts, {})
    order = group_frontier(cons, grp.size, "activation").order
    got = plain_costs(cons, order)
    ref, prev = [], 0.0
    for k in range(1, grp.size):
        err = 0.0
        for s in sites:
            a = acts[s.module].reshape(-1, acts[s.module].shape[-1]).numpy()
            w = s.layer.weight.detach().numpy()
            cols = np.isin(s.col_units.numpy(), order[:k])
            err += ((a[:, cols] @ w[:, cols].T) ** 2).mean(0).sum()
        ref.append(err - prev)
        prev = err
    np.testing.assert_allclose(got[:-1], ref, rtol=1e-9, atol=1e-12)
    assert np.isnan(got[-1]) and len(sites) > 2  # every block's q/k/v, fc and the head


def test_a_mixed_group_is_allocated_by_its_fallback_and_says_so():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, n_ffn=16, block_size=6,
                          vocab_size=7)).eval()
    x, y = torch.randint(0, 7, (30, 6)), torch.randint(0, 7, (30, 6))
    graph = build_graph(model, x[:2])
    names = ["stream:model", "blocks.0.mlp.fc:out"]
    before = _params(model)
    nc = cut_network(model, graph, (x, y), target="params", amount=0.3, groups=names,
                     fallback="wanda_sp", rounds=1)
    assert nc.methods == {"stream:model": "wanda_sp", "blocks.0.mlp.fc:out": "obs"}
    assert [(f.group, f.used, f.compensated) for f in nc.frontiers] == [
        (n, m, m == "obs") for n, m in nc.methods.items() if nc.allocation.widths[n] <
        {"stream:model": 8, "blocks.0.mlp.fc:out": 16}[n]]
    assert model.head.in_features == nc.allocation.widths["stream:model"]
    # per-unit savings add, except the fc and proj weights that both groups cut (2 per pair)
    rs = 8 - nc.allocation.widths["stream:model"]
    rf = 16 - nc.allocation.widths["blocks.0.mlp.fc:out"]
    assert rs and rf
    assert before - _params(model) == nc.allocation.curve[-1][0] - 2 * rs * rf
    assert np.isfinite(model_loss(model, (x, y))[0])


def test_latency_slope_is_the_timed_difference_per_removed_unit(monkeypatch):
    """With a fake clock (a forward "takes" 1 us per parameter) the slope of every group is
    exactly its parameters per unit x 1 us: half the units removed, the difference divided."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, n_ffn=16, block_size=6,
                          vocab_size=7)).eval()
    x = torch.randint(0, 7, (4, 6))
    graph = build_graph(model, x[:2])
    grps = network_groups(model, graph)
    monkeypatch.setattr(network, "_best_time", lambda m, xb, reps: _params(m) * 1e-6)
    before = _params(model)
    slopes = network.latency_slopes(model, graph, grps, x)
    per = unit_costs(model, grps, x[:1])
    assert slopes == {g.name: pytest.approx(per[g.name]["params"] * 1e-6, rel=1e-12)
                      for g in grps}
    assert _params(model) == before  # measured on copies


def test_latency_target_cuts_by_measured_time():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 64), nn.ReLU(),
                          nn.Linear(64, 10)).eval()
    x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
    graph = build_graph(model, x[:2])
    nc = cut_network(model, graph, (x, y), target="latency", amount=0.5, rounds=1)
    assert nc.allocation.met and all(v > 0 for v in nc.saving.values())
    widths = nc.allocation.widths  # measured times: which group goes first may vary with load
    assert (model[0].out_features, model[2].out_features) == (widths["0:out"], widths["2:out"])
    assert widths["0:out"] + widths["2:out"] < 512 + 64
    assert model(x).shape == (256, 10)
