"""What shrink_ can follow and the errors for what it cannot; the removal rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from widthlab.errors import UsageError
from widthlab.nn.surgery import (
    SignFlipRule,
    UnitGate,
    gate_layers,
    gate_widths,
    get_rule,
    shrink_,
)

X4 = torch.zeros(2, 4)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(F.relu(self.b(F.relu(self.a(x))) + x))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.cat([self.a(x), self.b(x)], dim=1))


class Stream(Residual):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)

    def forward(self, x):
        h = self.stem(x)
        return self.out(F.relu(self.b(F.relu(self.a(h))) + h))


def test_residual_add_is_named():
    with pytest.raises(UsageError, match=r"'b'.*residual stream.*groups=\['stream:model'\]"):
        gate_layers(Stream(), ["b"], example=X4)
    with pytest.raises(UsageError, match=r"'b'.*model's output"):  # the stream is the input
        gate_layers(Residual(), ["b"], example=X4)


def test_no_example_is_a_clear_error():
    with pytest.raises(UsageError, match=r"example=x\[:2\]"):
        gate_layers(Residual(), ["a"], inputs="only")
    assert gate_widths(Residual()) == {}


def test_concat_couples_both_layers():
    """The units core follows the concat: a's and b's units are one group (out's columns);
    a gate on a alone would not remove it, so it is refused naming b and the group."""
    with pytest.raises(UsageError, match=r"'a' into module 'b'.*groups=\['a:out'\]"):
        gate_layers(Concat(), ["a"], example=X4)


def test_model_output_and_batchnorm_after_gate_are_refused():
    seq = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.BatchNorm1d(5), nn.Linear(5, 2))
    with pytest.raises(UsageError, match="model's output"):
        gate_layers(seq, ["3"], example=X4)
    with pytest.raises(UsageError, match="BatchNorm1d"):
        gate_layers(seq, ["0"], example=X4)
    unflat = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Linear(6, 2))
    with pytest.raises(UsageError, match="model's output"):  # channels reach the output
        gate_layers(unflat, ["0"], example=torch.zeros(2, 1, 8, 8))
    sig = nn.Sequential(nn.Linear(4, 5), nn.Sigmoid(), nn.Linear(5, 2))
    with pytest.raises(UsageError, match="Sigmoid"):
        gate_layers(sig, ["0"], example=X4)
    assert gate_widths(seq) == gate_widths(sig) == {}  # nothing attached


def test_bad_names_and_layers():
    seq = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(UsageError, match="no submodule named 'fc'"):
        gate_layers(seq, ["fc"], example=X4)
    with pytest.raises(UsageError, match="ReLU"):
        gate_layers(seq, ["1"], example=X4)
    gate_layers(seq, ["0"], example=X4)
    with pytest.raises(UsageError, match="already have a gate"):
        gate_layers(seq, ["0"], example=X4)
    # the input gate of "2" would sit on the units "0" already gates: skipped, not doubled
    assert [g.key for g in gate_layers(seq, ["2"], inputs="only", example=X4)] == []


def test_input_gate_kinds():
    """Input gates own the producer's units when only this layer reads them; else select."""
    seq = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.0), nn.Linear(5, 2))
    plain = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.0), nn.Linear(5, 2))
    plain.load_state_dict(seq.state_dict())
    gates = gate_layers(seq, ["0", "3"], inputs="only", example=torch.zeros(2, 6))
    assert [(g.key, g.selects, g.width) for g in gates] == [("0:in", True, 6),
                                                           ("3:in", False, 5)]
    with torch.no_grad():
        gates[1].gate[[1, 3]] = -1.0  # "3:in" owns "0"'s units: they leave "0" too
    x = torch.randn(3, 6)
    before = seq(x)
    assert shrink_(seq) == {"0:in": 0, "3:in": 2}
    assert seq[0].weight.shape == (3, 6) and seq[3].weight.shape == (2, 3)
    torch.testing.assert_close(seq[0].weight.detach(), plain[0].weight[[0, 2, 4]].detach())
    torch.testing.assert_close(seq(x), before, atol=1e-6, rtol=0)
    (gate,) = gate_layers(Residual(), ["b"], inputs="only", example=X4)  # relu(a(x)): b only
    assert not gate.selects
    (gate,) = gate_layers(TwoHeads(), ["c1"], inputs="only",
                          example=torch.zeros(2, 3))  # relu(p(x)) feeds c1 and c2
    assert gate.selects and gate.width == 4


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.p, self.c1, self.c2 = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(self.p(x))
        return self.c1(h), self.c2(h)


def test_all_dead_keeps_one_switched_off_unit():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    (gate,) = gate_layers(seq, ["0"], example=torch.zeros(2, 3))
    x = torch.randn(5, 3)
    with torch.no_grad():
        gate.gate.fill_(-1.0)
        before = seq(x)
    assert shrink_(seq) == {"0": 3}
    assert gate_widths(seq) == {"0": 1} and seq[2].weight.shape == (2, 1)
    torch.testing.assert_close(seq(x), before, atol=1e-7, rtol=0)


