"""The variance study's statistics: is the spread of per-neuron activation std a width proxy?

A 2017 journal trained one-hidden-layer networks of many widths and asked whether the
distribution of the hidden neurons' activation standard deviations says which width is right:
does it look most *normal* (largest Shapiro-Wilk W) near the width where test accuracy stops
improving, do dead neurons pile up as the layer grows, does the summed std grow like
``log(width)``? This module turns per-model arrays into those numbers and verdicts. It is pure
numpy/pandas/scipy: no torch, no store access.

Example::

    from widthlab.metrics import width_summary, dead_grows_with_width

    summary = width_summary(stds, accuracy={"test": test_acc})  # stds[width] = [std per seed]
    verdict = dead_grows_with_width(summary)
    verdict.holds, verdict.text

Conventions
-----------
* Replicates are models of one width trained with different seeds. A replicate passed as
  ``None``, or whose std array holds a non-finite value (a diverged run), is skipped; the
  ``replicates`` column counts the replicates actually used.
* Per-replicate quantities are averaged over replicates, with a 95 % Student-t interval
  ``mean +- t.ppf(0.975, n - 1) * sd / sqrt(n)`` (``sd`` with ``ddof=1``); its bounds are NaN
  when fewer than two replicates are available.
* Shapiro-Wilk on more than 5000 values: scipy's p-value is only approximate beyond that size
  and it warns. We test a deterministic subsample instead: the 5000 order statistics at evenly
  spaced ranks ``round(linspace(0, n - 1, 5000))`` of the sorted values, which keeps the
  empirical quantiles (the shape Shapiro-Wilk tests) and is reproducible. W and p are NaN for
  fewer than 3 values or when all values are equal (scipy reports W = 1 there, which would
  make a layer of dead neurons look perfectly normal).
* The verdict functions compute every outcome from the data; none is hard-coded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from widthlab.errors import UsageError
from widthlab.metrics._variance_stats import (
    SHAPIRO_MAX_N,
    _is_real,
    _pairs,
    _require,
    mean_ci,
    shapiro,
)
from widthlab.metrics._variance_summary import (
    width_summary,
)

__all__ = [
    "SHAPIRO_MAX_N",
    "Verdict",
    "accuracy_plateau",
    "accuracy_saturates",
    "closest_turning_point",
    "dead_grows_with_width",
    "first_crossing",
    "log_fit",
    "mean_ci",
    "most_normal_width",
    "plateau_shift",
    "shapiro",
    "shapiro_argmax_vs_plateau",
    "spearman_trend",
    "total_std_grows_logarithmically",
    "width_summary",
]


# --------------------------------------------------------------------------------------------
# trends
# --------------------------------------------------------------------------------------------


def log_fit(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict:
    """Least-squares fit of ``y = a + b * ln(x)``.

    Parameters
    ----------
    x, y : array_like of float
        Equal length; ``x > 0``. Pairs where either value is NaN are dropped.

    Returns
    -------
    dict
        ``a`` (intercept), ``b`` (slope per unit of ``ln x``), ``r2`` (coefficient of
        determination ``1 - SS_res / SS_tot``; NaN when ``y`` is constant) and ``n`` (pairs
        used).

    Raises
    ------
    UsageError
        Fewer than 3 pairs, a non-positive ``x``, or fewer than 2 distinct ``x`` values.
    """
    xa, ya = _pairs(x, y, "log_fit")
    if (xa <= 0).any():
        raise UsageError(f"log_fit: x must be > 0 to take its log, got min {xa.min():g}; fit "
                         f"against the width, which is positive")
    if np.unique(xa).size < 2:
        raise UsageError("log_fit: all x values are equal, so the slope is undefined; sweep at "
                         "least two widths")
    lx = np.log(xa)
    design = np.column_stack([np.ones_like(lx), lx])
    (a, b), *_ = np.linalg.lstsq(design, ya, rcond=None)
    resid = ya - (a + b * lx)
    ss_res = float(resid @ resid)
    ss_tot = float(((ya - ya.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return {"a": float(a), "b": float(b), "r2": float(r2), "n": int(xa.size)}


def spearman_trend(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict:
    """Spearman rank correlation of ``y`` with ``x``.

    Parameters
    ----------
    x, y : array_like of float
        Equal length, at least 3 pairs after dropping pairs that hold a NaN.

    Returns
    -------
    dict
        ``rho`` and ``p`` from ``scipy.stats.spearmanr`` (two-sided; both NaN when ``x`` or ``y``
        is constant) and ``n``, the pairs used.
    """
    xa, ya = _pairs(x, y, "spearman_trend")
    if xa.min() == xa.max() or ya.min() == ya.max():
        return {"rho": math.nan, "p": math.nan, "n": int(xa.size)}
    res = sps.spearmanr(xa, ya)
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": int(xa.size)}


def most_normal_width(summary: pd.DataFrame) -> dict:
    """The width whose pooled stds look most normal (largest Shapiro-Wilk W).

    Parameters
    ----------
    summary : pandas.DataFrame
        From :func:`width_summary`; needs ``width`` and ``shapiro_w``. Rows with NaN W are
        skipped; on ties the smallest width wins.

    Returns
    -------
    dict
        ``width``, ``w``, and ``lower``/``upper``: the neighbouring widths in the sorted list of
        all widths of ``summary`` (None at the ends).
    """
    s = _require(summary, ["width", "shapiro_w"], "most_normal_width")
    s = s.sort_values("width", kind="stable")
    all_widths = [int(w) for w in s["width"]]
    ok = s[s["shapiro_w"].notna()]
    if ok.empty:
        raise UsageError("most_normal_width: every shapiro_w is NaN (fewer than 3 neurons or all "
                         "stds equal); nothing to compare")
    best = ok.iloc[int(np.argmax(ok["shapiro_w"].to_numpy()))]
    width = int(best["width"])
    i = all_widths.index(width)
    return {"width": width, "w": float(best["shapiro_w"]),
            "lower": all_widths[i - 1] if i > 0 else None,
            "upper": all_widths[i + 1] if i + 1 < len(all_widths) else None}


def accuracy_plateau(widths: Sequence[int] | np.ndarray, acc: Sequence[float] | np.ndarray,
                     tol: float = 0.005) -> int:
    """The smallest width whose accuracy is within ``tol`` of the best accuracy.

    Parameters
    ----------
    widths : sequence of int
        Distinct widths, in any order (they are sorted here).
    acc : sequence of float
        Accuracy per width (e.g. a mean over seeds, as a fraction). NaN entries are ignored.
    tol : float
        Absolute tolerance, in the units of ``acc``: width ``w`` is on the plateau when
        ``max(acc) - acc[w] <= tol`` (with a 1e-12 allowance for float rounding).

    Returns
    -------
    int
        The smallest width on the plateau.
    """
    if not (_is_real(tol) and tol >= 0):
        raise UsageError(f"accuracy_plateau: tol must be a finite number >= 0, got {tol!r}; "
                         f"e.g. tol=0.005 for half a percentage point")
    w = np.asarray(widths, dtype=float).ravel()
    a = np.asarray(acc, dtype=float).ravel()
    if w.size != a.size:
        raise UsageError(f"accuracy_plateau: {w.size} widths but {a.size} accuracies; pass one "
                         f"accuracy per width")
    if not np.isfinite(w).all() or (w < 1).any() or (w != np.round(w)).any():
        raise UsageError("accuracy_plateau: widths must be positive integers")
    if np.unique(w).size != w.size:
        raise UsageError("accuracy_plateau: widths repeat; average the seeds of a width first")
    keep = ~np.isnan(a)
    if not keep.any():
        raise UsageError("accuracy_plateau: every accuracy is NaN; evaluate the models first")
    w, a = w[keep], a[keep]
    order = np.argsort(w)
    w, a = w[order], a[order]
    on = (a.max() - a) <= tol + 1e-12
    return int(w[np.argmax(on)])


# --------------------------------------------------------------------------------------------
# verdicts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The outcome of testing one claim of the study on data.

    Attributes
    ----------
    claim : str
        The claim, as a short sentence ("dead neurons grow with width").
    holds : bool
        Whether the data supports it under the stated criterion.
    text : str
        One line for a report, with the numbers behind the outcome.
    numbers : dict
        Those numbers, for tables and tests.
    """

    claim: str
    holds: bool
    text: str
    numbers: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text


