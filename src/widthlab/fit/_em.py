"""Batched expectation-maximisation core shared by the mixture estimators.

Every family here has component log-densities that are linear in three per-value features
(``[1, x, log x]`` for gamma, ``[1, x - c, (x - c)**2]`` for exponential + normal), so one EM
iteration over ``B`` arrays padded to a common length ``N`` is

* E-step: ``logp = coef @ feats`` with ``coef`` of shape ``(B, K, 3)`` and ``feats`` of shape
  ``(B, 3, N)``, then a log-sum-exp over the ``K`` components;
* M-step: the weighted sufficient statistics ``resp @ feats.T`` of shape ``(B, K, 3)``, from
  which each family computes its closed-form (or Newton-solved) parameters.

Padded entries have all-zero features, so they add nothing to the statistics and are masked out
of the log-likelihood. A single ``fit`` runs :func:`run_em_single`, the same iteration written
for one unpadded array (2-D arrays, no masks, and a two-component E-step that needs one
``exp`` and one ``log`` per value), so :func:`widthlab.fit.fit_many` reproduces individual fits
to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from widthlab.errors import UsageError

MIN_POINTS = 10
_ZERO_POLICIES = ("exclude", "error")


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the log-likelihood change fell below ``tol``."""


# ----------------------------------------------------------------------------- input checks


def check_params(est) -> None:
    """Validate constructor parameters at fit time (scikit-learn convention)."""
    k = est.n_components
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < est._min_components:
        raise UsageError(f"n_components={k!r} is invalid; pass an integer >= {est._min_components}")
    if not isinstance(est.max_iter, int | np.integer) or est.max_iter < 1:
        raise UsageError(f"max_iter={est.max_iter!r} is invalid; pass an integer >= 1")
    if not isinstance(est.n_init, int | np.integer) or est.n_init < 1:
        raise UsageError(f"n_init={est.n_init!r} is invalid; pass an integer >= 1")
    try:
        tol_ok = float(est.tol) >= 0 and np.isfinite(float(est.tol))
    except (TypeError, ValueError):
        tol_ok = False
    if not tol_ok:
        raise UsageError(f"tol={est.tol!r} is invalid; pass a finite number >= 0")
    if est.zeros not in _ZERO_POLICIES:
        raise UsageError(
            f"zeros={est.zeros!r} is invalid; pass 'exclude' (drop exact zeros and count them "
            "in n_zeros_) or 'error' (refuse data with exact zeros)"
        )


