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
