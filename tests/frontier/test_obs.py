"""Greedy OBS elimination against brute-force least squares and closed forms (numpy float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from widthlab.errors import UsageError
from widthlab.frontier import block_obs, obs
from widthlab.frontier.obs import damped_inverse, eliminate, gram


def _problem(n: int, h: int, c: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, h, generator=g, dtype=torch.float64).relu() + 0.01
    w = torch.randn(c, h + 1, generator=g, dtype=torch.float64)
    return a, w


def _aug(a: torch.Tensor) -> np.ndarray:
    return np.hstack([a.numpy(), np.ones((len(a), 1))])


def test_gram_matches_numpy():
    a, _ = _problem(37, 6, 2, 0)
    A = _aug(a)
    np.testing.assert_allclose(gram(a, chunk=13).numpy(), A.T @ A / len(A), rtol=1e-13)


def test_one_step_is_the_best_brute_force_refit():
    a, w = _problem(120, 9, 3, 1)
    A = _aug(a)
    Z = A @ w.numpy().T  # the consumer's output, bias included
    best = None
    for j in range(9):  # refit every candidate kept set by least squares, keep the best
        keep = [i for i in range(10) if i != j]
        V, *_ = np.linalg.lstsq(A[:, keep], Z, rcond=None)
        err = ((A[:, keep] @ V - Z) ** 2).mean(0).sum()
        if best is None or err < best[0]:
            best = (err, j, V)
    res = eliminate(gram(a), w, damp=0.0, keep_at={8})
    assert res.order[0] == best[1]
    kept, wk, bk = res.snapshots[8]
    assert kept.tolist() == [i for i in range(9) if i != best[1]]
    np.testing.assert_allclose(wk.numpy(), best[2][:-1].T, atol=1e-10)
    np.testing.assert_allclose(bk.numpy(), best[2][-1], atol=1e-10)
    assert res.costs[0] == pytest.approx(best[0], rel=1e-8)  # the mean squared error increase


def _closed_form(a, w, kept, damp):
    """Damped least-squares refit of the kept set: w_S + G_SS^-1 G_SR w_R (numpy)."""
    A = _aug(a)
    G = A.T @ A / len(A)
    G = G + damp * np.mean(np.diag(G)) * np.eye(len(G))
    S = [*kept, G.shape[0] - 1]
    R = [i for i in range(G.shape[0]) if i not in S]
    W = w.numpy()
    return (W[:, S].T + np.linalg.solve(G[np.ix_(S, S)], G[np.ix_(S, R)] @ W[:, R].T)).T


@pytest.mark.parametrize("numpy_steps", [True, False], ids=["numpy-steps", "torch-steps"])
@pytest.mark.parametrize(("block", "panel"), [(1, 512), (5, 512), (64, 512), (5, 8), (64, 8)])
def test_lazy_blocks_and_compaction_keep_exact_refits(block, panel, numpy_steps, monkeypatch):
    # 150 neurons: live columns move into the dead ones' places at every flush; panel=8:
    # lower-triangle flushes in 8 row panels of 19 (the stale parts read from the columns);
    # on the CPU both the numpy steps (column_cpu) and the torch steps (any device)
    monkeypatch.setattr(block_obs, "_PANEL", panel)
    monkeypatch.setattr(block_obs, "_NUMPY_STEPS", numpy_steps)
    a, w = _problem(400, 150, 4, 2)
    res = eliminate(gram(a), w, damp=1e-3, block=block, keep_at={150, 100, 37, 5, 1})
    assert sorted(res.order) == list(range(150))
    for k, (kept, wk, bk) in res.snapshots.items():
        assert kept.tolist() == sorted(res.order[150 - k:])
        ref = _closed_form(a, w, kept.tolist(), 1e-3)
        np.testing.assert_allclose(wk.numpy(), ref[:, :-1], atol=1e-8)
        np.testing.assert_allclose(bk.numpy(), ref[:, -1], atol=1e-8)
    ref_order = eliminate(gram(a), w, damp=1e-3, block=1).order
    assert res.order == ref_order


@given(n=st.integers(12, 40), h=st.integers(2, 8), c=st.integers(1, 4),
       seed=st.integers(0, 10_000))
def test_greedy_costs_match_refit_errors(n, h, c, seed):
    a, w = _problem(n, h, c, seed)
    res = eliminate(gram(a), w, damp=1e-6, keep_at=set(range(1, h + 1)))
    A = _aug(a)
    Z = A @ w.numpy().T
    prev = 0.0
    for k in range(h - 1, 0, -1):  # the cumulative cost is the refit's excess error
        kept, wk, bk = res.snapshots[k]
        err = ((A[:, kept.tolist()] @ wk.numpy().T + bk.numpy() - Z) ** 2).mean(0).sum()
        cum = sum(res.costs[:h - k])
        assert err <= cum * (1 + 1e-6) + 1e-9  # the damped objective bounds the plain one
        assert err >= prev - 1e-9  # removing more never fits better
        prev = err


def test_singular_gram_without_damping_is_refused():
    a, w = _problem(50, 4, 2, 3)
    a = torch.cat([a, a[:, :1]], 1)  # a duplicate neuron
    w = torch.cat([w[:, :4], w[:, :1], w[:, 4:]], 1)
    with pytest.raises(UsageError, match="singular"):
        eliminate(gram(a), w, damp=0.0)
    res = eliminate(gram(a), w, damp=1e-9, keep_at={4})
    assert res.costs[0] < 1e-6  # a duplicate goes first, for free
    assert res.order[0] in (0, 4)


def test_thread_context_restores_the_count_even_on_error():
    from widthlab.frontier._threads import threads

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_gram_in_row_panels_matches_numpy():
    """2100 columns: 8 row panels of the lower triangle, mirrored (exactly symmetric)."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(64, 2100, generator=g, dtype=torch.float64)
    A = _aug(a)
    got = gram(a, chunk=2100 * 20).numpy()  # 4 sample blocks
    np.testing.assert_allclose(got, A.T @ A / len(A), rtol=1e-12, atol=1e-13)
    assert np.array_equal(got, got.T)


