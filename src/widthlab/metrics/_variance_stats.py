"""Small building blocks of the variance study: a mean with its confidence interval, a
Shapiro-Wilk test that subsamples large arrays, and the checks of its inputs (re-exported by
:mod:`widthlab.metrics.variance`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from widthlab.errors import UsageError

#: Largest sample :func:`shapiro` hands to scipy unchanged; larger ones are subsampled.
SHAPIRO_MAX_N = 5000


# --------------------------------------------------------------------------------------------
# small building blocks
# --------------------------------------------------------------------------------------------


def mean_ci(values: Sequence[float] | np.ndarray,
            level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` with a two-sided Student-t confidence interval.

    Parameters
    ----------
    values : sequence of float
        One number per replicate. NaN entries are ignored.
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    (mean, lo, hi) : tuple of float
        ``lo, hi = mean -+ t.ppf((1 + level) / 2, n - 1) * sd / sqrt(n)`` with ``sd`` the
        ``ddof=1`` standard deviation. All three are NaN when no value is given; ``lo`` and ``hi``
        are NaN when only one is.
    """
    if not (_is_real(level) and 0.0 < level < 1.0):
        raise UsageError(f"level must be in (0, 1), got {level!r}; pass e.g. level=0.95")
    v = np.asarray(values, dtype=float).ravel()
    v = v[~np.isnan(v)]
    n = v.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if n == 1:
        return mean, math.nan, math.nan
    half = float(sps.t.ppf((1.0 + level) / 2.0, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def shapiro(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Shapiro-Wilk W and p-value, subsampling deterministically above 5000 values.

    Parameters
    ----------
    values : array_like of float
        The sample; must be finite.

    Returns
    -------
    (w, p) : tuple of float
        ``scipy.stats.shapiro`` on ``values``, or, when there are more than
        :data:`SHAPIRO_MAX_N` values, on the 5000 sorted values at evenly spaced ranks
        ``round(linspace(0, n - 1, 5000))``. Both are NaN for fewer than 3 values or a sample
        with range zero.
    """
    v = np.asarray(values, dtype=float).ravel()
    if not np.isfinite(v).all():
        raise UsageError("shapiro: the sample holds NaN or inf; drop those values first")
    if v.size < 3 or v.min() == v.max():
        return math.nan, math.nan
    if v.size > SHAPIRO_MAX_N:
        ranks = np.round(np.linspace(0, v.size - 1, SHAPIRO_MAX_N)).astype(np.intp)
        v = np.sort(v)[ranks]
    res = sps.shapiro(v)
    return float(res.statistic), float(res.pvalue)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_width(w: Any, what: str) -> int:
    if isinstance(w, bool | np.bool_) or not isinstance(w, int | np.integer) or w < 1:
        raise UsageError(f"{what}: widths must be positive integers, got {w!r}; key the dict by "
                         f"the layer width, e.g. {{64: [...]}}")
    return int(w)


def _as_list(v: Any, what: str) -> list:
    if isinstance(v, np.ndarray) or not isinstance(v, Sequence) or isinstance(v, str):
        raise UsageError(f"{what}: expected a list with one entry per replicate (seed), got "
                         f"{type(v).__name__}; wrap a single model's array as [array]")
    return list(v)


def _std_array(a: Any, what: str) -> np.ndarray | None:
    """A replicate's per-neuron stds as a 1-D float array, or None when it is to be skipped."""
    if a is None:
        return None
    try:
        arr = np.asarray(a, dtype=float)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}: cannot read the stds as numbers ({exc}); pass a 1-D float "
                         f"array or None for a failed replicate") from None
    if arr.ndim != 1 or arr.size == 0:
        raise UsageError(f"{what}: expected a non-empty 1-D array of per-neuron stds, got shape "
                         f"{arr.shape}; pass one value per hidden neuron")
    if not np.isfinite(arr).all():
        return None  # a diverged run: skipped like None
    if (arr < 0).any():
        raise UsageError(f"{what}: standard deviations cannot be negative (min {arr.min():g}); "
                         f"pass the per-neuron std, not the mean or a raw activation")
    return arr


def _dead_mask(m: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(m)
    if arr.shape != (n,):
        raise UsageError(f"{what}: the dead mask has shape {arr.shape} but the stds have shape "
                         f"({n},); pass one boolean per neuron of the same model")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise UsageError(f"{what}: the dead mask must be boolean (True = dead), got values "
                             f"other than 0/1")
        arr = arr.astype(bool)
    return arr


def _pairs(x: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Equal-length 1-D float arrays with the pairs holding a NaN dropped."""
    try:
        xa = np.asarray(x, dtype=float).ravel()
        ya = np.asarray(y, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}: x and y must be numbers ({exc})") from None
    if xa.size != ya.size:
        raise UsageError(f"{what}: x has {xa.size} values but y has {ya.size}; pass one y per x")
    keep = ~(np.isnan(xa) | np.isnan(ya))
    xa, ya = xa[keep], ya[keep]
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise UsageError(f"{what}: x and y must be finite (NaN pairs are dropped, inf is not); "
                         f"remove the infinite values")
    if xa.size < 3:
        raise UsageError(f"{what}: needs at least 3 (x, y) pairs without NaN, got {xa.size}; "
                         f"add more widths to the sweep")
    return xa, ya


def _require(summary: Any, cols: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(summary, pd.DataFrame):
        raise UsageError(f"{what}: expected the DataFrame from width_summary(), got "
                         f"{type(summary).__name__}")
    missing = [c for c in cols if c not in summary.columns]
    if missing:
        accs = sorted(c[:-4] for c in summary.columns if c.endswith("_acc"))
        hint = f" (accuracy splits present: {accs})" if any(c.endswith("_acc") for c in missing) \
            else ""
        raise UsageError(f"{what}: the summary lacks column(s) {missing}{hint}; build it with "
                         f"width_summary(..., accuracy={{split: ...}}) or pick another split")
    if summary.empty:
        raise UsageError(f"{what}: the summary has no rows; sweep at least one width")
    return summary
