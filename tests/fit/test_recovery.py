"""Parameter recovery, EM monotonicity and agreement with an independent scipy MLE."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fit.conftest import EXPNORMAL_CASES, GAMMA_CASES, draw_expnormal, draw_gamma
from widthlab.fit import ExponentialNormalMixture, GammaMixture
from widthlab.fit._reference import scipy_mle


def _monotone(history: np.ndarray) -> None:
    assert history.size >= 2
    assert np.all(np.isfinite(history))
    drops = np.diff(history)
    assert np.all(drops >= -1e-9 * np.abs(history[:-1])), drops.min()


@pytest.mark.parametrize("case", sorted(GAMMA_CASES))
def test_gamma_recovers_parameters(case):
    w, shapes, scales = GAMMA_CASES[case]
    x = draw_gamma(case, 5000, seed=1)
    m = GammaMixture().fit(x)
    assert m.converged_
    np.testing.assert_allclose(m.weights_, w, atol=0.03)
    np.testing.assert_allclose(m.shapes_, shapes, rtol=0.10)
    np.testing.assert_allclose(m.scales_, scales, rtol=0.10)
    np.testing.assert_allclose(m.means_, np.multiply(shapes, scales), rtol=0.10)
    _monotone(m.loglik_history_)
    assert m.lower_bound_ == pytest.approx(m.loglik_history_[-1])
    assert m.score(x) == pytest.approx(m.lower_bound_, abs=1e-10)


@pytest.mark.parametrize("case", sorted(EXPNORMAL_CASES))
def test_expnormal_recovers_parameters(case):
    w, rate, mu, sd = EXPNORMAL_CASES[case]
    x = draw_expnormal(case, 5000, seed=2)
    m = ExponentialNormalMixture().fit(x)
    assert m.converged_
    np.testing.assert_allclose(m.weights_, w, atol=0.03)
    assert m.rate_ == pytest.approx(rate, rel=0.10)
    assert m.scale_ == pytest.approx(1 / rate, rel=0.10)
    np.testing.assert_allclose(m.means_, [mu], rtol=0.10)
    np.testing.assert_allclose(m.stds_, [sd], rtol=0.10)
    _monotone(m.loglik_history_)
    assert m.score(x) == pytest.approx(m.lower_bound_, abs=1e-10)


def test_three_gamma_components_monotone_and_sorted():
    rng = np.random.default_rng(5)
    x = np.concatenate(
        [rng.gamma(1.5, 0.01, 1500), rng.gamma(30, 0.01, 2000), rng.gamma(40, 0.03, 1500)]
    )
    m = GammaMixture(n_components=3, max_iter=1000).fit(x)
    _monotone(m.loglik_history_)
    assert np.all(np.diff(m.means_) > 0)
    np.testing.assert_allclose(m.weights_, [0.3, 0.4, 0.3], atol=0.03)


@pytest.mark.parametrize("case", ["balanced", "rare_low"])
def test_gamma_loglik_matches_scipy_reference(case):
    x = draw_gamma(case, 2000, seed=3)
    m = GammaMixture(tol=1e-9, max_iter=2000).fit(x)
    ref, _ = scipy_mle(x, 2, "gamma", n_starts=4)
    assert m.lower_bound_ >= ref - 1e-3, (m.lower_bound_, ref)


@pytest.mark.parametrize("case", ["balanced", "rare_high"])
def test_expnormal_loglik_matches_scipy_reference(case):
    x = draw_expnormal(case, 2000, seed=4)
    m = ExponentialNormalMixture(tol=1e-9, max_iter=2000).fit(x)
    ref, _ = scipy_mle(x, 2, "expnormal", n_starts=4)
    assert m.lower_bound_ >= ref - 1e-3, (m.lower_bound_, ref)


def test_restarts_keep_best_and_are_reproducible():
    x = draw_gamma("balanced", 1000, seed=6)
    a = GammaMixture(n_init=4, random_state=0).fit(x)
    b = GammaMixture(n_init=4, random_state=0).fit(x)
    one = GammaMixture().fit(x)
    assert a.lower_bound_ >= one.lower_bound_ - 1e-12
    np.testing.assert_array_equal(a.shapes_, b.shapes_)