def test_lower_gram_is_the_full_ones_lower_triangle_and_touches_nothing_above(monkeypatch):
    """``lower=True`` (8 row panels, 4 sample blocks): the lower triangle bitwise the full
    Gram matrix's, equal to numpy's; above the row panels the values are whatever the buffer
    held (never written: a NaN planted there survives) and its inverse equals numpy's."""
    g = torch.Generator().manual_seed(4)
    a = torch.randn(64, 2100, generator=g, dtype=torch.float64)
    A = _aug(a)
    full = gram(a, chunk=2100 * 20)
    real = obs.big_empty
    planted = []

    def nan_filled(*shape, **kw):
        t = real(*shape, **kw).fill_(float("nan"))
        planted.append(t)
        return t

    monkeypatch.setattr(obs, "big_empty", nan_filled)
    low = gram(a, chunk=2100 * 20, lower=True)
    monkeypatch.undo()
    assert planted and low is planted[0]
    tri = np.tril_indices(2101)
    assert np.array_equal(low.numpy()[tri], full.numpy()[tri])
    np.testing.assert_allclose(low.numpy()[tri], (A.T @ A / len(A))[tri], rtol=1e-12,
                               atol=1e-13)
    written = np.zeros((2101, 2101), dtype=bool)  # the lower row panels and the bias row
    edges = obs._panels(2100)
    for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
        written[r0:r1, :r1] = True
    written[2100] = True
    assert np.isnan(low.numpy()[~written]).all() and not np.isnan(low.numpy()[written]).any()
    b = torch.randn(3000, 300, generator=g, dtype=torch.float64)  # SPD: more samples
    inv = damped_inverse(gram(b, lower=True), 1e-3, lower=True).numpy()
    ref = gram(b).numpy()
    ref = np.linalg.inv(ref + 1e-3 * np.mean(np.diag(ref)) * np.eye(301))
    tri = np.tril_indices(301)
    np.testing.assert_allclose(inv[tri], ref[tri], rtol=1e-9, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("h", [3, 512, 700, 1100])
def test_damped_inverse_matches_numpy(h):
    # in place on the CPU (LAPACK potri on g's memory, mirrored in 512-column panels)
    rng = np.random.default_rng(h)
    a = rng.standard_normal((h + 20, h))
    g = a.T @ a / len(a)
    gt = torch.tensor(g)
    got = damped_inverse(gt, 1e-3)
    ref = np.linalg.inv(g + 1e-3 * np.mean(np.diag(g)) * np.eye(h))
    assert got.data_ptr() == gt.data_ptr()
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    assert torch.equal(got, got.t())
    # lower=True (the CPU column steps' reader): the same lower triangle, no mirror
    low = damped_inverse(torch.tensor(g), 1e-3, lower=True)
    assert torch.equal(low.tril(), got.tril())
    if h > 1:  # the upper triangle is left as the damped matrix's own (not the inverse)
        assert not np.allclose(np.triu(low.numpy(), 1), np.triu(ref, 1))
