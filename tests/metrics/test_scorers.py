"""The scorer objects of widthlab.units.scores against naive numpy float64 loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from widthlab.errors import UsageError
from widthlab.frontier.blocks import BlockConsumer, row_stats
from widthlab.frontier.group import OBS, group_frontier
from widthlab.units.scores import (
    Activation,
    Column,
    ExactCost,
    Flap,
    Magnitude,
    Moments,
    Random,
    ScoreGroup,
    Taylor,
    Variance,
    WandaSP,
    dead_units,
    removal_costs,
    scorer,
)

U = 5  # units; consumer A reads them through 2 columns each, consumer B through 1 (units 1..4)


def problem(seed=0):
    g = np.random.default_rng(seed)
    xa = g.normal(size=(200, 12))
    xa[:, 10:] = 0.0  # unit 0 of A (columns 10, 11) is dead
    xb = g.normal(size=(200, 4)) + 1.0
    cols_a = np.array([[10, 11], [0, 1], [2, 3], [4, 5], [6, 7]])
    cols_b = np.array([[0], [1], [2], [3]])
    units_b = np.array([1, 2, 3, 4])
    wa, wb = g.normal(size=(3, 12)), g.normal(size=(2, 4))
    ga, gb = g.normal(size=(3, 12)), g.normal(size=(2, 4))

    def cons(w, grad, x, cols, units):
        t = torch.from_numpy
        return BlockConsumer(t(w), None, t(cols), t(units), row_stats(t(x)), t(grad))

    group = ScoreGroup([cons(wa, ga, xa, cols_a, np.arange(U)),
                        cons(wb, gb, xb, cols_b, units_b)], U)
    raw = [(wa, ga, xa, cols_a, np.arange(U)), (wb, gb, xb, cols_b, units_b)]
    return group, raw


def naive(raw, per_col, reduce="sum"):
    out, cnt = np.zeros(U), np.zeros(U)
    for w, g, x, cols, units in raw:
        v = per_col(w, g, x)
        for u, c in zip(units, cols, strict=True):
            for j in c:
                out[u] += v[j]
            cnt[u] += 1  # "mean": the block sums averaged over the consumers
    return out / cnt if reduce == "mean" else out


@pytest.mark.parametrize(("obj", "per_col", "reduce"), [
    (Magnitude(), lambda w, g, x: (w ** 2).sum(0), "sum"),
    (Activation(), lambda w, g, x: np.abs(x).mean(0), "mean"),
    (Variance(), lambda w, g, x: x.std(0), "mean"),
    (WandaSP(), lambda w, g, x: np.abs(w).sum(0) * np.sqrt((x ** 2).mean(0)), "sum"),
    (Flap(), lambda w, g, x: x.var(0) * (w ** 2).sum(0), "sum"),
])
def test_scorers_equal_their_formulas(obj, per_col, reduce):
    group, raw = problem()
    np.testing.assert_allclose(obj(group).numpy(), naive(raw, per_col, reduce), rtol=1e-12,
                               atol=1e-14)


def test_taylor_from_weight_grads_and_from_activation_grads():
    group, raw = problem()
    ref = np.abs(naive(raw, lambda w, g, x: (g * w).sum(0)))
    np.testing.assert_allclose(Taylor()(group).numpy(), ref, rtol=1e-12)
    # the per-neuron form: a Linear consumer (D, H) of h with dl/dz = delta gives dL/dW =
    # delta^T h / N, so sum_c dL/dW_cj W_cj = E[h_j (delta . W_:j)] = E[h_j dl/dh_j]
    gen = np.random.default_rng(1)
    h, delta, w = gen.random((50, 6)), gen.normal(size=(50, 3)), gen.normal(size=(3, 6))
    t = torch.from_numpy
    by_grad = Taylor()(ScoreGroup([Column(t(w), t(delta.T @ h / 50))], 6))
    act_grad = (h * (delta @ w)).mean(0)
    m = Moments(t(h.mean(0)), t((h * h).mean(0)), None, t(act_grad), 50)
    by_act = Taylor()(ScoreGroup([Column(t(w))], 6), [m])
    np.testing.assert_allclose(by_grad.numpy(), by_act.numpy(), rtol=1e-12)
    np.testing.assert_allclose(by_act.numpy(), np.abs(act_grad), rtol=1e-12)


def test_moments_and_dead_units():
    group, raw = problem()
    assert dead_units(group).tolist() == [True, False, False, False, False]
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    x[..., 2] = 3.0
    m = Moments.of(x)
    rows = x.reshape(-1, 4).numpy()
    np.testing.assert_allclose(m.var.numpy(), rows.var(0), atol=1e-12)
    g = ScoreGroup([Column(torch.ones(2, 4, dtype=torch.float64))], 4)
    assert dead_units(g, [m]).tolist() == [False, False, True, False]
    with pytest.raises(UsageError, match="no activation rows"):
        Moments.of(torch.empty(0, 3))


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40_000), value=st.floats(-100, 100, allow_subnormal=False),
       spread=st.sampled_from([0.0, 1e-3, 1.0]))
def test_a_constant_unit_is_dead_whatever_the_row_count(rows, value, spread):
    """E[x^2] - E[x]^2 of a constant column rounds to ~1e-17, not 0 (12,345 rows of 0.3
    did); a column with real spread keeps numpy's two-pass variance."""
    g = torch.Generator().manual_seed(rows)
    x = torch.full((rows, 3), value, dtype=torch.float64)
    x[:, 1] += spread * torch.randn(rows, generator=g, dtype=torch.float64)
    m = Moments.of(x)
    group = ScoreGroup([Column(torch.ones(2, 3, dtype=torch.float64))], 3)
    dead = dead_units(group, [m]).tolist()
    assert dead[0] and dead[2]
    assert dead[1] == (spread == 0.0 or rows == 1)
    np.testing.assert_allclose(m.var.numpy(), x.numpy().var(0),
                               atol=1e-9 * max(1.0, value * value))


