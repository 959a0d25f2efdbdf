"""Streaming statistics against numpy float64 two-pass references."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from widthlab.engine.stats import RunningCovariance, RunningMoments
from widthlab.errors import UsageError

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


def _split(x: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    cuts = sorted({c % (len(x) + 1) for c in cuts})
    return np.split(x, cuts)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(2, 40), st.integers(1, 6)), elements=finite),
       st.lists(st.integers(0, 40), max_size=5), st.floats(-1e4, 1e4))
def test_moments_match_numpy_for_any_batching(x, cuts, offset):
    x = x.astype(np.float64) + offset  # a large mean must not hurt the variance
    mom = RunningMoments(x.shape[1])
    for part in _split(x, cuts):
        mom.update(torch.from_numpy(part))
    assert mom.count == len(x)
    scale = 1 + np.abs(x).max()
    np.testing.assert_allclose(mom.mean.numpy(), x.mean(0), rtol=0, atol=1e-12 * scale)
    for ddof in (0, 1):
        np.testing.assert_allclose(mom.var(ddof).numpy(), x.var(0, ddof=ddof), rtol=1e-9,
                                   atol=1e-9 * scale)
    np.testing.assert_array_equal(mom.min.numpy(), x.min(0))
    np.testing.assert_array_equal(mom.max.numpy(), x.max(0))
    np.testing.assert_array_equal(mom.active.numpy(), (x > 0).any(0))


def test_dead_relu_neurons_are_inactive_and_merge_is_order_free():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(300, 5)), 0)
    a[:, 2] = 0.0  # dead
    a[:, 4] = np.where(np.arange(300) == 123, 0.5, 0.0)  # fires once
    left, right = RunningMoments(5), RunningMoments(5)
    left.update(torch.from_numpy(a[:200]))
    right.update(torch.from_numpy(a[200:]))
    both = RunningMoments(5).merge(right).merge(left)
    assert both.active.tolist() == [True, True, False, True, True]
    np.testing.assert_allclose(both.std().numpy(), a.std(0), rtol=1e-12, atol=1e-15)
    assert both.std()[2] == 0.0


def test_moments_state_roundtrip_and_too_few_samples():
    mom = RunningMoments(3)
    assert torch.isnan(mom.var()).all()
    mom.update(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.isnan(mom.var(ddof=1)).all() and (mom.var() == 0).all()
    again = RunningMoments(3).load_state_dict(mom.state_dict())
    again.update(torch.tensor([[3.0, 2.0, 1.0]]))
    np.testing.assert_allclose(again.var().numpy(), [1.0, 0.0, 1.0])


def test_shape_errors_name_the_problem():
    with pytest.raises(UsageError, match=r"\(batch, 3\)"):
        RunningMoments(3).update(torch.zeros(4, 2))
    with pytest.raises(UsageError, match="reach column 5"):
        RunningCovariance([(0, 2), (2, 5)]).update(torch.zeros(3, 4))
    with pytest.raises(UsageError, match="different blocks"):
        RunningCovariance([(0, 2)]).merge(RunningCovariance([(0, 3)]))


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(3, 30), st.just(7)), elements=finite),
       st.lists(st.integers(0, 30), max_size=4), st.floats(-1e3, 1e3))
def test_covariance_blocks_match_numpy(x, cuts, offset):
    x = x.astype(np.float64) + offset
    blocks = [(3, 7), (0, 3), (2, 2)]
    cov = RunningCovariance(blocks)
    for part in _split(x, cuts):
        cov.update(torch.from_numpy(part))
    scale = 1 + np.abs(x).max() ** 2
    for i, (a, b) in enumerate(blocks):
        ref = np.cov(x[:, a:b], rowvar=False, ddof=1).reshape(b - a, b - a)
        np.testing.assert_allclose(cov.covariance(i).numpy(), ref, rtol=1e-9, atol=1e-9 * scale)
        np.testing.assert_allclose(cov.mean(i).numpy(), x[:, a:b].mean(0), rtol=0,
                                   atol=1e-12 * (1 + np.abs(x).max()))


def test_covariance_merge_equals_one_stream():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 5
    one = RunningCovariance([(0, 6)]).update(torch.from_numpy(x))
    a = RunningCovariance([(0, 6)]).update(torch.from_numpy(x[:123]))
    b = RunningCovariance([(0, 6)]).update(torch.from_numpy(x[123:]))
    merged = a.merge(b)
    np.testing.assert_allclose(merged.covariance(0).numpy(), one.covariance(0).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(one.covariance(0).numpy(), np.cov(x, rowvar=False), rtol=1e-10)
