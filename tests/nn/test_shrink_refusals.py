"""Issue 30: shrink_ refuses before cutting (the model stays whole and usable), and a model
shrunk without its optimizer fails clearly at that optimizer's next step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.nn.surgery import gate_layers, shrink_
from widthlab.nn.surgery import shrink as shrink_module


def _gated():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    (gate,) = gate_layers(model, ["0"], example=torch.zeros(2, 6))
    with torch.no_grad():
        gate.gate[[1, 4, 9, 13]] = -1.0  # four dead units: 16 -> 12
    return model, gate


def _train_step(model, opt, x):
    def closure():
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss
    opt.step(closure)


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.LBFGS(ps, lr=0.1),
    lambda ps: torch.optim.Adafactor(ps, lr=1e-2),
    lambda ps: torch.optim.SparseAdam(ps),
], ids=["lbfgs", "adafactor", "unknown"])
def test_refused_optimizer_leaves_the_model_whole(make):
    model, gate = _gated()
    x = torch.randn(8, 6)
    opt = make(list(model.parameters()))
    if not isinstance(opt, torch.optim.SparseAdam):
        _train_step(model, opt, x)
        with torch.no_grad():
            gate.gate[[1, 4, 9, 13]] = -1.0
    model.eval()  # a training forward would update the gates' flip statistics
    before, out = _snapshot(model), model(x)
    with pytest.raises(UsageError, match="the model was not changed") as info:
        shrink_(model, opt)
    assert type(opt).__name__ in str(info.value)
    after = _snapshot(model)
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert model[0].out_features == 16 and gate.width == 16
    torch.testing.assert_close(model(x), out, rtol=0, atol=0)


def test_failure_half_way_puts_every_cut_back(monkeypatch):
    """A refusal raised after the layers were cut (here: when the gates are cut) is
    undone: shapes, values, gradients and Adam's state are as before."""
    model, gate = _gated()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(8, 6)
    _train_step(model, opt, x)
    with torch.no_grad():
        gate.gate[[1, 4, 9, 13]] = -1.0
    before = _snapshot(model)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    state = {n: {k: v.clone() for k, v in opt.state[p].items()}
             for n, p in model.named_parameters()}

    def refuse(*args):
        raise UsageError("cannot follow this consumer")
    monkeypatch.setattr(shrink_module, "_cut_gate", refuse)  # after remove_units
    with pytest.raises(UsageError, match="cannot follow"):
        shrink_(model, opt)
    for k, v in _snapshot(model).items():
        assert torch.equal(v, before[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
        for k, v in opt.state[p].items():
            assert torch.equal(v, state[n][k]), (n, k)
    assert model[0].out_features == 16 and model[2].in_features == 16
    _train_step(model, opt, x)  # the model and its optimizer still train
    monkeypatch.undo()
    with torch.no_grad():
        gate.gate[[1, 4, 9, 13]] = -1.0
    assert shrink_(model, opt) == {"0": 4}
    assert model(x).shape == (8, 3)


def test_shrink_without_its_optimizer_fails_clearly_at_step():
    model, _ = _gated()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(8, 6)
    _train_step(model, opt, x)
    assert shrink_(model) == {"0": 4}
    with pytest.raises(UsageError, match=r"shrink_\(model, optimizer\)"):
        _train_step(model, opt, x)
    fresh = torch.optim.Adam(model.parameters(), lr=1e-2)  # a new optimizer is fine
    _train_step(model, fresh, x)
    assert model[0].weight.shape == (12, 6)


def test_optimizer_of_another_model_is_refused():
    model, _ = _gated()
    other = nn.Linear(3, 3)
    with pytest.raises(UsageError, match="holds none of the model's parameters"):
        shrink_(model, torch.optim.Adam(other.parameters()))
    assert model[0].out_features == 16