def test_random_and_lookup_and_refusals():
    perm = Random(3)(ScoreGroup((), 9)).numpy()
    assert sorted(perm.astype(int)) == list(range(9))
    np.testing.assert_array_equal(perm, np.random.default_rng(3).permutation(9))
    assert isinstance(scorer("flap"), Flap)
    with pytest.raises(UsageError, match="unknown scorer 'l2'"):
        scorer("l2")
    group, _ = problem()
    with pytest.raises(UsageError, match="one statistics object per consumer"):
        Variance()(group, [group.consumers[0].stats])
    bare = ScoreGroup([Column(torch.ones(2, 3))], 3)
    with pytest.raises(UsageError, match="scores from activations"):
        Activation()(bare)
    with pytest.raises(UsageError, match="needs every consumer's grad"):
        Taylor()(bare, [Moments.of(torch.ones(4, 3))])


def _ce(logits, y):
    m = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    return lse - np.take_along_axis(logits, y[:, None], -1)[:, 0]


def test_removal_costs_equal_brute_force_zeroing():
    """Last layer (rest None) and a deeper layer (rest: ReLU, Linear): each unit zeroed and
    the whole loss recomputed in numpy float64."""
    gen = np.random.default_rng(2)
    n, h, d, c = 60, 7, 5, 4
    act = np.maximum(gen.normal(size=(n, h)), 0)
    act[:, 3] = 0  # silent: costs exactly 0
    w1, b1 = gen.normal(size=(d, h)), gen.normal(size=d)
    w2, b2 = gen.normal(size=(c, d)), gen.normal(size=c)
    y = gen.integers(0, c, n)
    t = torch.from_numpy
    yt = t(y)

    def rest_np(z):
        return np.maximum(z, 0) @ w2.T + b2

    z = act @ w1.T + b1
    base = _ce(rest_np(z), y).mean()
    ref = np.array([_ce(rest_np(z - act[:, [j]] * w1[:, j]), y).mean() - base
                    for j in range(h)])

    def rest(zz):
        return zz.clamp(min=0) @ t(w2).T + t(b2)

    ce0 = t(_ce(rest_np(z), y))
    got = removal_costs(t(z), t(act), t(w1), yt, rest=rest, dtype=torch.float64, chunk=50,
                        ce0=ce0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-13)
    assert got[3] == 0

    def rest_cf(zz):  # classes first: (n, k, D) -> (C, n, k)
        return rest(zz).permute(2, 0, 1)

    cf = removal_costs(t(z), t(act), t(w1), yt, rest=rest_cf, dtype=torch.float64, chunk=50,
                       ce0=ce0, classes_first=True)
    np.testing.assert_allclose(cf.numpy(), ref, rtol=1e-10, atol=1e-13)
    with pytest.raises(UsageError, match="needs ce0"):
        removal_costs(t(z), t(act), t(w1), yt, rest=rest)
    ex = ExactCost(rest)(ScoreGroup([Column(t(w1))], h), (t(z), t(act), yt))
    np.testing.assert_allclose(ex.numpy(), ref, rtol=1e-10, atol=1e-13)
    logits = rest_np(z)  # the last layer: the logits are the consumer's output
    a2 = np.maximum(z, 0)
    ref2 = np.array([_ce(logits - a2[:, [j]] * w2[:, j], y).mean() - _ce(logits, y).mean()
                     for j in range(d)])
    got2 = removal_costs(t(logits), t(a2), t(w2), yt, dtype=torch.float64, reduce="sum")
    np.testing.assert_allclose(got2.numpy() / n, ref2, rtol=1e-10, atol=1e-13)
    cf2 = removal_costs(t(logits), t(a2), t(w2), yt, dtype=torch.float64, classes_first=True,
                        chunk=3 * n * c)  # two blocks of 3 units through one buffer
    np.testing.assert_allclose(cf2.numpy(), ref2, rtol=1e-10, atol=1e-13)
    with pytest.raises(UsageError, match="linear=False needs the logits"):
        removal_costs(t(z), t(act), t(w1), yt, rest=rest, linear=False, ce0=ce0)
    # linear=False: the same cost minus the first-order term, summed or averaged alike
    mean_nl = removal_costs(t(logits), t(a2), t(w2), yt, dtype=torch.float64, linear=False)
    sum_nl = removal_costs(t(logits), t(a2), t(w2), yt, dtype=torch.float64, linear=False,
                           reduce="sum")
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(n), y] -= 1
    first = ((p.T @ a2) * w2).sum(0) / n  # d loss / d w2, dotted with each unit's weights
    np.testing.assert_allclose(mean_nl.numpy(), ref2 + first, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(sum_nl.numpy() / n, ref2 + first, rtol=1e-10, atol=1e-13)


def test_obs_scorer_scores_by_removal_time():
    group, _ = problem()
    cons = list(group.consumers)
    fr = group_frontier(cons, U, "obs", ks=[U])
    s = OBS()(group).numpy()
    assert [int(i) for i in np.argsort(s)] == fr.order
    assert int(np.argmin(s)) == 0  # the dead unit costs nothing and goes first
