"""Estimator API: predictions, scoring, sampling, zeros, warnings and input errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.fit.conftest import draw_expnormal, draw_gamma
from widthlab.errors import UsageError
from widthlab.fit import ConvergenceWarning, ExponentialNormalMixture, GammaMixture, fit_many

MODELS = [GammaMixture, ExponentialNormalMixture]


def _data(cls, n=800, seed=0):
    return (
        draw_gamma("balanced", n, seed)
        if cls is GammaMixture
        else draw_expnormal("balanced", n, seed)
    )


@pytest.mark.parametrize("cls", MODELS)
def test_init_stores_params_unchanged(cls):
    m = cls(n_components=3, max_iter=7, tol=0.5, n_init=2, random_state=9, zeros="error")
    assert m.get_params() == {
        "n_components": 3,
        "max_iter": 7,
        "tol": 0.5,
        "n_init": 2,
        "random_state": 9,
        "zeros": "error",
    }
    assert cls().get_params()["zeros"] == "exclude"
    assert m.set_params(tol=1e-3) is m and m.tol == 1e-3
    assert "n_components=3" in repr(m)
    with pytest.raises(ValueError, match="unknown parameter"):
        m.set_params(bogus=1)


@pytest.mark.parametrize("cls", MODELS)
def test_predict_score_bic_sample(cls):
    x = _data(cls)
    m = cls().fit(x)
    assert m.fit(x) is m
    p = m.predict_proba(x)
    assert p.shape == (x.size, 2)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_array_equal(m.predict(x), p.argmax(1))
    # the near-zero component is 0
    assert m.predict([1e-4])[0] == 0
    s = m.score_samples(x)
    assert s.shape == x.shape and np.all(np.isfinite(s))
    assert m.score(x) == pytest.approx(s.mean())
    k = 3 * 2 - 1 if cls is GammaMixture else 3 * 2 - 2
    assert m.bic(x) == pytest.approx(-2 * s.sum() + k * np.log(x.size))
    xs, lab = m.sample(3000, random_state=0)
    assert xs.shape == (3000,) and lab.shape == (3000,)
    assert set(np.unique(lab)) <= {0, 1}
    xs2, _ = m.sample(3000, random_state=0)
    np.testing.assert_array_equal(xs, xs2)
    assert abs(np.mean(lab == 0) - m.weights_[0]) < 0.04
    assert m.n_features_in_ == 1 and m.n_samples_fit_ == x.size


@pytest.mark.parametrize("cls", MODELS)
def test_zeros_excluded_and_counted(cls):
    x = _data(cls, 500)
    xz = np.concatenate([np.zeros(17), x])
    m = cls().fit(xz)
    ref = cls().fit(x)
    assert m.n_zeros_ == 17 and ref.n_zeros_ == 0
    np.testing.assert_allclose(m.weights_, ref.weights_)
    assert m.score(xz) == pytest.approx(ref.lower_bound_)
    assert m.predict([0.0])[0] == 0 if cls is ExponentialNormalMixture else True
    p0 = m.predict_proba([0.0])
    assert np.all(np.isfinite(p0)) and p0.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="zero"):
        cls(zeros="error").fit(xz)
    with pytest.raises(ValueError, match="zeros='error'"):
        cls(zeros="error").fit(x).score(xz)


def test_gamma_zero_goes_to_smallest_shape_component():
    m = GammaMixture().fit(draw_gamma("balanced", 800))
    assert m.predict([0.0])[0] == int(np.argmin(m.shapes_))


@pytest.mark.parametrize("cls", MODELS)
def test_convergence_warning(cls):
    x = _data(cls)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        m = cls(max_iter=2, tol=0.0).fit(x)
    assert not m.converged_ and m.n_iter_ == 2 and m.loglik_history_.size == 3
    assert issubclass(ConvergenceWarning, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cls().fit(x).converged_


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.r_[np.ones(20), np.nan], "NaN/inf"),
        (np.r_[np.arange(1.0, 21), np.inf], "NaN/inf"),
        (np.r_[np.arange(1.0, 21), -0.5], "negative"),
        (np.arange(1.0, 6), "at least 10"),
        (np.r_[np.zeros(30), np.arange(1.0, 6)], "at least 10"),
        (np.full(50, 0.3), "all 50 positive values equal"),
        (np.ones((5, 4)), "1-D"),
        (["a", "b"], "not numeric"),
    ],
)
def test_input_errors(cls, bad, match):
    with pytest.raises(ValueError, match=match):
        cls().fit(bad)


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_components": 0},
        {"n_components": 1.5},
        {"max_iter": 0},
        {"n_init": 0},
        {"tol": -1.0},
        {"zeros": "keep"},
    ],
)
def test_bad_params_raise_at_fit(cls, kwargs):
    m = cls(**kwargs)  # stored unchanged, checked at fit
    with pytest.raises(UsageError):
        m.fit(_data(cls, 100))


def test_unfitted_and_column_input():
    with pytest.raises(ValueError, match="not fitted"):
        GammaMixture().predict([1.0])
    x = draw_gamma("balanced", 300)
    a = GammaMixture().fit(x[:, None])
    b = GammaMixture().fit(x)
    np.testing.assert_array_equal(a.shapes_, b.shapes_)


@pytest.mark.parametrize("cls", MODELS)
def test_fit_many_equals_individual_fits(cls):
    rng = np.random.default_rng(11)
    arrays = [_data(cls, int(n), seed=i) for i, n in enumerate(rng.integers(30, 1500, 9))]
    arrays[3] = np.concatenate([arrays[3], np.zeros(5)])
    for params in ({}, {"n_init": 3, "random_state": 4}, {"n_components": 3, "max_iter": 50}):
        model = cls(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            many = fit_many(model, arrays)
            single = [cls(**params).fit(a) for a in arrays]
        assert len(many) == len(arrays)
        for a, b in zip(many, single, strict=True):
            assert a.get_params() == model.get_params()
            assert a.n_zeros_ == b.n_zeros_
            assert a.converged_ == b.converged_
            assert abs(a.n_iter_ - b.n_iter_) <= 1
            np.testing.assert_allclose(a.weights_, b.weights_, rtol=1e-6, atol=1e-9)
            assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-9, abs=1e-9)
            for name in ("shapes_", "scales_", "means_", "stds_"):
                if hasattr(b, name):
                    np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6)
    assert not hasattr(model, "weights_")


def test_fit_many_frame_and_errors():
    arrays = [draw_gamma("balanced", 200, s) for s in range(3)]
    df = fit_many(GammaMixture(), arrays, as_frame=True)
    assert len(df) == 3
    assert {"weight_0", "shape_1", "scale_0", "lower_bound", "n_zeros"} <= set(df.columns)
    df2 = fit_many(ExponentialNormalMixture(), arrays, as_frame=True)
    assert {"rate", "mean_1", "std_1"} <= set(df2.columns)
    bad = arrays + [np.r_[np.ones(20), -1.0]]
    with pytest.raises(ValueError, match=r"arrays\[3\].*negative"):
        fit_many(GammaMixture(), bad)
    with pytest.raises(ValueError, match="model must be"):
        fit_many(object(), arrays)
