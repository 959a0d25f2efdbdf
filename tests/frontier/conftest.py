"""Small models and synthetic data for the frontier tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv -> pool -> flatten -> fc1 (ReLU, dropout) -> fc2: a CNN with a classifier head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.fc1 = nn.Linear(4 * 4 * 4, 24)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(24, 3)

    def forward(self, x):
        x = self.features(x).flatten(1)
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.block = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(h + torch.relu(self.block(h)))


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 8)
        self.a = nn.Linear(8, 3)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return self.a(h) + self.b(h)


def fit(model: nn.Module, x, y, steps: int = 100, seed: int = 0) -> nn.Module:
    """A few full-batch Adam steps, so the layers are not random."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def blobs(n: int, d: int, c: int, seed: int):
    """Gaussian clusters: ``c`` classes in ``d`` dimensions, overlapping a little."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(c, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g), y


@pytest.fixture(scope="module")
def mlp2():
    """A trained user nn.Sequential with two hidden layers (0 and 2), and its data."""
    torch.manual_seed(0)
    x, y = blobs(600, 10, 4, 0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 20), nn.ReLU(),
                          nn.Linear(20, 4))
    fit(model, x[:300], y[:300])
    return model, (x[:300], y[:300]), (x[300:], y[300:])


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (240,), generator=g)
    x = torch.randn(240, 1, 8, 8, generator=g)
    x[:, 0, 2 * y, :] += 2.0  # the class is a bright row
    model = fit(SmallCNN(), x[:120], y[:120])
    return model, (x[:120], y[:120]), (x[120:], y[120:])
