"""Gamma and exponential + normal mixtures fitted by EM, and the batched :func:`fit_many`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np
from scipy.special import digamma, gammaln, logsumexp, xlogy, zeta

from widthlab.errors import UsageError
from widthlab.fit._em import (
    ConvergenceWarning,
    as_1d,
    check_fit_data,
    check_params,
    make_batch,
    run_em,
    run_em_single,
    split_init,
)

_PARAM_NAMES = ("n_components", "max_iter", "tol", "n_init", "random_state", "zeros")
_SHAPE_MIN, _SHAPE_MAX = 1e-4, 1e7
_STD_FLOOR = 1e-5  # relative to the array's standard deviation
_EMPTY = 1e-12  # a component with less responsibility mass than this * n keeps its parameters
_CHUNK_ELEMENTS = 1 << 21  # fit_many pads at most this many values per batch
_LOG_2PI = math.log(2 * math.pi)


def _masked_features(x: np.ndarray, mask: np.ndarray | None, cols: list) -> np.ndarray:
    f = np.stack(cols, axis=1)
    if mask is not None:
        f = np.where(mask[:, None, :] > 0, f, 0.0)
    return f


def _weights(nk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = nk / nk.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        return w, np.log(w)


def solve_gamma_shape(c: np.ndarray, max_steps: int = 30) -> np.ndarray:
    """Solve ``log(k) - digamma(k) = c`` for ``k > 0`` (the gamma MLE shape), elementwise.

    Starts from the closed-form approximation ``(3 - c + sqrt((c - 3)**2 + 24 c)) / (12 c)``
    (accurate to about 1.5%) and takes Newton steps until the relative change is below 1e-14.
    The result is clipped to ``[1e-4, 1e7]``.
    """
    c = np.maximum(np.asarray(c, dtype=np.float64), 1e-300)
    k = (3.0 - c + np.sqrt((c - 3.0) ** 2 + 24.0 * c)) / (12.0 * c)
    k = _clip_shape(k)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(max_steps):
            f = np.log(k) - digamma(k) - c
            fp = 1.0 / k - zeta(2.0, k)  # trigamma(k)
            new = k - f / fp
            new = _clip_shape(np.where(np.isfinite(new) & (new > 0), new, 0.5 * k))
            if (np.abs(new - k) <= 1e-14 * k).all():
                return new
            k = new
    return k


def _clip_shape(k: np.ndarray) -> np.ndarray:
    # np.minimum/np.maximum rather than np.clip: same values, far less call overhead
    return np.minimum(np.maximum(k, _SHAPE_MIN), _SHAPE_MAX)


# ----------------------------------------------------------------------------- families


class _GammaFamily:
    """Components ``Gamma(shape k, scale theta)``; features ``[1, x, log x]``."""

    @staticmethod
    def constants(arrays):
        return {"mean": np.array([a.mean() for a in arrays])}

    @staticmethod
    def features(x, mask, consts):
        with np.errstate(invalid="ignore"):
            return _masked_features(x, mask, [np.ones_like(x), x, np.log(x)])

    @staticmethod
    def coeffs(p, consts):
        k, th = p["shape"], p["scale"]
        return np.stack([-gammaln(k) - k * np.log(th), -1.0 / th, k - 1.0], axis=-1)

    @staticmethod
    def m_step(stats, prev, consts, prev_logw=None):
        nk, sx, slog = stats[..., 0], stats[..., 1], stats[..., 2]
        w, logw = _weights(nk)
        ok = nk > _EMPTY * nk.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = sx / nk
            c = np.log(mean) - slog / nk
        c = np.where(ok, c, 1.0)
        mean = np.where(ok, mean, 1.0)
        k = solve_gamma_shape(c)
        th = np.maximum(mean / k, np.finfo(np.float64).tiny)
        if prev is None:
            prev = {
                "shape": np.ones_like(k),
                "scale": np.broadcast_to(consts["mean"][:, None], k.shape),
            }
        return {
            "shape": np.where(ok, k, prev["shape"]),
            "scale": np.where(ok, th, prev["scale"]),
        }, logw

    @staticmethod
    def order(p):
        return np.argsort(p["shape"] * p["scale"], axis=1, kind="stable")

    @staticmethod
    def permute(p, perm):
        return {k: np.take_along_axis(v, perm, axis=1) for k, v in p.items()}

    @staticmethod
    def n_free(k):
        return 3 * k - 1


class _ExpNormalFamily:
    """Component 0 ``Exponential(rate)``, components 1.. ``Normal(mean, std)``.

    Features are ``[1, x - c, (x - c)**2]`` with ``c`` the array's mean, for conditioning.
    """

    @staticmethod
    def constants(arrays):
        return {
            "center": np.array([a.mean() for a in arrays]),
            "xmin": np.array([a.min() for a in arrays]),
            "sd": np.array([a.std() for a in arrays]),
        }

    @staticmethod
    def features(x, mask, consts):
        with np.errstate(invalid="ignore"):
            d = x - consts["center"][:, None]
            return _masked_features(x, mask, [np.ones_like(x), d, d * d])

    @staticmethod
    def coeffs(p, consts):
        lam = p["rate"]  # (B, 1)
        c = consts["center"][:, None]
        exp = np.stack([np.log(lam) - lam * c, -lam, np.zeros_like(lam)], axis=-1)
        mu = p["mean"] - c
        iv = 1.0 / (p["std"] * p["std"])
        nrm = np.stack(
            [-0.5 * _LOG_2PI - np.log(p["std"]) - 0.5 * mu * mu * iv, mu * iv, -0.5 * iv], axis=-1
        )
        return np.concatenate([exp, nrm], axis=1)

    @staticmethod
    def m_step(stats, prev, consts, prev_logw=None):
        nk, sd1, sd2 = stats[..., 0], stats[..., 1], stats[..., 2]
        w, logw = _weights(nk)
        ok = nk > _EMPTY * nk.sum(axis=1, keepdims=True)
        c = consts["center"][:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            n0 = nk[:, :1]
            sx = np.maximum(sd1[:, :1] + c * n0, n0 * consts["xmin"][:, None])
            lam = n0 / sx
            mu = sd1[:, 1:] / nk[:, 1:]
            var = sd2[:, 1:] / nk[:, 1:] - mu * mu
        floor = (_STD_FLOOR * consts["sd"][:, None]) ** 2
        std = np.sqrt(np.maximum(np.where(ok[:, 1:], var, floor), floor))
        mu = np.where(ok[:, 1:], mu, 0.0) + c
        if prev is None:
            prev = {
                "rate": 1.0 / c,
                "mean": np.broadcast_to(c, mu.shape),
                "std": np.sqrt(floor) + 0 * mu,
            }
        return {
            "rate": np.where(ok[:, :1], lam, prev["rate"]),
            "mean": np.where(ok[:, 1:], mu, prev["mean"]),
            "std": np.where(ok[:, 1:], std, prev["std"]),
        }, logw

    @staticmethod
    def order(p):
        b = p["mean"].shape[0]
        inner = np.argsort(p["mean"], axis=1, kind="stable") + 1
        return np.concatenate([np.zeros((b, 1), dtype=inner.dtype), inner], axis=1)

    @staticmethod
    def permute(p, perm):
        inner = perm[:, 1:] - 1
        return {
            "rate": p["rate"],
            "mean": np.take_along_axis(p["mean"], inner, axis=1),
            "std": np.take_along_axis(p["std"], inner, axis=1),
        }

    @staticmethod
    def n_free(k):
        return 1 + 2 * (k - 1) + (k - 1)


# ----------------------------------------------------------------------------- fitting core


def _rng(random_state) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**32))
    return np.random.default_rng(random_state)


def _restart_fracs(est, n_arrays: int) -> np.ndarray:
    """Random split fractions ``(n_init - 1, B, K - 1)``; an int seed restarts per array."""
    r, k = est.n_init - 1, est.n_components
    shared = None if isinstance(est.random_state, int | np.integer) else _rng(est.random_state)
    out = np.empty((r, n_arrays, k - 1))
    for i in range(n_arrays):
        g = shared if shared is not None else np.random.default_rng(est.random_state)
        out[:, i, :] = np.sort(g.uniform(0.05, 0.95, size=(r, k - 1)), axis=-1)
    return out


def _fit_positive(est, arrays: list[np.ndarray]) -> list[dict]:
    """Fit ``est``'s model to each positive 1-D array; one result dict per array."""
    fam = est._family
    k = est.n_components
    batch = make_batch(fam, arrays)
    em = run_em_single if batch.mask is None and len(arrays) == 1 else run_em
    best = em(fam, batch, split_init(batch, k, None), est.max_iter, float(est.tol))
    if est.n_init > 1:
        fracs = _restart_fracs(est, len(arrays))
        for r in range(est.n_init - 1):
            res = em(fam, batch, split_init(batch, k, fracs[r]), est.max_iter, float(est.tol))
            # a margin keeps the choice stable against rounding (batched vs single fits)
            better = res["lb"] > best["lb"] + 1e-10 * np.maximum(1.0, np.abs(best["lb"]))
            for key in best["params"]:
                best["params"][key][better] = res["params"][key][better]
            best["logw"][better] = res["logw"][better]
            for key in ("lb", "n_iter", "converged"):
                best[key][better] = res[key][better]
            for i in np.flatnonzero(better):
                best["history"][i] = res["history"][i]
    perm = fam.order(best["params"])
    params = fam.permute(best["params"], perm)
    logw = np.take_along_axis(best["logw"], perm, axis=1)
    out = []
    for i in range(len(arrays)):
        out.append(
            {
                "params": {key: v[i].copy() for key, v in params.items()},
                "weights": np.exp(logw[i]),
                "lb": float(best["lb"][i]),
                "n_iter": int(best["n_iter"][i]),
                "converged": bool(best["converged"][i]),
                "history": best["history"][i],
            }
        )
    return out


def _warn_unconverged(labels: list[str], max_iter: int) -> None:
    if labels:
        shown = ", ".join(labels[:5]) + (" ..." if len(labels) > 5 else "")
        warnings.warn(
            f"EM did not converge within max_iter={max_iter} for {shown}; raise max_iter or "
            "tol, or try n_init > 1",
            ConvergenceWarning,
            stacklevel=3,
        )


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
