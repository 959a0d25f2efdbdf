"""The training loop for a user's gated nn.Module: records, shrinking, the price."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from widthlab.engine.modules import ModuleConfig, error_rate, records_frame, train_module
from widthlab.errors import UsageError
from widthlab.nn.surgery import gate_layers, gate_widths


def problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """10 features, the label depends on features 0 and 1 only."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    return x, ((x[:, 0] - x[:, 1]) > 0).long()


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2))
    gate_layers(net, ["0"], inputs=True, example=torch.zeros(2, 10))
    return net


def test_records_widths_and_price():
    net = model()
    recs = train_module(net, problem(512, 0), problem(256, 1), epochs=8, free_epochs=2,
                        price=1e-2, gate_lr=5e-2, lr=1e-2, batch_size=32)
    assert [r["epoch"] for r in recs] == list(range(1, 9))
    assert [r["price"] for r in recs] == [1e-2] * 6 + [0.0] * 2
    for key in ("0:in", "0"):
        widths = [r["widths"][key] for r in recs]
        assert widths == sorted(widths, reverse=True)
        assert sum(r["removed"][key] for r in recs) == [10, 8][key == "0"] - widths[-1]
    assert recs[-1]["widths"] == gate_widths(net)
    w_in, w_h = recs[-1]["widths"]["0:in"], recs[-1]["widths"]["0"]
    assert recs[-1]["n_params"] == w_h * w_in + w_h + w_h + w_in + 2 * w_h + 2
    assert w_in < 10  # noise features went
    kept = net[0].widthlab_in_gate.index.tolist()
    assert 0 in kept and 1 in kept  # the two informative ones stayed
    assert all(r["epoch_time"] > 0 for r in recs)
    x, y = problem(256, 1)
    wrong = sum(int(net(x[i:i + 1]).argmax() != y[i]) for i in range(len(y)))
    assert recs[-1]["test_error"] == pytest.approx(wrong / len(y))
    assert recs[-1]["test_error"] < 0.1
    frame = records_frame(recs)
    assert list(frame["width/0:in"]) == [r["widths"]["0:in"] for r in recs]


def test_sgd_without_shrink_keeps_widths():
    net = model(1)
    cfg = ModuleConfig(epochs=2, price=1e-1, optimizer="sgd", lr=0.1, shrink=False,
                       schedule="cosine")
    recs = train_module(net, problem(128, 2), problem(64, 3), cfg)
    assert [r["widths"] for r in recs] == [{"0:in": 10, "0": 8}] * 2
    assert all(r["removed"] == {} for r in recs)


def test_test_error_restores_mode_and_config_errors():
    net = model().train()
    x, y = problem(50, 4)
    err = error_rate(net, x, y, batch=7)
    assert net.training
    assert err == pytest.approx(float((net.eval()(x).argmax(-1) != y).float().mean()))
    with pytest.raises(UsageError, match="unknown optimizer"):
        ModuleConfig(optimizer="lbfgs")
    with pytest.raises(UsageError, match="free_epochs"):
        ModuleConfig(epochs=2, free_epochs=3)


def test_warmup_epochs_train_without_the_price():
    net = model(2)
    recs = train_module(net, problem(128, 5), problem(64, 6), epochs=5, warmup_epochs=2,
                        free_epochs=1, price=1e-2, batch_size=32)
    assert [r["price"] for r in recs] == [0.0, 0.0, 1e-2, 1e-2, 0.0]
    with pytest.raises(UsageError, match="warmup_epochs"):
        ModuleConfig(epochs=4, free_epochs=2, warmup_epochs=3)


def test_price_scale_multiplies_a_gates_penalty():
    net = model(3)
    gate = net[0].widthlab_in_gate
    plain = gate.penalty().item()
    gate.price_scale = 3.0
    assert gate.penalty().item() == pytest.approx(3 * plain)
    gate.price_scale = 0.0
    assert gate.penalty().item() == 0.0
    with pytest.raises(UsageError, match="price_scale"):
        type(gate)(4, dim=-1, key="k", price_scale=-1.0)


def test_ramp_epochs_raise_the_price_linearly():
    net = model(4)
    recs = train_module(net, problem(64, 7), problem(32, 8), epochs=7, warmup_epochs=1,
                        ramp_epochs=3, free_epochs=2, price=3e-2, batch_size=32)
    assert [r["price"] for r in recs] == pytest.approx([0.0, 1e-2, 2e-2, 3e-2, 3e-2, 0.0, 0.0],
                                                       abs=1e-15)
    with pytest.raises(UsageError, match="ramp_epochs"):
        ModuleConfig(ramp_epochs=-1)


def _reference_epoch(state: dict, x, y, order, lr: float, batch: int) -> dict:
    """One SGD epoch of the input-gated MLP with its hard-concrete gate fixed at the
    evaluation value, written out in float64 tensors (no gate module)."""
    la = state["0.widthlab_in_gate.gate"]
    s = (torch.sigmoid(la) * 1.2 - 0.1).clamp(0, 1)
    idx = state["0.widthlab_in_gate.index"]
    w = {k: state[k].clone().requires_grad_(True) for k in ("0.weight", "0.bias", "2.weight",
                                                           "2.bias")}
    for i in range(0, len(y), batch):
        b = order[i:i + batch]
        h = torch.relu((x[b][:, idx] * s) @ w["0.weight"].T + w["0.bias"])
        loss = nn.functional.cross_entropy(h @ w["2.weight"].T + w["2.bias"], y[b])
        grads = torch.autograd.grad(loss, list(w.values()))
        with torch.no_grad():
            for t, g in zip(w.values(), grads, strict=True):
                t -= lr * g
    return {k: t.detach() for k, t in w.items()}


def test_fix_gates_fine_tunes_the_weights_at_the_deterministic_gates():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    gate_layers(net, ["0"], inputs="only", kind="hard_concrete", seed=3,
                example=torch.zeros(2, 10, dtype=torch.float64))
    gate = net[0].widthlab_in_gate
    (x, y), test = problem(96, 9), problem(32, 10)
    x, test = x.double(), (test[0].double(), test[1])
    states = []
    cfg = ModuleConfig(epochs=3, free_epochs=1, fix_gates=True, price=5e-2, optimizer="sgd",
                       momentum=0.0, lr=0.1, batch_size=32, seed=11)
    train_module(net, (x, y), test, cfg, on_epoch=lambda r: states.append(
        ({k: v.clone() for k, v in net.state_dict().items()}, gate.noise.get_state())))
    before, after = states[1][0], states[2][0]
    assert torch.equal(after["0.widthlab_in_gate.gate"], before["0.widthlab_in_gate.gate"])
    assert torch.equal(states[2][1], states[1][1])  # no noise drawn in the fixed epoch
    assert gate.gate.requires_grad and net.training
    assert not torch.equal(states[1][0]["0.weight"], states[0][0]["0.weight"])
    gen = torch.Generator().manual_seed(11)
    orders = [torch.randperm(len(y), generator=gen) for _ in range(3)]
    ref = _reference_epoch(before, x, y, orders[2], 0.1, 32)
    for k, v in ref.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=1e-12)
    # without fix_gates the last epoch draws noise and moves the gates
    torch.manual_seed(5)
    net2 = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    gate_layers(net2, ["0"], inputs="only", kind="hard_concrete", seed=3,
                example=torch.zeros(2, 10, dtype=torch.float64))
    train_module(net2, (x, y), test, cfg, fix_gates=False)
    assert not torch.equal(net2[0].weight, net[0].weight)
