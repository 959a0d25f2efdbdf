"""Gamma and exponential + normal mixtures fitted by EM, and the batched :func:`fit_many`."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy.special import gammaln, logsumexp, xlogy

from widthlab.errors import UsageError
from widthlab.fit._em import ConvergenceWarning as ConvergenceWarning  # kept importable here
from widthlab.fit._em import (
    as_1d,
    check_fit_data,
    check_params,
)
from widthlab.fit._mixture_core import (
    _CHUNK_ELEMENTS,
    _LOG_2PI,
    _PARAM_NAMES,
    _ExpNormalFamily,
    _fit_positive,
    _GammaFamily,
    _rng,
    _warn_unconverged,
)
from widthlab.fit._mixture_core import solve_gamma_shape as solve_gamma_shape


# ----------------------------------------------------------------------------- estimators
class _BaseMixture:
    _family: type
    _min_components = 1

    def __init__(
        self,
        n_components: int = 2,
        max_iter: int = 200,
        tol: float = 1e-6,
        n_init: int = 1,
        random_state=None,
        zeros: str = "exclude",
    ):
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.random_state = random_state
        self.zeros = zeros

    # -- scikit-learn plumbing
    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters as a dict (scikit-learn convention)."""
        return {name: getattr(self, name) for name in _PARAM_NAMES}

    def set_params(self, **params):
        """Set constructor parameters; returns self."""
        for name, value in params.items():
            if name not in _PARAM_NAMES:
                raise UsageError(
                    f"unknown parameter {name!r} for {type(self).__name__}; valid: "
                    + ", ".join(_PARAM_NAMES)
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitting
    def fit(self, x, y=None):
        """Fit the mixture to the values ``x`` by EM.

        Parameters
        ----------
        x : array_like, shape (n,) or (n, 1)
            Non-negative finite values, e.g. per-neuron activation stds. Exact zeros are
            dropped and counted in ``n_zeros_`` when ``zeros="exclude"`` (the default) and
            raise ``ValueError`` when ``zeros="error"``. At least ``max(10, 3 * n_components)``
            positive values, not all equal, are needed.
        y : ignored

        Returns
        -------
        self
        """
        check_params(self)
        pos, n_zeros = check_fit_data(x, self.zeros, self.n_components)
        res = _fit_positive(self, [pos])[0]
        self._set_fitted(res, n_zeros, pos.size)
        if not self.converged_:
            _warn_unconverged(["this array"], self.max_iter)
        return self

    def _set_fitted(self, res: dict, n_zeros: int, n_used: int) -> None:
        self._params = res["params"]
        self.weights_ = res["weights"]
        self.lower_bound_ = res["lb"]
        self.n_iter_ = res["n_iter"]
        self.converged_ = res["converged"]
        self.loglik_history_ = res["history"]
        self.n_zeros_ = n_zeros
        self.n_samples_fit_ = n_used
        self.n_features_in_ = 1
        self._publish(res["params"])

    def _check_fitted(self) -> None:
        if not hasattr(self, "weights_"):
            raise UsageError(
                f"this {type(self).__name__} is not fitted yet; call fit(x) before using it"
            )

    # -- inference
    def _component_logpdf(self, x: np.ndarray) -> np.ndarray:  # (n, K), without weights
        raise NotImplementedError

    def _weighted_log_prob(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return self._component_logpdf(x) + np.log(self.weights_)[None, :]

    def score_samples(self, x) -> np.ndarray:
        """Log-density of the fitted mixture at each value of ``x``.

        Parameters
        ----------
        x : array_like, shape (n,)
            Non-negative finite values. Zeros are evaluated as they are (a gamma density at 0
            is 0, finite or infinite depending on its shape).

        Returns
        -------
        ndarray, shape (n,)
        """
        self._check_fitted()
        a = as_1d(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            return logsumexp(self._weighted_log_prob(a), axis=1)

    def predict_proba(self, x) -> np.ndarray:
        """Posterior probability of each component for each value.

        Components are ordered by mean (for :class:`ExponentialNormalMixture` the exponential
        is always component 0, the normals follow by mean), so component 0 is the "near-zero"
        group. For gamma mixtures an exact zero gets the limit ``x -> 0+`` of the posterior.

        Returns
        -------
        ndarray, shape (n, n_components)
        """
        self._check_fitted()
        a = as_1d(x)
        lp = self._weighted_log_prob(self._at_zero(a))
        with np.errstate(invalid="ignore"):
            p = np.exp(lp - logsumexp(lp, axis=1, keepdims=True))
        return p

    def _at_zero(self, a: np.ndarray) -> np.ndarray:
        return a

    def predict(self, x) -> np.ndarray:
        """Index of the most probable component for each value (0 = lowest mean)."""
        return np.argmax(self.predict_proba(x), axis=1)

    def _scored_values(self, x) -> np.ndarray:
        self._check_fitted()
        a = as_1d(x)
        if self.zeros == "exclude":
            a = a[a != 0]
        elif (a == 0).any():
            raise UsageError(
                "x contains exact zeros and zeros='error'; remove them or use zeros='exclude'"
            )
        if a.size == 0:
            raise UsageError("x has no positive values to score; pass at least one")
        return a

    def score(self, x, y=None) -> float:
        """Mean log-likelihood per value; exact zeros are skipped when ``zeros="exclude"``.

        ``score(x_train)`` equals ``lower_bound_`` up to rounding.
        """
        return float(np.mean(self.score_samples(self._scored_values(x))))

    def bic(self, x) -> float:
        """Bayesian information criterion ``-2 log L + p log n`` on ``x`` (lower is better).

        ``n`` counts the values scored (exact zeros excluded when ``zeros="exclude"``) and ``p``
        the free parameters.
        """
        a = self._scored_values(x)
        ll = float(np.sum(self.score_samples(a)))
        return -2.0 * ll + self._family.n_free(self.n_components) * math.log(a.size)

    def sample(self, n: int = 1, random_state=None) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` values from the fitted mixture.

        Returns
        -------
        x : ndarray, shape (n,)
        labels : ndarray of int, shape (n,)
            The component each value was drawn from (same order as ``weights_``).
        """
        self._check_fitted()
        if not isinstance(n, int | np.integer) or n < 0:
            raise UsageError(f"n={n!r} is invalid; pass an integer >= 0")
        rng = _rng(random_state)
        counts = rng.multinomial(n, self.weights_ / self.weights_.sum())
        xs = [self._draw(rng, j, c) for j, c in enumerate(counts)]
        labels = np.repeat(np.arange(self.n_components), counts)
        x = np.concatenate(xs) if xs else np.empty(0)
        perm = rng.permutation(n)
        return x[perm], labels[perm]

    def _param_row(self) -> dict:
        row = {
            "n": self.n_samples_fit_,
            "n_zeros": self.n_zeros_,
            "converged": self.converged_,
            "n_iter": self.n_iter_,
            "lower_bound": self.lower_bound_,
        }
        for j, w in enumerate(self.weights_):
            row[f"weight_{j}"] = float(w)
        return row


class GammaMixture(_BaseMixture):
    """Mixture of ``n_components`` gamma distributions fitted by EM.

    Parameters
    ----------
    n_components : int, default 2
        Number of gamma components.
    max_iter : int, default 200
        Maximum EM iterations (M-steps) per initialisation.
    tol : float, default 1e-6
        Stop when the mean log-likelihood per value changes by less than ``tol``.
    n_init : int, default 1
        Initialisations: the first splits the sorted data into equal-count groups, the others
        split at random quantiles drawn from ``random_state``; the best likelihood is kept.
    random_state : None, int or numpy Generator
        Seed for the random restarts (unused when ``n_init == 1``).
    zeros : {"exclude", "error"}, default "exclude"
        Exact zeros (dead neurons) are outside the gamma support: ``"exclude"`` drops them and
        counts them in ``n_zeros_``; ``"error"`` raises ``ValueError``.

    Attributes
    ----------
    weights_, shapes_, scales_ : ndarray, shape (n_components,)
        Components sorted by mean ``shapes_ * scales_``; component 0 is the near-zero group.
    means_ : ndarray, shape (n_components,)
        Component means.
    n_iter_ : int
        EM iterations run by the kept initialisation.
    converged_ : bool
    lower_bound_ : float
        Mean log-likelihood per (non-zero) value at the final parameters.
    loglik_history_ : ndarray
        Mean log-likelihood at the start of each iteration and at the end (non-decreasing).
    n_zeros_ : int
        Exact zeros excluded from the fit.
    n_samples_fit_ : int
        Values used in the fit.

    Notes
    -----
    The M-step is the weighted gamma MLE: the shape solves ``log k - digamma(k) = c`` with
    ``c = log(weighted mean) - weighted mean of log x`` by Newton's method, and
    ``scale = mean / k``. Shapes are kept in ``[1e-4, 1e7]`` so a component that collapses on
    duplicated values stays finite.
    """

    _family = _GammaFamily

    def _publish(self, p):
        self.shapes_ = p["shape"]
        self.scales_ = p["scale"]
        self.means_ = p["shape"] * p["scale"]

    def _component_logpdf(self, x):
        k, th = self.shapes_[None, :], self.scales_[None, :]
        x = x[:, None]
        return xlogy(k - 1.0, x) - x / th - gammaln(k) - k * np.log(th)

    def _at_zero(self, a):
        return np.maximum(a, np.finfo(np.float64).tiny)

    def _draw(self, rng, j, count):
        return rng.gamma(self.shapes_[j], self.scales_[j], size=count)

    def _param_row(self):
        row = super()._param_row()
        for j in range(self.n_components):
            row[f"shape_{j}"] = float(self.shapes_[j])
            row[f"scale_{j}"] = float(self.scales_[j])
        return row


class ExponentialNormalMixture(_BaseMixture):
    """One exponential component plus ``n_components - 1`` normal components, fitted by EM.

    The exponential (support ``x >= 0``) models the near-zero, "useless" neurons; the normals
    model the useful ones.

    Parameters
    ----------
    n_components : int, default 2
        Total components (1 exponential + ``n_components - 1`` normals).
    max_iter, tol, n_init, random_state, zeros
        As for :class:`GammaMixture`. Exact zeros are inside the exponential's support, but the
        default ``zeros="exclude"`` still drops them (dead neurons are counted in ``n_zeros_``
        and are known to be useless), matching the journal's analysis.

    Attributes
    ----------
    weights_ : ndarray, shape (n_components,)
        Component 0 is the exponential; the normals follow sorted by mean.
    rate_, scale_ : float
        Exponential rate and its scale ``1 / rate_``.
    means_, stds_ : ndarray, shape (n_components - 1,)
        Normal components' means and standard deviations (stds are floored at 1e-5 times the
        data's std).
    n_iter_, converged_, lower_bound_, loglik_history_, n_zeros_, n_samples_fit_
        As for :class:`GammaMixture`.
    """

    _family = _ExpNormalFamily
    _min_components = 1

    def _publish(self, p):
        self.rate_ = float(p["rate"][0])
        self.scale_ = 1.0 / self.rate_
        self.means_ = p["mean"]
        self.stds_ = p["std"]

    def _component_logpdf(self, x):
        x = x[:, None]
        exp = np.log(self.rate_) - self.rate_ * x
        z = (x - self.means_[None, :]) / self.stds_[None, :]
        nrm = -0.5 * _LOG_2PI - np.log(self.stds_)[None, :] - 0.5 * z * z
        return np.concatenate([exp, nrm], axis=1)

    def _draw(self, rng, j, count):
        if j == 0:
            return rng.exponential(self.scale_, size=count)
        return rng.normal(self.means_[j - 1], self.stds_[j - 1], size=count)

    def _param_row(self):
        row = super()._param_row()
        row["rate"] = self.rate_
        for j in range(self.n_components - 1):
            row[f"mean_{j + 1}"] = float(self.means_[j])
            row[f"std_{j + 1}"] = float(self.stds_[j])
        return row


# ----------------------------------------------------------------------------- fit_many


def fit_many(model: _BaseMixture, arrays: Iterable, *, as_frame: bool = False):
    """Fit copies of ``model`` to many 1-D arrays at once (batched, padded EM in numpy).

    Parameters
    ----------
    model : GammaMixture or ExponentialNormalMixture
        An estimator whose parameters are used for every fit; it is not modified.
    arrays : iterable of array_like
        One 1-D array per (width, replicate); lengths may differ. Each is checked as in
        ``model.fit`` and errors name the offending index.
    as_frame : bool, default False
        Return a pandas DataFrame with one row of fitted parameters per array instead of the
        list of estimators.

    Returns
    -------
    list of fitted estimators (same order as ``arrays``), or a pandas DataFrame.

    Notes
    -----
    Results equal ``type(model)(**model.get_params()).fit(a)`` for each array up to floating
    point rounding: the same EM runs on a ``(n_arrays, max_len)`` matrix with padding masked
    out, and each array stops at its own convergence.
    """
    if not isinstance(model, _BaseMixture):
        raise UsageError(
            f"model must be a GammaMixture or ExponentialNormalMixture, got {type(model).__name__}"
        )
    check_params(model)
    arrays = list(arrays)
    checked = [
        check_fit_data(a, model.zeros, model.n_components, what=f"arrays[{i}]")
        for i, a in enumerate(arrays)
    ]
    results: list[dict | None] = [None] * len(arrays)
    order = sorted(range(len(arrays)), key=lambda i: checked[i][0].size)
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop - start + 1) * checked[order[stop]][0].size <= max(
            _CHUNK_ELEMENTS, checked[order[start]][0].size
        ):
            stop += 1
        idx = order[start:stop]
        for i, res in zip(idx, _fit_positive(model, [checked[i][0] for i in idx]), strict=True):
            results[i] = res
        start = stop
    fitted = []
    for (pos, n_zeros), res in zip(checked, results, strict=True):
        est = type(model)(**model.get_params())
        est._set_fitted(res, n_zeros, pos.size)
        fitted.append(est)
    _warn_unconverged(
        [f"arrays[{i}]" for i, e in enumerate(fitted) if not e.converged_], model.max_iter
    )
    if as_frame:
        import pandas as pd

        return pd.DataFrame([e._param_row() for e in fitted])
    return fitted
