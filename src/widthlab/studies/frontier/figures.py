"""Figures of the frontier study, from its tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from widthlab.studies._plot import pick_widths, plt


def recommended(models: pd.DataFrame, plateau: int, methods, title: str = "") -> Figure:
    """Recommended width per trained width (every seed, each method), the sweep's plateau."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, m in enumerate(methods):
        ax.plot(models.width, models[f"recommended_{m}"], "o", color=f"C{i}", alpha=0.7,
                label=f"recommended ({m})")
    w = np.sort(models.width.unique())
    ax.plot(w, w, ":", color="0.6", lw=1, label="keep everything")
    ax.axhline(plateau, color="C3", ls="--", lw=1, label=f"sweep plateau ({plateau})")
    ax.set(xscale="log", yscale="log", xlabel="trained width", ylabel="neurons needed",
           title=title or "width frontier")
    ax.legend(fontsize=8)
    return fig


def curves(curves: dict[int, tuple[np.ndarray, np.ndarray]], sweep: pd.DataFrame,
           title: str = "") -> Figure:
    """Test accuracy versus kept width for a few trained widths, and the sweep's accuracy
    of networks trained at each width."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, w in enumerate(pick_widths(sorted(curves), 5)):
        k, acc = curves[w]
        ax.plot(k, acc, "-", color=f"C{i}", label=f"trained {w}, cut to k")
    ax.plot(sweep.width, sweep.test_acc, "ko--", ms=3, label="trained at width k")
    ax.set(xscale="log", xlabel="neurons kept (k)", ylabel="test accuracy",
           title=title or "accuracy versus width")
    ax.legend(fontsize=8)
    return fig
