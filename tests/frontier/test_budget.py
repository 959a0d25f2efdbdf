"""The whole-network budget: the heap allocation against a naive rescan of every group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier.blocks import linear_consumer
from widthlab.frontier.budget import allocate, fewest_removals, loss_scale
from widthlab.frontier.group import group_frontier


def _naive(groups, target, amount, min_width):
    width = {n: len(c) for n, (c, _, _) in groups.items()}
    nxt = dict.fromkeys(groups, 0)
    total = sum(len(c) * s for c, _, s in groups.values())
    saved = lost = 0.0
    widths_curve = []
    while True:
        best = None
        for n, (c, sc, sv) in groups.items():
            if width[n] <= min_width:
                continue
            d = sc * c[nxt[n]]
            key = d if target == "loss" else d / sv
            if best is None or key < best[0] or (key == best[0] and n < best[1]):
                best = (key, n, d, sv)
        if best is None or (target != "loss" and saved >= amount * total - 1e-12 * total):
            break
        _, n, d, sv = best
        if target == "loss" and lost + d > amount:
            break
        lost, saved = lost + d, saved + sv
        width[n] -= 1
        nxt[n] += 1
        widths_curve.append((saved, lost))
    return width, widths_curve


@pytest.mark.parametrize("target,amount",
                         [("loss", 3.0), ("params", 0.4), ("macs", 0.6), ("macs", 0.9),
                          ("latency", 0.5)])
def test_allocation_matches_a_naive_rescan(target, amount):
    rng = np.random.default_rng(0)
    groups = {f"g{i}": (list(rng.exponential(size=n)), float(rng.uniform(0.2, 2)),
                        float(rng.integers(1, 9)))
              for i, n in enumerate((7, 12, 5))}
    plan = allocate(groups, target=target, amount=amount, min_width=2)
    width, curve = _naive(groups, target, amount, 2)
    assert plan.widths == width
    np.testing.assert_allclose(np.array(plan.curve), np.array(curve), rtol=1e-12)
    assert min(plan.widths.values()) >= 2
    if target == "loss":
        assert curve[-1][1] <= amount
    else:  # 0.9 is out of reach with 2 units left per group: all the way down, not met
        total = sum(len(c) * s for c, _, s in groups.values())
        assert plan.met == (amount < 0.9)
        assert (curve[-1][0] >= amount * total) == plan.met
        assert plan.met or plan.widths == dict.fromkeys(groups, 2)


def test_allocation_prefers_the_group_whose_units_cost_less_loss():
    """Two Linear groups, one reading redundant (duplicated + noise) units, one independent
    units: at half the parameters, most removals go to the redundant group."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(500, 4, generator=g, dtype=torch.float64)
    red = torch.cat([base, base + 0.01 * torch.randn(500, 4, generator=g, dtype=torch.float64)], 1)
    ind = torch.randn(500, 8, generator=g, dtype=torch.float64)
    la, lb = nn.Linear(8, 3, dtype=torch.float64), nn.Linear(8, 3, dtype=torch.float64)
    fa = group_frontier([linear_consumer(la, red)], 8, ks=[8])
    fb = group_frontier([linear_consumer(lb, ind)], 8, ks=[8])
    plan = allocate({"red": (fa.costs, 1.0, 3.0), "ind": (fb.costs, 1.0, 3.0)},
                    target="params", amount=0.25)
    assert plan.widths == {"red": 4, "ind": 8}


def test_loss_scale_and_bad_input():
    gz = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    assert loss_scale(gz) == pytest.approx((1 + 4 + 9 + 0) / 4 / 2)
    with pytest.raises(UsageError, match="target"):
        allocate({"a": ([1.0, 2.0], 1.0, 1.0)}, target="seconds", amount=0.1)
    with pytest.raises(UsageError, match="fraction"):
        allocate({"a": ([1.0, 2.0], 1.0, 1.0)}, target="params", amount=2)


def test_fewest_removals_equals_a_linear_scan():
    """The bisection against the first k that a plain scan finds, on random non-increasing
    cost curves; an unreachable target names the floor."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 30))
        curve = (1000 - np.cumsum(np.r_[0, rng.integers(0, 50, n)])).tolist()
        target = int(rng.integers(curve[-1], 1001))
        want = next(k for k in range(n + 1) if curve[k] <= target)
        assert fewest_removals(curve.__getitem__, n, curve[0], target, "{floor}") == want
    with pytest.raises(UsageError, match="still 900"):
        fewest_removals([1000, 900].__getitem__, 1, 1000, 10, "still {floor}")
