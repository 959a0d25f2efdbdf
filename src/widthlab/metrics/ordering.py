"""Neuron orderings and how much they move: ranks, pairwise swaps, displacement, top-k churn.

An *ordering* of a layer's neurons lists them from most to least important by some score
(exact loss increase, activation std, ...). A sorted cut-off layer keeps the first ``x0`` of them,
so what matters while training is how far the ordering moves between two records: the journal
("Evaluate the stability of these orderings at training time") asks for few pairwise swaps and
small displacements, because a neuron that jumps across the cut-off goes from scale ~1 to ~0 in
one step.

Conventions: a higher score means more important; ties are broken by the neuron index (lower
index first), so every score vector gives exactly one ordering; rank 0 is the most important
neuron. Pure numpy, no torch.

Example::

    from widthlab.metrics.ordering import stability

    s = stability(scores_epoch_3, scores_epoch_4, k=64)
    s["kendall_tau"], s["swaps"], s["mean_displacement"], s["topk_churn"]

The number of swaps between two orderings is the number of *discordant pairs*, counted by a
merge sort in O(n log n) (:func:`count_inversions`); Kendall's tau-b with ties follows Knight's
algorithm on the same count and equals ``scipy.stats.kendalltau``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from widthlab.errors import UsageError

__all__ = ["count_inversions", "discordant_pairs", "displacement", "kendall_tau",
           "ordering", "ranks", "spearman", "stability", "stability_series", "top_k",
           "top_k_overlap"]


def _scores(s, what: str = "scores") -> np.ndarray:
    """A finite 1-D float64 array (a torch tensor is accepted)."""
    if hasattr(s, "detach"):
        s = s.detach().cpu().numpy()
    try:
        a = np.asarray(s, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}: cannot read the values as numbers ({exc})") from None
    if a.ndim != 1:
        raise UsageError(f"{what}: expected one score per neuron (a 1-D array), got shape "
                         f"{a.shape}")
    if not np.isfinite(a).all():
        raise UsageError(f"{what}: scores must be finite; found NaN or inf at neurons "
                         f"{np.flatnonzero(~np.isfinite(a))[:5].tolist()}")
    return a


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    x, y = _scores(a, "first scores"), _scores(b, "second scores")
    if x.shape != y.shape:
        raise UsageError(f"the two score vectors have {x.size} and {y.size} neurons; compare "
                         "orderings of the same layer")
    return x, y


def ordering(scores) -> np.ndarray:
    """Neuron indices from most to least important, shape ``(n,)``.

    Ties keep the lower index first (a stable sort of ``-scores``).
    """
    return np.argsort(-_scores(scores), kind="stable")


def ranks(scores) -> np.ndarray:
    """Rank of each neuron in :func:`ordering` (0 = most important), shape ``(n,)``."""
    order = ordering(scores)
    r = np.empty_like(order)
    r[order] = np.arange(order.size)
    return r


def top_k(scores, k: int) -> np.ndarray:
    """The ``k`` most important neurons (the first ``k`` of :func:`ordering`)."""
    s = _scores(scores)
    return ordering(s)[:_check_k(k, s.size)]


def _check_k(k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise UsageError(f"k must be an integer in [1, {n}] (the number of neurons), got {k!r}")
    return int(k)


# ------------------------------------------------------------------------------ swaps
def count_inversions(values) -> int:
    """Pairs ``i < j`` with ``values[i] > values[j]`` (strictly), by a bottom-up merge sort.

    O(n log n) comparisons: each of the ``ceil(log2 n)`` passes merges neighbouring sorted runs
    in linear time, and when an element of a right run is placed before the rest of its left run,
    each of those remaining left elements forms one inversion with it. Equal values are not
    inversions (the left one is taken first).
    """
    a = [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]
    n = len(a)
    inversions = 0
    width = 1
    buf = [0.0] * n
    while width < n:
        for lo in range(0, n - width, 2 * width):
            mid, hi = lo + width, min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if a[j] < a[i]:
                    buf[k] = a[j]
                    inversions += mid - i  # a[j] jumps every left element still waiting
                    j += 1
                else:
                    buf[k] = a[i]
                    i += 1
                k += 1
            buf[k:k + mid - i] = a[i:mid]
            k += mid - i
            buf[k:k + hi - j] = a[j:hi]
            a[lo:hi] = buf[lo:hi]
        width *= 2
    return inversions


def _tie_pairs(values: np.ndarray) -> int:
    """Pairs of equal values, sum over tie groups of ``t (t - 1) / 2``."""
    _, counts = np.unique(values, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _joint_tie_pairs(x: np.ndarray, y: np.ndarray) -> int:
    """Pairs tied in both vectors: tie groups of consecutive equal ``(x, y)`` after a sort."""
    if x.size < 2:
        return 0
    idx = np.lexsort((y, x))
    xs, ys = x[idx], y[idx]
    new = np.r_[True, (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])]
    counts = np.diff(np.r_[np.flatnonzero(new), xs.size])
    return int((counts * (counts - 1) // 2).sum())


def discordant_pairs(a, b) -> int:
    """Pairs of neurons the two score vectors order oppositely, ``(a_i - a_j)(b_i - b_j) < 0``.

    Sort by ``a`` (then ``b``) and count the strict inversions left in ``b``
    (:func:`count_inversions`, O(n log n)). For two tie-free orderings this is the number of
    adjacent swaps turning one into the other (the Kendall tau distance).
    """
    x, y = _pair(a, b)
    idx = np.lexsort((y, x))  # by x, then y: pairs tied in x are never counted
    return count_inversions(y[idx])


def kendall_tau(a, b) -> float:
    """Kendall's tau-b (ties in either vector allowed), Knight's O(n log n) algorithm.

    ``tau_b = (n0 - n1 - n2 + n3 - 2 Q) / sqrt((n0 - n1) (n0 - n2))`` with ``n0 = n(n-1)/2``,
    ``n1``/``n2`` the pairs tied in ``a``/``b``, ``n3`` the pairs tied in both and ``Q`` the
    discordant pairs. NaN when either vector is constant (as ``scipy.stats.kendalltau``).
    """
    x, y = _pair(a, b)
    n = x.size
    n0 = n * (n - 1) // 2
    n1, n2 = _tie_pairs(x), _tie_pairs(y)
    n3 = _joint_tie_pairs(x, y)
    denom = (n0 - n1) * (n0 - n2)
    if denom == 0:
        return math.nan
    q = discordant_pairs(x, y)
    return float((n0 - n1 - n2 + n3 - 2 * q) / math.sqrt(denom))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank (``scipy.stats.rankdata``'s default)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    r = np.empty(x.size)
    r[order] = np.repeat(avg, ends - starts)
    return r


def spearman(a, b) -> float:
    """Spearman's rho: Pearson correlation of the average ranks; NaN for a constant vector."""
    x, y = _pair(a, b)
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / denom) if denom > 0 else math.nan


