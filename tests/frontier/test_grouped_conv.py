"""Grouped and depthwise convolutions in a group's path, against brute-force least squares.

``widthlab.units`` makes a whole conv group one unit (its input channels, from the producer,
and its output channels): a grouped or depthwise conv passes the group's units through, and the
consumer that is refitted is the layer reading its outputs. Here that consumer is a 3x3 conv
(stride 1 or 2): each unit is ``channels per conv group x 9`` im2col columns of it. The
reference recomputes the consumer's inputs with its own forward, builds the patches by an
explicit loop and runs the greedy elimination by brute-force numpy float64 least squares.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from widthlab.frontier.models import apply_cut, model_frontier
from widthlab.units import build_graph

pytestmark = pytest.mark.usefixtures("one_thread")
D = torch.float64


class _Net(nn.Module):
    def __init__(self, groups: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, dtype=D)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=groups, dtype=D)
        self.c3 = nn.Conv2d(8, 5, 3, stride=stride, padding=1, dtype=D)
        self.fc = nn.Linear(5, 4, dtype=D)

    def inner(self, x):
        return torch.relu(self.c2(torch.relu(self.c1(x))))

    def forward(self, x):
        return self.fc(torch.relu(self.c3(self.inner(x))).mean((2, 3)))


def _patches(x: np.ndarray, stride: int) -> np.ndarray:
    """3x3, padding 1 im2col by loops: rows (B*L, C*9), channel-major columns."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h = x.shape[2]
    return np.array([xp[n, :, i:i + 3, j:j + 3].reshape(-1) for n in range(len(x))
                     for i in range(0, h, stride) for j in range(0, h, stride)])


def _greedy(A: np.ndarray, Z: np.ndarray, blocks: list[list[int]]):
    """Remove the unit whose removal (refit with an intercept) errs least, repeatedly."""
    ones = A.shape[1] - 1
    alive, order, incs, fits, prev = list(range(len(blocks))), [], [], {}, 0.0
    while len(alive) > 1:
        best = None
        for u in alive:
            keep = sorted(c for v in alive if v != u for c in blocks[v]) + [ones]
            sol = np.linalg.lstsq(A[:, keep], Z, rcond=None)[0]
            err = ((A[:, keep] @ sol - Z) ** 2).mean(0).sum()
            if best is None or err < best[0]:
                best = (err, u, keep, sol)
        alive.remove(best[1])
        order.append(best[1])
        incs.append(best[0] - prev)
        prev = best[0]
        fits[len(alive)] = (best[2], best[3])
    return order, incs, fits


@pytest.mark.parametrize(("groups", "stride"), [(2, 1), (4, 2), (8, 1), (8, 2)])
def test_grouped_and_depthwise_paths_refit_the_reader_exactly(groups, stride):
    torch.manual_seed(groups + stride)
    net = _Net(groups, stride).eval()
    x = torch.randn(24, 3, 6, 6, dtype=D)
    y = torch.randint(0, 4, (24,))
    graph = build_graph(net, x[:2])
    grp = graph["c1:out"]
    assert grp.size == groups  # one unit per conv group (depthwise: per channel)
    ks = list(range(1, groups + 1))
    fr = model_frontier(net, graph, grp, (x[:16], y[:16]), (x[16:], y[16:]), ks=ks, damp=0.0)
    assert (fr.used, fr.compensated) == ("obs", True)
    assert [s.module for s in fr.sites] == ["c3"]
    with torch.no_grad():
        xin = net.inner(x[:16]).numpy()
    P = _patches(xin, stride)
    A = np.hstack([P, np.ones((len(P), 1))])
    w0 = net.c3.weight.detach().numpy().reshape(5, -1)
    Z = A @ np.hstack([w0, net.c3.bias.detach().numpy()[:, None]]).T
    per = 8 // groups
    blocks = [[c * 9 + t for c in range(u * per, (u + 1) * per) for t in range(9)]
              for u in range(groups)]
    order, incs, fits = _greedy(A, Z, blocks)
    assert fr.frontier.order[:-1] == order
    np.testing.assert_allclose(fr.frontier.costs[:-1], incs, rtol=1e-8, atol=1e-8 * max(incs))
    for k, (keep, sol) in fits.items():
        m2, g2 = copy.deepcopy(net), copy.deepcopy(graph)
        apply_cut(m2, g2, fr, k)
        assert m2.c2.groups == (k if groups > 1 else 1) and m2.c3.in_channels == k * per
        got = np.hstack([m2.c3.weight.detach().numpy().reshape(5, -1),
                         m2.c3.bias.detach().numpy()[:, None]])
        np.testing.assert_allclose(got, sol.T, rtol=1e-8, atol=1e-8 * np.abs(sol).max())
        # the cut model computes what the refit predicts: the reader's output on kept inputs
        with torch.no_grad():
            z_cut = F.conv2d(m2.inner(x[:16]), m2.c3.weight, m2.c3.bias, stride, 1)
        z_ref = (A[:, keep] @ sol).reshape(16, -1, 5).transpose(0, 2, 1)
        np.testing.assert_allclose(z_cut.reshape(16, 5, -1).numpy(), z_ref, rtol=1e-8,
                                   atol=1e-8 * np.abs(z_ref).max())
