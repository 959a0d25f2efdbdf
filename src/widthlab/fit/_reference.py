"""Independent reference fit: direct numerical MLE with ``scipy.optimize.minimize``.

Used by the tests and ``benchmarks/bench_mixture.py`` to check EM's final log-likelihood. It
shares no code with the EM path: it minimises the mixture's negative mean log-likelihood, built
from ``scipy.stats`` log-densities, with L-BFGS-B over an unconstrained reparametrisation
(softmax weights, log shapes/scales/stds) from several starts, and keeps the best.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats
from scipy.special import logsumexp


def _unpack(theta: np.ndarray, k: int, family: str):
    logits = np.concatenate([[0.0], theta[: k - 1]])
    logw = logits - logsumexp(logits)
    rest = theta[k - 1 :]
    if family == "gamma":
        return logw, np.exp(rest[:k]), np.exp(rest[k:])
    return logw, np.exp(rest[0]), rest[1:k], np.exp(rest[k:])


def mixture_logpdf(x: np.ndarray, theta: np.ndarray, k: int, family: str) -> np.ndarray:
    """Per-value log-density of the mixture with unconstrained parameters ``theta``."""
    if family == "gamma":
        logw, shapes, scales = _unpack(theta, k, family)
        comp = stats.gamma.logpdf(x[:, None], shapes[None, :], scale=scales[None, :])
    else:
        logw, rate, means, stds = _unpack(theta, k, family)
        comp = np.concatenate(
            [
                stats.expon.logpdf(x[:, None], scale=1.0 / rate),
                stats.norm.logpdf(x[:, None], means[None, :], stds[None, :]),
            ],
            axis=1,
        )
    return logsumexp(comp + logw[None, :], axis=1)


def _start(x: np.ndarray, k: int, family: str, fracs: np.ndarray) -> np.ndarray:
    xs = np.sort(x)
    cuts = np.concatenate([[0], (fracs * xs.size).astype(int), [xs.size]])
    groups = [xs[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    w = np.array([g.size for g in groups], dtype=float) / xs.size
    logits = np.log(w[1:]) - np.log(w[0])
    if family == "gamma":
        m = np.array([g.mean() for g in groups])
        v = np.array([max(g.var(), 1e-12 * g.mean() ** 2) for g in groups])
        return np.concatenate([logits, np.log(m * m / v), np.log(v / m)])
    rate = 1.0 / groups[0].mean()
    means = np.array([g.mean() for g in groups[1:]])
    sds = np.array([max(g.std(), 1e-6 * xs.std()) for g in groups[1:]])
    return np.concatenate([logits, [np.log(rate)], means, np.log(sds)])


def scipy_mle(
    x, n_components: int = 2, family: str = "gamma", n_starts: int = 6, seed: int = 0
) -> tuple[float, np.ndarray]:
    """Best mean log-likelihood per value found by L-BFGS-B, and its parameter vector.

    ``family`` is ``"gamma"`` or ``"expnormal"``; ``x`` must be positive. Starts: the
    equal-count quantile split and ``n_starts - 1`` random quantile splits.
    """
    x = np.asarray(x, dtype=np.float64)
    k = n_components
    rng = np.random.default_rng(seed)

    def nll(theta):
        with np.errstate(all="ignore"):
            v = -np.mean(mixture_logpdf(x, theta, k, family))
        return v if np.isfinite(v) else 1e300

    best_ll, best_theta = -np.inf, None
    for s in range(n_starts):
        if s == 0:
            fracs = np.arange(1, k) / k
        else:
            fracs = np.sort(rng.uniform(0.05, 0.95, size=k - 1))
        theta0 = _start(x, k, family, fracs)
        res = optimize.minimize(
            nll,
            theta0,
            method="L-BFGS-B",
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9, "maxfun": 20000},
        )
        ll = -float(res.fun)
        if ll > best_ll:
            best_ll, best_theta = ll, res.x
    return best_ll, best_theta