def top_k_overlap(a, b, k: int) -> float:
    """Share of the ``k`` most important neurons by ``a`` that are also top ``k`` by ``b``."""
    x, y = _pair(a, b)
    k = _check_k(k, x.size)
    return len(np.intersect1d(top_k(x, k), top_k(y, k))) / k


def displacement(a, b) -> np.ndarray:
    """How many positions each neuron moves between the two orderings, ``|rank_a - rank_b|``."""
    x, y = _pair(a, b)
    return np.abs(ranks(x) - ranks(y))


# ------------------------------------------------------------------------------ stability
def stability(before, after, k: int | None = None) -> dict[str, float]:
    """How much the ordering moved from score vector ``before`` to ``after``.

    Parameters
    ----------
    before, after : array-like of shape (n,)
        Scores of the same neurons at two records (higher = more important).
    k : int, optional
        Size of the kept set for the churn (default: a quarter of the neurons, at least 1).

    Returns
    -------
    dict
        ``kendall_tau`` between the two orderings (tie-free, so tau-b = tau-a), ``swaps`` (the
        discordant pairs of the orderings: adjacent swaps needed), ``swap_share`` (swaps over all
        ``n (n-1) / 2`` pairs), ``mean_displacement`` and ``max_displacement`` in positions,
        ``mean_displacement_share`` (over ``n``), and ``topk_churn``: the share of the top ``k``
        of ``before`` no longer in the top ``k`` of ``after``.
    """
    x, y = _pair(before, after)
    n = x.size
    k = max(1, n // 4) if k is None else _check_k(k, n)
    rx, ry = ranks(x), ranks(y)
    swaps = discordant_pairs(rx, ry)
    pairs = n * (n - 1) // 2
    d = np.abs(rx - ry)
    return {"n": n, "k": k,
            "kendall_tau": 1.0 - 2.0 * swaps / pairs if pairs else math.nan,
            "swaps": swaps, "swap_share": swaps / pairs if pairs else math.nan,
            "mean_displacement": float(d.mean()), "max_displacement": int(d.max()),
            "mean_displacement_share": float(d.mean()) / n,
            "topk_churn": 1.0 - top_k_overlap(x, y, k)}


def stability_series(records: Sequence, steps: Sequence[int] | None = None,
                     k: int | None = None) -> pd.DataFrame:
    """:func:`stability` between each pair of consecutive records.

    Parameters
    ----------
    records : sequence of array-like of shape (n,), or an array of shape (R, n)
        Score vectors in recording order.
    steps : sequence of int, optional
        The epoch (or step) of each record (default ``0..R-1``).
    k : int, optional
        Passed to :func:`stability`.

    Returns
    -------
    DataFrame
        One row per consecutive pair: ``step`` (of the later record), ``from_step`` and the
        columns of :func:`stability`.
    """
    recs = list(records)
    steps = list(range(len(recs))) if steps is None else [int(s) for s in steps]
    if len(steps) != len(recs):
        raise UsageError(f"{len(recs)} records but {len(steps)} steps; give one step per record")
    rows = [{"step": steps[i], "from_step": steps[i - 1],
             **stability(recs[i - 1], recs[i], k)} for i in range(1, len(recs))]
    cols = ["step", "from_step", "n", "k", "kendall_tau", "swaps", "swap_share",
            "mean_displacement", "max_displacement", "mean_displacement_share", "topk_churn"]
    return pd.DataFrame(rows, columns=cols)