def _p(p: float) -> str:
    return "nan" if math.isnan(p) else f"{p:.2g}"


def dead_grows_with_width(summary: pd.DataFrame, alpha: float = 0.05) -> Verdict:
    """Do dead neurons grow with width? Holds iff Spearman ``rho > 0`` and ``p < alpha``.

    Uses the ``dead`` column (mean dead count per model) against ``width``; rows with NaN are
    dropped and at least 3 widths are needed.
    """
    if not (_is_real(alpha) and 0 < alpha < 1):
        raise UsageError(f"dead_grows_with_width: alpha must be in (0, 1), got {alpha!r}")
    s = _require(summary, ["width", "dead"], "dead_grows_with_width")
    tr = spearman_trend(s["width"], s["dead"])
    rho, p = tr["rho"], tr["p"]
    holds = bool(rho > 0 and p < alpha)
    claim = "dead neurons grow with width"
    if math.isnan(rho):
        detail = "Spearman rho undefined: the dead counts do not vary"
    else:
        detail = f"Spearman rho = {rho:.2f}, p = {_p(p)}"
    text = (f"{claim} ({detail})" if holds else
            f"{claim} does not hold ({detail}; needs rho > 0 and p < {alpha:g})")
    return Verdict(claim, holds, text, {"rho": rho, "p": p, "n": tr["n"], "alpha": float(alpha)})


