"""Hypothesis: any valid input gives finite parameters."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from widthlab.fit import ConvergenceWarning, ExponentialNormalMixture, GammaMixture, fit_many

values = st.lists(
    st.one_of(
        st.floats(min_value=1e-6, max_value=1e4, allow_nan=False),
        st.sampled_from([0.0, 0.5, 1.0]),  # duplicates and dead neurons
    ),
    min_size=10,
    max_size=500,
)


def _finite(m) -> None:
    for name in ("weights_", "shapes_", "scales_", "means_", "stds_", "rate_"):
        if hasattr(m, name):
            v = np.asarray(getattr(m, name))
            assert np.all(np.isfinite(v)), (name, v)
    assert np.all(m.weights_ >= 0) and np.isclose(m.weights_.sum(), 1.0)
    assert np.isfinite(m.lower_bound_)
    assert np.all(np.isfinite(m.loglik_history_))
    assert np.all(m.shapes_ > 0) if hasattr(m, "shapes_") else m.rate_ > 0


@settings(max_examples=60, deadline=None)
@given(xs=values, k=st.integers(1, 3), gamma=st.booleans())
def test_never_nan(xs, k, gamma):
    x = np.array(xs)
    pos = x[x > 0]
    assume(pos.size >= max(10, 3 * k) and pos.min() < pos.max())
    cls = GammaMixture if gamma else ExponentialNormalMixture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = cls(n_components=k, max_iter=100).fit(x)
        _finite(m)
        assert m.n_zeros_ == int((x == 0).sum())
        p = m.predict_proba(x)
        assert np.all(np.isfinite(p))
        (many,) = fit_many(cls(n_components=k, max_iter=100), [x])
        _finite(many)