def as_1d(x, what: str = "x") -> np.ndarray:
    """``x`` as a 1-D float64 array (a column ``(n, 1)`` is accepted), finite and non-negative."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{what} is not numeric ({err}); pass a 1-D array of floats") from err
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise UsageError(f"{what} has shape {a.shape}; pass a 1-D array of values (one per neuron)")
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UsageError(
            f"{what} contains {int(bad.sum())} NaN/inf value(s) (first at index {i}: {a[i]}); "
            "drop or replace them before fitting"
        )
    if (a < 0).any():
        i = int(np.flatnonzero(a < 0)[0])
        raise UsageError(
            f"{what} contains {int((a < 0).sum())} negative value(s) (first at index {i}: "
            f"{a[i]}); these mixtures have support x >= 0 (activation stds are non-negative), "
            "so pass absolute values or fix the upstream computation"
        )
    return a


def check_fit_data(x, zeros: str, n_components: int, what: str = "x") -> tuple[np.ndarray, int]:
    """Return the positive values used for fitting and the number of exact zeros excluded."""
    a = as_1d(x, what)
    is_zero = a == 0
    n_zeros = int(is_zero.sum())
    if n_zeros and zeros == "error":
        raise UsageError(
            f"{what} contains {n_zeros} exact zero(s) (dead neurons) and zeros='error'; "
            "use zeros='exclude' to drop and count them, or remove them yourself"
        )
    pos = a[~is_zero]
    need = max(MIN_POINTS, 3 * n_components)
    if pos.size < need:
        raise UsageError(
            f"{what} has {pos.size} positive value(s) after excluding {n_zeros} zero(s); "
            f"a {n_components}-component fit needs at least {need}: pass more values or fewer "
            "components"
        )
    if pos.min() == pos.max():
        raise UsageError(
            f"{what}: all {pos.size} positive values equal {pos[0]!r}, so a mixture is "
            "undefined; check the data (e.g. a constant layer) or skip this array"
        )
    return pos, n_zeros


# ----------------------------------------------------------------------------- batched EM


@dataclass
class Batch:
    """Padded data for ``B`` arrays: features, their transpose, mask and per-array constants."""

    feats: np.ndarray  # (B, F, N), zero on padding
    featsT: np.ndarray  # (B, N, F)
    mask: np.ndarray | None  # (B, N) float, None when no padding
    n: np.ndarray  # (B,) number of values
    x: np.ndarray  # (B, N) raw values, padding = +inf (sorted last)
    consts: dict  # family-specific per-array constants, each (B,)

    def take(self, idx: np.ndarray) -> Batch:
        mask = None if self.mask is None else self.mask[idx]
        return Batch(
            self.feats[idx],
            self.featsT[idx],
            mask,
            self.n[idx],
            self.x[idx],
            {k: v[idx] for k, v in self.consts.items()},
        )


def make_batch(family, arrays: list[np.ndarray]) -> Batch:
    b = len(arrays)
    lens = np.array([a.size for a in arrays])
    n_max = int(lens.max())
    x = np.full((b, n_max), np.inf)
    for i, a in enumerate(arrays):
        x[i, : a.size] = a
    mask = None
    if (lens != n_max).any():
        mask = (np.arange(n_max)[None, :] < lens[:, None]).astype(np.float64)
    consts = family.constants(arrays)
    feats = family.features(x, mask, consts)
    # run_em_single never uses featsT, so a single array skips the contiguous copy
    featsT = feats.transpose(0, 2, 1)
    if b > 1:
        featsT = np.ascontiguousarray(featsT)
    return Batch(feats, featsT, mask, lens, x, consts)


def split_init(batch: Batch, k: int, fracs: np.ndarray | None) -> np.ndarray:
    """Hard responsibilities ``(B, K, N)`` from a split of each array's sorted values.

    ``fracs`` (B, K-1) are split points in (0, 1); None gives equal-count quantile groups. Every
    component gets at least two values.
    """
    b, n_max = batch.x.shape
    n = batch.n
    if fracs is None:
        fracs = np.broadcast_to(np.arange(1, k) / k, (b, k - 1))
    free = (n - 2 * k)[:, None]
    cuts = 2 * np.arange(1, k)[None, :] + np.round(fracs * free).astype(np.int64)  # (B, K-1)
    # Fast path: thresholds from a partial sort; exact ranks only when ties leave a group short.
    thr = (
        np.stack([np.partition(row, c)[c] for row, c in zip(batch.x, cuts, strict=True)])
        if k > 1
        else np.empty((b, 0))
    )
    comp = (batch.x[:, None, :] >= thr[:, :, None]).sum(1)  # (B, N)
    counts = (comp[:, None, :] == np.arange(k)[None, :, None]).sum(2) - np.bincount(
        [k - 1], minlength=k
    )[None, :] * (n_max - n)[:, None]
    if (counts < 2).any():
        order = np.argsort(batch.x, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(n_max)[None, :].repeat(b, 0), axis=1)
        comp = (rank[:, None, :] >= cuts[:, :, None]).sum(1)
    resp = (comp[:, None, :] == np.arange(k)[None, :, None]).astype(np.float64)
    return resp


def run_em(family, batch: Batch, resp0: np.ndarray, max_iter: int, tol: float) -> dict:
    """EM from initial responsibilities ``resp0`` for every array of ``batch``.

    Returns a dict with ``params`` (family dict of (B, K) arrays), ``logw`` (B, K), ``lb`` (B,),
    ``n_iter`` (B,), ``converged`` (B,) and ``history`` (list of 1-D arrays).
    """
    b = batch.n.size
    stats = resp0 @ batch.featsT
    params, logw = family.m_step(stats, None, batch.consts)
    out_params = {key: np.empty_like(v) for key, v in params.items()}
    out_logw = np.empty_like(logw)
    out_lb = np.empty(b)
    out_iter = np.zeros(b, dtype=np.int64)
    out_conv = np.zeros(b, dtype=bool)
    hist = np.empty((b, max_iter + 1))

    work = np.arange(b)  # global index of each working row
    wb = batch
    prev = np.full(b, -np.inf)
    alive = np.ones(b, dtype=bool)
    it = 0
    while True:
        coef = family.coeffs(params, wb.consts)
        coef[:, :, 0] += logw
        logp = coef @ wb.feats  # (W, K, N)
        m = logp.max(axis=1, keepdims=True)
        np.subtract(logp, m, out=logp)
        np.exp(logp, out=logp)
        s = logp.sum(axis=1, keepdims=True)
        lse = np.log(s)
        lse += m
        if wb.mask is not None:
            lse = lse[:, 0, :] * wb.mask
        ll = lse.reshape(lse.shape[0], -1).sum(axis=1) / wb.n
        hist[work, it] = ll
        done = np.abs(ll - prev) < tol if it > 0 else np.zeros(work.size, dtype=bool)
        stop = np.ones(work.size, dtype=bool) if it == max_iter else done
        stop &= alive
        if stop.any():
            g = work[stop]
            for key, v in params.items():
                out_params[key][g] = v[stop]
            out_logw[g] = logw[stop]
            out_lb[g] = ll[stop]
            out_iter[g] = it
            out_conv[g] = done[stop]
            alive &= ~stop
            if not alive.any():
                break
            if alive.sum() <= 0.75 * work.size:
                idx = np.flatnonzero(alive)
                work = work[idx]
                wb = wb.take(idx)
                logp, s = logp[idx], s[idx]
                params = {key: v[idx] for key, v in params.items()}
                logw = logw[idx]
                ll = ll[idx]
                alive = alive[idx]
        # M-step
        np.divide(logp, s, out=logp)  # responsibilities
        stats = logp @ wb.featsT  # (W, K, F)
        params, logw = family.m_step(stats, params, wb.consts, logw)
        prev = ll
        it += 1
    history = [hist[i, : out_iter[i] + 1].copy() for i in range(b)]
    return {
        "params": out_params,
        "logw": out_logw,
        "lb": out_lb,
        "n_iter": out_iter,
        "converged": out_conv,
        "history": history,
    }


# ----------------------------------------------------------------------------- one array


def _estep_two(logp: np.ndarray) -> float:
    """Two-component E-step on ``logp`` (2, N), in place: returns the summed log-likelihood
    and leaves the responsibilities in ``logp``.

    With ``d = logp[1] - logp[0]`` and ``e = exp(-|d|)``, the log-sum-exp is
    ``max(logp) + log(1 + e)`` and the responsibilities are ``big = 1 / (1 + e)`` (the larger
    component) and ``small = e / (1 + e)``. Each row is assembled without branches as
    ``small + [row is the larger] * (big - small)``, exact where the row is the smaller one.
    """
    lo, hi = logp[0], logp[1]
    d = hi - lo
    up = d >= 0
    m = np.maximum(lo, hi)
    total = m.sum()
    e = np.abs(d, out=d)
    np.negative(e, out=e)
    np.exp(e, out=e)  # e = exp(-|d|)
    s = np.add(e, 1.0, out=m)
    total += np.log(s).sum()
    big = np.reciprocal(s, out=s)
    small = np.multiply(e, big, out=e)
    diff = np.subtract(big, small, out=big)
    np.multiply(diff, up, out=hi)
    hi += small
    np.multiply(diff, ~up, out=lo)
    lo += small
    return float(total)


def _estep_general(logp: np.ndarray) -> float:
    """E-step on ``logp`` (K, N), in place: the summed log-likelihood; responsibilities
    left in ``logp``."""
    m = logp.max(axis=0)
    np.subtract(logp, m, out=logp)
    np.exp(logp, out=logp)
    s = logp.sum(axis=0)
    np.divide(logp, s, out=logp)
    return float(m.sum() + np.log(s).sum())


def run_em_single(family, batch: Batch, resp0: np.ndarray, max_iter: int, tol: float) -> dict:
    """:func:`run_em` for a batch of one unpadded array (``batch.mask is None``), same result.

    Works on ``(K, N)`` arrays instead of ``(1, K, N)`` and takes the sufficient statistics
    ``resp @ feats.T`` from the untransposed features (no contiguous copy of the transpose).
    """
    feats = batch.feats[0]  # (F, N)
    n = float(batch.n[0])
    consts = batch.consts
    estep = _estep_two if resp0.shape[1] == 2 else _estep_general
    params, logw = family.m_step((resp0[0] @ feats.T)[None], None, consts)
    hist = []
    prev = -np.inf
    it = 0
    while True:
        coef = family.coeffs(params, consts)[0]  # (K, F)
        coef[:, 0] += logw[0]
        logp = coef @ feats  # (K, N)
        ll = estep(logp) / n
        hist.append(ll)
        done = it > 0 and abs(ll - prev) < tol
        if done or it == max_iter:
            break
        params, logw = family.m_step((logp @ feats.T)[None], params, consts, logw)
        prev = ll
        it += 1
    return {
        "params": params,
        "logw": logw,
        "lb": np.array([ll]),
        "n_iter": np.array([it], dtype=np.int64),
        "converged": np.array([done]),
        "history": [np.array(hist)],
    }
