"""Sparsifier layers: gates and penalties against float64 references, shrinking that changes no
output and keeps the optimizer state aligned (trajectory equal to a masked twin), and the bank's
gate modifier against the same models trained alone with a naive loop."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from widthlab.engine.optim import BankOptimizer
from widthlab.errors import UsageError
from widthlab.nn.bank import MLP, MLPBank, ModelSpec
from widthlab.nn.gated import GatedLinear, GatedMLP, SparsifierGate, gate_penalty

pytestmark = pytest.mark.usefixtures("one_thread")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def batches(n, batch=32, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield torch.randn(batch, d, generator=g), torch.randint(0, 10, (batch,), generator=g)


def make_optimizer(kind: str, params, lr: float = 1e-2):
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    if kind == "adamax":
        return torch.optim.Adamax(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


gates = arrays(np.float64, st.integers(1, 12),
               elements=st.one_of(st.just(0.0), st.floats(-3, 3, allow_subnormal=False)))


@given(g=gates, seed=st.integers(0, 2 ** 16), penalty=st.sampled_from(["strict", "abs"]))
def test_forward_and_penalty_match_float64(g, seed, penalty):
    n = len(g)
    layer = GatedLinear(5, n, penalty).double()
    with torch.no_grad():
        layer.gate.copy_(torch.from_numpy(g))
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    ref = (x.numpy() @ w.T + b) * np.maximum(g, 0)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    expected = np.maximum(g, 0).sum() if penalty == "strict" else np.abs(g).sum()
    assert layer.penalty().item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert layer.n_alive == int((g > 0).sum())


@given(g=gates, seed=st.integers(0, 2 ** 16))
def test_shrink_removes_exactly_the_dead_neurons_and_keeps_outputs(g, seed):
    n = len(g)
    g = g.astype(np.float32)  # the gates' dtype: a tiny float64 may round to 0
    torch.manual_seed(seed)
    net = GatedMLP([6, n, 4, 3], seed=seed % 7)
    with torch.no_grad():
        net.hidden[0].gate.copy_(torch.from_numpy(g))
    x = torch.randn(9, 6)
    before = net(x).detach()
    w_next = net.hidden[1].weight.detach().clone()
    weight = net.hidden[0].weight
    removed = net.shrink_()
    dead = np.flatnonzero(g <= 0)
    np.testing.assert_array_equal(removed[0].numpy(), dead)
    assert len(removed[1]) == 0 and net.widths == [n - len(dead), 4]
    assert net.hidden[0].weight is weight  # in place: the same Parameter object
    torch.testing.assert_close(net.hidden[1].weight.detach(), w_next[:, g > 0], rtol=0, atol=0)
    assert net.hidden[1].in_features == n - len(dead)
    after = net(x).detach()
    assert rel_err(after, before) < 1e-6


def test_gated_mlp_starts_as_the_plain_mlp():
    x = torch.randn(5, 784)
    net, ref = GatedMLP([784, 30, 20, 10], seed=3), MLP([784, 30, 20, 10], seed=3)
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)
    assert net.penalty().item() == 50.0  # two layers of gates at 1


@pytest.mark.parametrize("penalty", ["strict", "abs"])
@pytest.mark.parametrize("kind", ["adam", "adamax", "sgd"])
def test_training_after_a_shrink_follows_the_masked_twin(penalty, kind):
    """Acceptance: a shrunk network and its masked (full-width) twin, same optimizer state,
    continue on the same batches: equal outputs and equal live parameters to 1e-6."""
    torch.manual_seed(0)
    lam = 1e-2
    net = GatedMLP([20, 24, 16, 10], penalty=penalty, seed=1)
    opt = make_optimizer(kind, net.parameters(), lr=2e-2)
    stream = batches(90)
    for _ in range(30):  # train a while: non-trivial optimizer state
        x, y = next(stream)
        opt.zero_grad()
        (F.cross_entropy(net(x), y) + lam * net.penalty()).backward()
        opt.step()
    with torch.no_grad():  # then kill a third of the neurons (one gate exactly at 0)
        for layer in net.hidden:
            layer.gate[::3] = -1e-3
            layer.gate[1] = 0.0
    twin = copy.deepcopy(net)
    twin_opt = make_optimizer(kind, twin.parameters(), lr=2e-2)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # no shared state tensors
    alive = [layer.alive.clone() for layer in net.hidden]
    assert all(0 < int(a.sum()) < len(a) for a in alive), "want some dead, some alive"
    removed = net.shrink_(opt)
    twin.mask_()
    for a, r in zip(alive, removed, strict=True):
        np.testing.assert_array_equal(r.numpy(), np.flatnonzero(~a.numpy()))
    for x, y in stream:
        outs = []
        for model, o in ((net, opt), (twin, twin_opt)):
            o.zero_grad()
            logits = model(x)
            (F.cross_entropy(logits, y) + lam * model.penalty()).backward()
            o.step()
            outs.append(logits.detach())
        assert rel_err(outs[0], outs[1]) < 1e-6
    a0, a1 = alive
    pairs = [(net.hidden[0].weight, twin.hidden[0].weight[a0]),
             (net.hidden[0].bias, twin.hidden[0].bias[a0]),
             (net.hidden[0].gate, twin.hidden[0].gate[a0]),
             (net.hidden[1].weight, twin.hidden[1].weight[a1][:, a0]),
             (net.hidden[1].gate, twin.hidden[1].gate[a1]),
             (net.out.weight, twin.out.weight[:, a1]), (net.out.bias, twin.out.bias)]
    for i, (mine, theirs) in enumerate(pairs):
        # a gate sitting at 0 under |g| gets a penalty gradient of +-lambda whose sign follows
        # rounding noise, and Adam turns that into a full-size step: 1e-5 for those gates
        tol = 1e-5 if (penalty == "abs" and i in (2, 4)) else 1e-6
        assert rel_err(mine.detach(), theirs.detach()) < tol, i
    start = GatedMLP([20, 24, 16, 10], seed=1)
    assert rel_err(net.out.bias.detach(), start.out.bias.detach()) > 1e-2  # it trained


def test_a_masked_layer_reloads_masked():
    layer = GatedLinear(4, 3, "abs")
    with torch.no_grad():
        layer.gate[1] = -0.5
    layer.mask_()
    other = GatedLinear(4, 3, "abs")
    other.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4)
    torch.testing.assert_close(other(x), layer(x), rtol=0, atol=0)
    assert other.penalty().item() == layer.penalty().item() == 2.0  # the masked gate is out
    assert other(x)[:, 1].abs().max() == 0


def test_dead_strict_gates_stay_dead_and_abs_gates_may_revive():
    """Why the mask exists: under "abs" the penalty pushes a negative gate back up."""
    for penalty, revives in (("strict", False), ("abs", True)):
        layer = GatedLinear(3, 2, penalty)
        with torch.no_grad():
            layer.gate.copy_(torch.tensor([-1e-3, 1.0]))
        opt = torch.optim.SGD(layer.parameters(), lr=1e-1)
        for _ in range(5):
            opt.zero_grad()
            layer.penalty().backward()
            opt.step()
        assert (layer.gate[0].item() > 0) is revives, penalty


def test_errors_name_the_fix():
    with pytest.raises(UsageError, match="strict, abs"):
        GatedLinear(3, 4, penalty="l2")
    with pytest.raises(UsageError, match="strict, abs"):
        gate_penalty(torch.ones(3), "l0")
    with pytest.raises(UsageError, match="hidden layer"):
        GatedMLP([784, 10])
    layer = GatedLinear(3, 4)
    with torch.no_grad():
        layer.gate[0] = -1.0
    with pytest.raises(UsageError, match="pass the layer that reads this one"):
        layer.shrink_(torch.nn.Linear(5, 2))


# ----------------------------------------------------------------------------- the bank path
class NaiveSparsifier(torch.nn.Module):
    """One bank member written out by hand: a gated first layer, plain later layers."""

    def __init__(self, spec: ModelSpec, d: int, penalty: str):
        super().__init__()
        sizes = [d, *spec.hidden, 10]
        mlp = MLP(sizes, seed=spec.seed)
        self.first = GatedLinear(d, spec.hidden[0], penalty)
        with torch.no_grad():
            self.first.weight.copy_(mlp.layers[0].weight)
            self.first.bias.copy_(mlp.layers[0].bias)
        self.rest = mlp.layers[1:]

    def forward(self, x):
        h = F.relu(self.first(x))
        for layer in self.rest[:-1]:
            h = F.relu(layer(h))
        return self.rest[-1](h)


@pytest.mark.parametrize("penalty", ["strict", "abs"])
def test_bank_with_shrinks_equals_each_model_shrunk_alone(penalty):
    """Bank (fused, regrouped after each shrink, optimizer state carried) vs a naive loop over
    the same models each shrinking its own GatedLinear; 100 Adam steps, shrink every 10 up to
    step 80 (gates die from step ~60)."""
    d = 20
    specs = [ModelSpec((12,), seed=0), ModelSpec((20,), seed=1, weight_decay=1e-3),
             ModelSpec((12,), seed=2, lr=3e-3), ModelSpec((9, 5), seed=3)]
    lams = [8e-3, 4e-3, 2e-3, 6e-3]
    bank = MLPBank(specs, d, 10, chunk=7)
    bank.add_modifier(SparsifierGate(lams, penalty=penalty, lr=2e-2))
    opt = BankOptimizer(bank, lr=1e-3)
    naive, naive_opts = [], []
    for s in specs:
        net = NaiveSparsifier(s, d, penalty)
        others = [p for n, p in net.named_parameters() if n != "first.gate"]
        naive.append(net)
        naive_opts.append(torch.optim.Adam([
            {"params": others, "weight_decay": s.weight_decay},
            {"params": [net.first.gate], "lr": 2e-2}], lr=s.lr or 1e-3))
    n_shrinks = 0
    ids = [np.arange(s.width) for s in specs]
    for step, (x, y) in enumerate(batches(100, d=d), start=1):
        bank.zero_grad()
        bank.loss(x, y).sum().backward()
        opt.step()
        for net, o, lam in zip(naive, naive_opts, lams, strict=True):
            o.zero_grad()
            (F.cross_entropy(net(x), y) + lam * net.first.penalty()).backward()
            o.step()
        if step % 10 == 0 and step <= 80:
            keep = bank.modifiers[0].alive_units()
            if not bool(keep.all()):
                n_shrinks += 1
                done = bank.shrink_(keep)
                opt = opt.shrunk(bank, done.kept)
                for m, net in enumerate(naive):
                    removed = net.first.shrink_(net.rest[0], naive_opts[m])
                    # the bank reports original unit ids; the layer, current positions
                    gone = np.isin(np.arange(len(ids[m])), removed.numpy())
                    np.testing.assert_array_equal(done.removed[m].numpy(), ids[m][gone])
                    ids[m] = ids[m][~gone]
    assert n_shrinks >= 2
    widths = [a[0] for a in bank.archs]
    assert all(w > 0 for w in widths)
    assert sum(w < s.width for w, s in zip(widths, specs, strict=True)) >= 3
    with torch.no_grad():
        x, _ = next(batches(1, d=d, seed=5))
        logits = bank(x)
    for m, net in enumerate(naive):
        assert bank.archs[m][0] == net.first.out_features
        params = bank.model_params(m)
        names = [n for n, _, _ in params]
        ref = dict(net.named_parameters())
        mapping = {"layers.0.weight": "first.weight", "layers.0.bias": "first.bias",
                   "modifiers.0.gate": "first.gate"}
        for i in range(1, len(specs[m].hidden) + 1):
            mapping[f"layers.{i}.weight"] = f"rest.{i - 1}.weight"
            mapping[f"layers.{i}.bias"] = f"rest.{i - 1}.bias"
        assert set(names) == set(mapping)
        for name, view, _ in params:
            assert rel_err(view, ref[mapping[name]].detach()) < 2e-5, (m, name)
        with torch.no_grad():
            assert rel_err(logits[:, m], net(x)) < 2e-5


def test_bank_shrink_keeps_outputs_and_layout_matches_a_fresh_bank():
    specs = [ModelSpec((10,), seed=0), ModelSpec((10,), seed=1), ModelSpec((6, 4), seed=2)]
    bank = MLPBank(specs, 8, 10, chunk=3)
    bank.add_modifier(SparsifierGate(1e-3))
    gate = bank.modifiers[0].gate
    with torch.no_grad():
        gate[[1, 2, 13, 20, 21]] = torch.tensor([0.0, -1.0, -0.5, 0.0, -2.0])
    x = torch.randn(16, 8)
    with torch.no_grad():
        before = bank(x)
    done = bank.shrink_(bank.modifiers[0].alive_units())
    assert [r.tolist() for r in done.removed] == [[1, 2], [3], [0, 1]]
    assert bank.archs == [(8,), (9,), (4, 4)] and bank.n_hidden == 21
    assert len(bank.groups) == 3  # the two (10,) models now differ: regrouped
    with torch.no_grad():
        assert rel_err(bank(x), before) < 1e-6
    fresh = MLPBank(specs, 8, 10, chunk=3, widths=[8, 9, 4])
    fresh.add_modifier(SparsifierGate(1e-3))
    fresh.load_state_dict(bank.state_dict())
    fresh.unit_ids = bank.unit_ids.clone()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), bank(x), rtol=0, atol=0)
    # every unit dead: the model keeps its output bias only
    assert bank.modifiers[0].gate is not gate  # shrinking made new tensors
    with torch.no_grad():
        bank.modifiers[0].gate[slice(*bank.slices[2])] = 0.0
    bank.shrink_(bank.modifiers[0].alive_units())
    assert bank.archs[2] == (0, 4)
    with torch.no_grad():
        out = bank(x)[:, 2]
        mlp = bank.export(2)
        b1, (w2, b2) = mlp.layers[1].bias, (mlp.layers[2].weight, mlp.layers[2].bias)
        torch.testing.assert_close(out, (w2 @ F.relu(b1) + b2).expand(16, 10))
        torch.testing.assert_close(mlp(x), out)
    with pytest.raises(UsageError, match="one entry per hidden unit"):
        bank.shrink_(torch.ones(3, dtype=torch.bool))
    with pytest.raises(UsageError, match="each in"):
        MLPBank(specs, 8, 10, widths=[11, 1, 1])
