"""The spike counter on synthetic loss curves with known spikes, against a naive loop."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthlab.errors import UsageError
from widthlab.metrics.spikes import find_spikes, running_median, spikes_per_epoch


def curve(n=3000, seed=0, noise=0.3):
    """A decaying training loss with multiplicative minibatch noise (lognormal)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (2.0 * np.exp(-t / 400) + 1e-3) * np.exp(rng.normal(0, noise, n) - noise ** 2 / 2)


def naive(x, factor, window):
    out = []
    for t in range(window, len(x)):
        if x[t] > factor * np.median(x[t - window:t]) or not np.isfinite(x[t]):
            out.append(t)
    return np.array(out, dtype=np.int64)


def test_smooth_noisy_curve_has_no_spike():
    assert len(find_spikes(curve())) == 0


def test_known_spikes_are_found_exactly_late_ones_too():
    x = curve(seed=1)
    where = np.array([120, 777, 1500, 2400, 2401, 2999])
    x[where] *= np.array([8, 20, 50, 100, 30, 1e4])  # 2401 follows a spike: median holds
    np.testing.assert_array_equal(find_spikes(x), where)
    counts = spikes_per_epoch(x, steps_per_epoch=300)
    assert counts.tolist() == [1, 0, 1, 0, 0, 1, 0, 0, 2, 1]


def test_nan_batch_counts_as_spike():
    x = curve(n=200)
    x[150] = np.nan
    assert 150 in find_spikes(x)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.floats(1.1, 10), st.integers(0, 400))
def test_matches_naive_loop(seed, window, factor, n):
    rng = np.random.default_rng(seed)
    x = np.exp(rng.normal(0, 1.0, n))
    np.testing.assert_array_equal(find_spikes(x, factor, window), naive(x, factor, window))
    med = running_median(x, window)
    assert np.isnan(med[:window]).all()


def test_bad_arguments_are_named():
    with pytest.raises(UsageError, match="factor"):
        find_spikes([1.0, 2.0], factor=1.0)
    with pytest.raises(UsageError, match="whole epochs"):
        spikes_per_epoch(np.ones(10), steps_per_epoch=3)
