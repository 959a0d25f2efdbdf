"""The pieces the mixtures of :mod:`widthlab.fit.mixtures` are built from: constants, the gamma
and exponential + normal component families (E and M steps), the gamma shape solver and the
fitting core with restarts (re-exported by :mod:`widthlab.fit.mixtures`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.special import digamma, gammaln, zeta

from widthlab.fit._em import (
    ConvergenceWarning,
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
