"""Item 8: importance and proxies refuse a model whose activation is not ReLU (or cannot be
told) and a model without parameters, with one clear line; ReLU models give the same numbers
as before, checked against a naive float64 loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.metrics import importance as imp
from widthlab.nn.bank import MLP

X = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
Y = torch.arange(64) % 4


class TanhMLP(MLP):
    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.tanh(layer(x))
        return self.layers[-1](x)


class Declared(nn.Module):
    def __init__(self, activation):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(6, 5), nn.Linear(5, 4)])
        self.activation = activation


class WithModules(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(6, 5), nn.Linear(5, 4)])
        self.act = act


class Empty(nn.Module):
    layers: list = []


CALLS = {
    "exact_importance": lambda m: imp.exact_importance(m, X, Y),
    "naive_importance": lambda m: imp.naive_importance(m, X, Y),
    "proxies": lambda m: imp.proxies(m, X, Y),
    "keep_neurons": lambda m: imp.keep_neurons(m, [0, 1]),
    "topk_accuracy": lambda m: imp.topk_accuracy(m, X, Y, {"a": np.arange(5)}, [2]),
    "dense_latency": lambda m: imp.dense_latency(m, X, [2], repeats=1),
}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("model, words", [
    (TanhMLP([6, 5, 4]), "unknown activation"),
    (Declared("tanh"), "activation 'tanh'"),
    (Declared(nn.Sigmoid()), "activation 'sigmoid'"),
    (WithModules(nn.GELU()), "activation 'gelu'"),
    (nn.Module(), "has no parameters"),
    (Empty(), "has no parameters"),
])
def test_unsupported_models_are_refused(call, model, words):
    with pytest.raises(UsageError, match=words) as info:
        CALLS[call](model)
    msg = str(info.value)
    assert "; " in msg and "\n" not in msg


def _naive(model: nn.Module) -> np.ndarray:
    """The loss increase of zeroing each hidden unit, one float64 forward pass per unit."""
    w0, b0 = (p.detach().double().numpy() for p in model.layers[0].parameters())
    w1, b1 = (p.detach().double().numpy() for p in model.layers[1].parameters())
    x, y = X.double().numpy(), Y.numpy()

    def loss(mask):
        z = (np.maximum(x @ w0.T + b0, 0) * mask) @ w1.T + b1
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))

    base = loss(np.ones(5))
    return np.array([loss(np.eye(5)[j] == 0) - base for j in range(5)])


@pytest.mark.parametrize("model", [MLP([6, 5, 4], seed=3), Declared("relu"),
                                   Declared(nn.ReLU()), WithModules(nn.ReLU())])
def test_relu_models_are_scored_exactly(model):
    np.testing.assert_allclose(imp.exact_importance(model, X, Y), _naive(model), atol=1e-12)
    assert imp.activation_of(model) == "relu"