def test_a_gate_emptied_by_the_channel_before_it_is_left_alone():
    # the Linear reads only channel 1's features; when channel 1 dies, they go with it and
    # the Linear's input gate is left without units (it has nothing more to remove)
    cnn = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    gate_layers(cnn, ["0"], example=torch.zeros(2, 1, 6, 6))
    gate_layers(cnn, ["3"], inputs="only", example=torch.zeros(2, 1, 6, 6))
    gates = {g.key: g for g in cnn.modules() if isinstance(g, UnitGate)}
    x = torch.randn(5, 1, 6, 6)
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-3)
    cnn(x).sum().backward()
    opt.step()
    with torch.no_grad():
        gates["3:in"].gate[:16] = -1.0
        gates["3:in"].gate[32:] = -1.0
    shrink_(cnn, opt)
    assert gate_widths(cnn) == {"0": 3, "3:in": 16}
    with torch.no_grad():
        gates["0"].gate[1] = -1.0
        before = cnn(x)
    shrink_(cnn, opt)
    assert gate_widths(cnn) == {"0": 2, "3:in": 0} and cnn[3].weight.shape == (2, 0)
    torch.testing.assert_close(cnn(x), before, atol=1e-7, rtol=0)  # the bias alone
    cnn(x).sum().backward()
    opt.step()  # training goes on
    assert shrink_(cnn, opt)["3:in"] == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=6, max_size=6),
       st.lists(st.booleans(), min_size=5, max_size=5),
       st.lists(st.integers(0, 79), max_size=30), st.integers(0, 2**16))
def test_random_kills_keep_outputs(dead0, dead3, dead6, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 5, 3), nn.ReLU(), nn.MaxPool2d(1), nn.Flatten(),
                          nn.Linear(80, 3)).double().eval()
    gate_layers(model, ["0", "3"], example=torch.zeros(2, 2, 8, 8))
    gate_layers(model, ["7"], inputs="only", example=torch.zeros(2, 2, 8, 8))
    model(torch.randn(4, 2, 8, 8, dtype=torch.float64))
    gates = {g.key: g for g in [model[1].widthlab_out_gate, model[3].widthlab_out_gate,
                                model[7].widthlab_in_gate]}
    with torch.no_grad():
        for key, dead in (("0", dead0), ("3", dead3)):
            gates[key].gate[torch.tensor(dead)] = -1.0
        gates["7:in"].gate[sorted(set(dead6))] = 0.0
    x = torch.randn(7, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        shrink_(model)
        torch.testing.assert_close(model(x), before, atol=1e-10, rtol=0)
    live3 = max(sum(not d for d in dead3), 1)
    assert model[3].weight.shape[0] == live3 and model[7].weight.shape[1] <= 16 * live3
    assert int(gates["7:in"].index.max()) < 16 * live3


def test_smallify_statistics_match_a_naive_loop():
    gate = UnitGate(3, dim=-1, key="g", flip_momentum=0.8).train()
    path = np.array([[1.0, 0.5, 0.2], [-1.0, 0.4, 0.1], [1.0, 0.3, -0.1], [-1.0, 0.2, 0.1],
                     [1.0, 0.1, -0.1], [-1.0, 0.1, 0.1]])
    m, v = np.ones(3), np.zeros(3)
    for row in path:
        with torch.no_grad():
            gate.gate.copy_(torch.tensor(row))
        gate(torch.ones(2, 3))
        s = np.sign(row)
        m = 0.8 * m + 0.2 * s
        v = 0.8 * v + 0.2 * (s - m) ** 2
    np.testing.assert_allclose(gate.flip_mean.numpy(), m, rtol=1e-6)
    np.testing.assert_allclose(gate.flip_var.numpy(), v, rtol=1e-6)
    threshold = float(np.sort(v)[1] + np.sort(v)[2]) / 2  # between the two largest
    want = (v > threshold) | (path[-1] <= 0)
    assert SignFlipRule(threshold).dead(gate).tolist() == want.tolist()
    assert get_rule("dead").dead(gate).tolist() == (path[-1] <= 0).tolist()


def test_smallify_removes_oscillating_units():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    (gate,) = gate_layers(seq, ["0"], example=torch.zeros(2, 3))
    gate.flip_var.copy_(torch.tensor([0.9, 0.1, 0.6, 0.0]))
    assert shrink_(seq, rule=SignFlipRule(0.5)) == {"0": 2}
    assert gate.flip_var.tolist() == pytest.approx([0.1, 0.0])
    with pytest.raises(UsageError, match="unknown removal rule"):
        shrink_(seq, rule="magnitude")


def test_data_dependent_control_flow_is_traced_eagerly():
    """No torch.fx: a forward with a data-dependent branch is traced on the example (the
    branch the example takes), and a layer called twice is refused."""
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = F.relu(self.a(x))
            return self.b(h) if x.sum() >= 0 else self.b(h).neg()

    (gate,) = gate_layers(Branchy(), ["a"], example=torch.zeros(2, 3))
    assert gate.width == 4

    class Twice(Branchy):
        def forward(self, x):
            return self.b(F.relu(self.a(x))) + self.b(F.relu(self.a(x)))

    with pytest.raises(UsageError, match="called 2 times"):
        gate_layers(Twice(), ["a"], example=torch.zeros(2, 3))