def total_std_grows_logarithmically(summary: pd.DataFrame, min_r2: float = 0.9) -> Verdict:
    """Does the summed std grow like ``log(width)``? Holds iff ``b > 0`` and ``R^2 >= min_r2``.

    Fits ``total_std = a + b * ln(width)`` with :func:`log_fit` (rows with NaN dropped).
    """
    if not (_is_real(min_r2) and min_r2 <= 1):
        raise UsageError(f"total_std_grows_logarithmically: min_r2 must be a number <= 1, got "
                         f"{min_r2!r}")
    s = _require(summary, ["width", "total_std"], "total_std_grows_logarithmically")
    fit = log_fit(s["width"], s["total_std"])
    a, b, r2 = fit["a"], fit["b"], fit["r2"]
    holds = bool(b > 0 and r2 >= min_r2)
    claim = "total std grows logarithmically with width"
    detail = f"total_std = {a:.4g} + {b:.4g} ln(width), R^2 = {r2:.3f}"
    text = (f"{claim} ({detail})" if holds else
            f"{claim} does not hold ({detail}; needs b > 0 and R^2 >= {min_r2:g})")
    return Verdict(claim, holds, text, {**fit, "min_r2": float(min_r2)})


def _plateau_of(summary: pd.DataFrame, split: str, tol: float, what: str) -> int:
    col = f"{split}_acc"
    s = _require(summary, ["width", col], what)
    return accuracy_plateau(s["width"].to_numpy(), s[col].to_numpy(), tol)


def shapiro_argmax_vs_plateau(summary: pd.DataFrame, split: str = "test",
                              tol: float = 0.005) -> Verdict:
    """Where is the most normal width relative to the accuracy plateau?

    A factual comparison, so ``holds`` is always True; ``text`` and ``numbers["relation"]`` say
    whether the width of largest Shapiro-Wilk W (:func:`most_normal_width`) lies below, above or
    at the plateau width (:func:`accuracy_plateau` on ``{split}_acc`` with ``tol``).
    """
    best = most_normal_width(summary)
    plateau = _plateau_of(summary, split, tol, "shapiro_argmax_vs_plateau")
    relation = "below" if best["width"] < plateau else "above" if best["width"] > plateau \
        else "at"
    claim = f"most normal width vs {split} accuracy plateau"
    text = (f"the most normal width ({best['width']}, W = {best['w']:.4f}) is {relation} the "
            f"{split} accuracy plateau ({plateau}, within {tol:g} of the best accuracy)")
    return Verdict(claim, True, text,
                   {"argmax_width": best["width"], "w": best["w"], "lower": best["lower"],
                    "upper": best["upper"], "plateau_width": plateau, "relation": relation,
                    "tol": float(tol)})


def plateau_shift(summary_a: pd.DataFrame, summary_b: pd.DataFrame, name_a: str, name_b: str,
                  split: str = "test", tol: float = 0.005) -> Verdict:
    """Does dataset B need a wider layer than dataset A? Holds iff plateau(B) > plateau(A).

    E.g. ``plateau_shift(mnist, fashion, "MNIST", "FashionMNIST")`` checks that FashionMNIST's
    ``{split}`` accuracy plateaus (:func:`accuracy_plateau`, ``tol``) at a larger width.
    """
    pa = _plateau_of(summary_a, split, tol, f"plateau_shift({name_a})")
    pb = _plateau_of(summary_b, split, tol, f"plateau_shift({name_b})")
    holds = pb > pa
    claim = f"{name_b} plateaus at a larger width than {name_a}"
    detail = f"{split} accuracy plateau {pb} vs {pa}, tol {tol:g}"
    text = (f"{claim} ({detail})" if holds else
            f"{name_b} does not plateau at a larger width than {name_a} ({detail})")
    return Verdict(claim, bool(holds), text,
                   {"name_a": name_a, "name_b": name_b, "plateau_a": pa, "plateau_b": pb,
                    "tol": float(tol)})


