"""The per-width table of the variance study, :func:`width_summary`, and its column builders
(re-exported by :mod:`widthlab.metrics.variance`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from widthlab.errors import UsageError
from widthlab.metrics._variance_stats import (
    _as_list,
    _check_width,
    _dead_mask,
    _std_array,
    mean_ci,
    shapiro,
)

# --------------------------------------------------------------------------------------------
# the per-width table
# --------------------------------------------------------------------------------------------


def width_summary(
    stds: Mapping[int, Sequence[np.ndarray | None]],
    dead: Mapping[int, Sequence[np.ndarray | None]] | None = None,
    accuracy: Mapping[str, Mapping[int, Sequence[float | None]]] | None = None,
) -> pd.DataFrame:
    """One row per width: normality, spread, dead neurons and accuracy of a width sweep.

    Parameters
    ----------
    stds : dict of int to list of ndarray
        ``stds[width][i]`` is the 1-D array of per-neuron activation stds of replicate (seed)
        ``i`` of that width. A replicate given as ``None`` or holding a non-finite value is
        skipped.
    dead : dict of int to list of ndarray, optional
        Boolean masks (True = dead neuron), aligned with ``stds`` by width and replicate index.
        A ``None`` mask marks a failed replicate, which is then skipped as a whole. Without
        ``dead``, a neuron is dead when its std is exactly 0.
    accuracy : dict of str to dict of int to list of float, optional
        ``accuracy[split][width]`` holds one accuracy per seed, e.g. ``{"test": {64: [0.97,
        0.98]}}``. ``None``/NaN entries are ignored; a width missing from a split gets NaN. The
        accuracies are averaged on their own, independently of which std replicates were used.

    Returns
    -------
    pandas.DataFrame
        Sorted by width, with columns

        * ``width``, ``replicates`` (used replicates);
        * pooled over replicates (all neurons concatenated): ``shapiro_w``, ``shapiro_p``
          (see :func:`shapiro` for the >5000-value subsample), ``std_mean``, ``std_median``;
        * mean over replicates with 95 % t-interval bounds ``*_lo``/``*_hi`` (see
          :func:`mean_ci`): ``total_std`` (sum of one model's stds), ``shapiro_w_rep`` (W of one
          model; NaN W's are ignored), ``dead`` (dead-neuron count);
        * ``dead_frac``: mean over replicates of the dead count divided by that model's neuron
          count;
        * per accuracy split: ``{split}_acc``, ``{split}_acc_lo``, ``{split}_acc_hi``.

        A width with no usable replicate keeps its row with ``replicates == 0`` and NaN
        statistics.

    Raises
    ------
    UsageError
        On non-integer widths, malformed arrays, negative stds, masks that do not match the
        stds, or accuracy widths that have no stds.
    """
    if not isinstance(stds, Mapping) or not stds:
        raise UsageError("width_summary: stds must be a non-empty dict {width: [std array per "
                         "seed]}")
    widths = sorted(_check_width(w, "width_summary(stds)") for w in stds)
    by_width = {int(w): v for w, v in stds.items()}
    dead_by_width = _dead_by_width(dead, widths)
    splits = _accuracy_by_split(accuracy, widths)
    rows = []
    for w in widths:
        reps = _as_list(by_width[w], f"stds[{w}]")
        masks = dead_by_width[w] if dead_by_width is not None else None
        row: dict[str, Any] = {"width": w}
        row.update(_std_columns(w, reps, masks))
        for split, table in splits.items():
            row.update(_accuracy_columns(split, w, table.get(w, [])))
        rows.append(row)
    out = pd.DataFrame(rows)
    out["width"] = out["width"].astype(np.int64)
    out["replicates"] = out["replicates"].astype(np.int64)
    return out


def _dead_by_width(dead: Any, widths: list[int]) -> dict[int, list] | None:
    """``dead`` checked against the widths of ``stds``: width -> list of masks (or None)."""
    if dead is None:
        return None
    if not isinstance(dead, Mapping):
        raise UsageError("width_summary: dead must be a dict {width: [bool mask per seed]} "
                         "or None")
    out = {_check_width(w, "width_summary(dead)"): _as_list(v, f"dead[{w}]")
           for w, v in dead.items()}
    if set(out) != set(widths):
        raise UsageError(f"width_summary: dead has widths {sorted(out)} but stds has "
                         f"{widths}; pass a mask list for exactly the widths in stds")
    return out


def _accuracy_by_split(accuracy: Any, widths: list[int]) -> dict[str, dict[int, list]]:
    """``accuracy`` checked against the widths of ``stds``: split -> width -> accuracies."""
    splits: dict[str, dict[int, list]] = {}
    if accuracy is None:
        return splits
    if not isinstance(accuracy, Mapping):
        raise UsageError('width_summary: accuracy must be a dict {split: {width: [acc per '
                         'seed]}}, e.g. {"test": {64: [0.97]}}')
    for split, per_width in accuracy.items():
        if not isinstance(split, str) or not split:
            raise UsageError(f"width_summary: accuracy split names must be non-empty "
                             f"strings such as 'test', got {split!r}")
        if not isinstance(per_width, Mapping):
            raise UsageError(f"width_summary: accuracy[{split!r}] must be a dict "
                             f"{{width: [acc per seed]}}, got {type(per_width).__name__}")
        table = {_check_width(w, f"accuracy[{split!r}]"): _as_list(v, f"accuracy[{split!r}]"
                                                                      f"[{w}]")
                 for w, v in per_width.items()}
        extra = sorted(set(table) - set(widths))
        if extra:
            raise UsageError(f"width_summary: accuracy[{split!r}] has widths {extra} with "
                             f"no activation stds; add them to stds or drop them")
        splits[split] = table
    return splits


def _std_columns(w: int, reps: list, masks: list | None) -> dict[str, Any]:
    """The std, normality and dead-neuron columns of width ``w`` from its replicates."""
    if masks is not None and len(masks) != len(reps):
        raise UsageError(f"width_summary: width {w} has {len(reps)} std arrays but "
                         f"{len(masks)} dead masks; pass one mask per replicate (None for a "
                         f"failed one)")
    used: list[np.ndarray] = []
    dead_counts: list[float] = []
    dead_fracs: list[float] = []
    for i, rep in enumerate(reps):
        arr = _std_array(rep, f"stds[{w}][{i}]")
        if arr is None or (masks is not None and masks[i] is None):
            continue
        is_dead = (arr == 0) if masks is None else _dead_mask(masks[i], arr.size,
                                                               f"dead[{w}][{i}]")
        used.append(arr)
        dead_counts.append(float(is_dead.sum()))
        dead_fracs.append(float(is_dead.mean()))

    row: dict[str, Any] = {"replicates": len(used)}
    if used:
        pooled = np.concatenate(used)
        row["shapiro_w"], row["shapiro_p"] = shapiro(pooled)
        row["std_mean"] = float(pooled.mean())
        row["std_median"] = float(np.median(pooled))
    else:
        row.update(shapiro_w=math.nan, shapiro_p=math.nan, std_mean=math.nan,
                   std_median=math.nan)
    for name, values in (("total_std", [a.sum() for a in used]),
                         ("shapiro_w_rep", [shapiro(a)[0] for a in used]),
                         ("dead", dead_counts)):
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = mean_ci(values)
    row["dead_frac"] = float(np.mean(dead_fracs)) if dead_fracs else math.nan
    return row


def _accuracy_columns(split: str, w: int, accs: list) -> dict[str, float]:
    """``{split}_acc`` and its interval bounds for width ``w`` (None entries count as NaN)."""
    try:
        acc_arr = np.asarray([math.nan if a is None else a for a in accs], dtype=float)
    except (TypeError, ValueError):
        raise UsageError(f"width_summary: accuracy[{split!r}][{w}] must hold numbers "
                         f"(or None for a failed seed)") from None
    col = f"{split}_acc"
    mean, lo, hi = mean_ci(acc_arr)
    return {col: mean, f"{col}_lo": lo, f"{col}_hi": hi}
