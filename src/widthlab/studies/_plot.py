"""Plotting helpers shared by the studies' ``figures.py`` modules (matplotlib, Agg backend).

Importing this module selects the Agg backend (no display needed) and exposes ``plt``; the
helpers are generic: which widths of a sweep to draw, and error bars from a table's
confidence-interval columns.

Example::

    from widthlab.studies._plot import pick_widths, plt, yerr

    fig, ax = plt.subplots()
    ax.errorbar(summary["width"], summary["dead"], yerr=yerr(summary, "dead"))
    pick_widths([16, 22, 32, 45, 64, 90, 128], k=3)   # [16, 45, 128]
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def pick_widths(widths: Sequence[int], k: int = 5) -> list[int]:
    """``k`` widths spread evenly by rank over the sorted ``widths`` (all of them when there
    are ``k`` or fewer); a sweep on a log grid gets evenly spaced widths in log scale."""
    ws = sorted(widths)
    if len(ws) <= k:
        return ws
    idx = np.unique(np.round(np.linspace(0, len(ws) - 1, k)).astype(int))
    return [ws[i] for i in idx]


def yerr(table: pd.DataFrame, col: str) -> np.ndarray | None:
    """Asymmetric error bars ``[[mid - lo], [hi - mid]]`` for column ``col`` from its
    ``{col}_lo`` / ``{col}_hi`` interval columns; None when the table has no interval (or
    only NaN bounds, e.g. a single seed)."""
    lo, hi = f"{col}_lo", f"{col}_hi"
    if lo not in table or table[lo].isna().all():
        return None
    mid = table[col].to_numpy(float)
    return np.vstack([mid - table[lo].to_numpy(float), table[hi].to_numpy(float) - mid])


__all__ = ["pick_widths", "plt", "yerr"]