def accuracy_saturates(summary: pd.DataFrame, split: str = "test", tol: float = 0.005
                       ) -> Verdict:
    """Does accuracy stop improving with width? Holds iff the plateau width
    (:func:`accuracy_plateau`) is below the widest width tried and the accuracy gained over the
    upper half of the widths is smaller than over the lower half."""
    col = f"{split}_acc"
    s = _require(summary, ["width", col], "accuracy_saturates").dropna(subset=[col])
    s = s.sort_values("width")
    if len(s) < 3:
        raise UsageError("accuracy_saturates needs at least 3 widths with an accuracy")
    w, acc = s["width"].to_numpy(), s[col].to_numpy(float)
    plateau = accuracy_plateau(w, acc, tol)
    mid = len(s) // 2
    gain_low, gain_high = float(acc[mid] - acc[0]), float(acc[-1] - acc[mid])
    holds = bool(plateau < w[-1] and gain_high < gain_low)
    claim = f"{split} accuracy saturates with width"
    detail = (f"plateau at {plateau} of {w[-1]} neurons; gain {100 * gain_low:.2f} points from "
              f"{w[0]} to {w[mid]}, {100 * gain_high:.2f} from {w[mid]} to {w[-1]}")
    text = f"{claim} ({detail})" if holds else f"{claim} does not hold ({detail})"
    return Verdict(claim, holds, text, {"plateau_width": plateau, "gain_low": gain_low,
                                        "gain_high": gain_high, "tol": float(tol)})


def first_crossing(widths: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray,
                   level: float) -> float | None:
    """The width where ``values`` first reach ``level`` (``>=``), interpolated linearly in
    ``log(width)`` between the two widths around the crossing; None if never reached.
    NaN values are ignored; widths are sorted first."""
    w = np.asarray(widths, dtype=float).ravel()
    v = np.asarray(values, dtype=float).ravel()
    if w.size != v.size:
        raise UsageError(f"first_crossing: {w.size} widths but {v.size} values; pass one value "
                         "per width")
    keep = ~(np.isnan(w) | np.isnan(v))
    w, v = w[keep], v[keep]
    order = np.argsort(w)
    w, v = w[order], v[order]
    hit = np.flatnonzero(v >= level)
    if hit.size == 0:
        return None
    i = int(hit[0])
    if i == 0 or v[i] == v[i - 1]:
        return float(w[i])
    t = (level - v[i - 1]) / (v[i] - v[i - 1])
    return float(np.exp(np.log(w[i - 1]) + t * (np.log(w[i]) - np.log(w[i - 1]))))


def closest_turning_point(turning: Mapping[str, float | None], plateau: float,
                          what: str = "test accuracy plateau") -> Verdict:
    """Which metric's turning point (a width, or None if the metric never turns) is closest to
    the accuracy plateau, by ``|log2(turning / plateau)|``? A factual comparison: ``holds`` is
    True when at least one metric turns."""
    if not (_is_real(plateau) and plateau > 0):
        raise UsageError(f"closest_turning_point: plateau must be a positive width, got "
                         f"{plateau!r}")
    dist = {k: abs(math.log2(v / plateau)) for k, v in turning.items()
            if v is not None and v > 0}
    parts = [f"{k}: {'never' if v is None else f'{v:.0f}'}" for k, v in turning.items()]
    claim = f"the metric whose turning point is closest to the {what}"
    if not dist:
        return Verdict(claim, False, f"no metric turns within the widths tried "
                                     f"({'; '.join(parts)}; plateau {plateau:.0f})",
                       {"plateau": float(plateau), "turning": dict(turning)})
    best = min(dist, key=dist.get)
    side = "below" if turning[best] < plateau else "above" if turning[best] > plateau else "at"
    text = (f"{best} turns closest to the {what} ({turning[best]:.0f} vs {plateau:.0f} neurons, "
            f"{side}, {dist[best]:.2f} octaves); all turning points: {'; '.join(parts)}")
    return Verdict(claim, True, text, {"plateau": float(plateau), "best": best,
                                       "turning": dict(turning), "octaves": dist})
