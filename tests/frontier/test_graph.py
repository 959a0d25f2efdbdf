"""Finding the consumer of a layer with torch.fx, and refusing what cannot be cut."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier.graph import consumer_inputs, trace_layer
from widthlab.nn.bank import MLP

from .conftest import Residual, SmallCNN, TwoHeads


def test_sequential_each_hidden_layer():
    m = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Dropout(0.5), nn.Linear(7, 6), nn.Tanh(),
                      nn.Linear(6, 3))
    p0, p1 = trace_layer(m, "0"), trace_layer(m, "3")
    assert (p0.consumer, p0.ops) == ("3", ("1 (ReLU)", "2 (Dropout)"))
    assert (p1.consumer, p1.ops, p1.suffix) == ("5", ("4 (Tanh)",), None)
    z = torch.randn(4, 6)  # the suffix of layer 0 is Tanh -> Linear 5
    torch.testing.assert_close(p0.suffix(z), m[5](torch.tanh(z)))


def test_widthlab_mlp_and_cnn_head():
    p = trace_layer(MLP([5, 7, 6, 3]), "layers.0")
    assert p.consumer == "layers.1" and p.suffix is not None
    q = trace_layer(SmallCNN(), "fc1")
    assert q.consumer == "fc2" and q.suffix is None and len(q.ops) == 2


def test_consumer_inputs_are_what_the_consumer_reads():
    torch.manual_seed(0)
    m = SmallCNN().double().eval()  # float64: blocks of 4 and of 9 agree to rounding
    x = torch.randn(9, 1, 8, 8, dtype=torch.float64)
    a = consumer_inputs(m, trace_layer(m, "fc1"), x, batch=4)
    ref = torch.relu(m.fc1(m.features(x).flatten(1)))
    torch.testing.assert_close(a, ref)
    assert a.dtype == torch.float64 and m.training is False
    at = consumer_inputs(m, trace_layer(m, "fc1"), x, batch=4, neuron_major=True)
    assert at.shape == (ref.shape[1], 9) and at.is_contiguous()
    assert torch.equal(at, a.t())  # the same values, written transposed batch by batch


@pytest.mark.parametrize(("model", "layer", "match"), [
    (Residual(), "inp", "feeds 2 operations"),
    (Residual(), "block", "not an element-wise operation"),
    (TwoHeads(), "body", r"several consumers"),
    (nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)), "2", "model's output"),
    (nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2)), "0", "LayerNorm"),
    (nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)), "1", "is a ReLU"),
    (nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)), "fc9", "nn.Linear layers: 0, 2"),
])
def test_refusals_name_the_problem(model, layer, match):
    with pytest.raises(UsageError, match=match):
        trace_layer(model, layer)


def test_a_layer_called_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(4, 4)
            self.g = nn.Linear(4, 2)

        def forward(self, x):
            return self.g(self.f(torch.relu(self.f(x))))

    with pytest.raises(UsageError, match="called 2 times"):
        trace_layer(Twice(), "f")
