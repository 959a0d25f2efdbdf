"""Figures of the growth study: width per epoch from every start, final width per price."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from widthlab.studies._plot import plt


def width_per_epoch(curves: pd.DataFrame, title: str = "") -> Figure:
    """One panel per initialisation: kept width against epoch, a line per start and price."""
    inits = list(dict.fromkeys(curves.init))
    fig, axes = plt.subplots(1, len(inits), figsize=(4.2 * len(inits), 3.8), sharey=True,
                             squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, init in zip(axes[0], inits, strict=True):
        c = curves[curves.init == init]
        mean = c.groupby(["price", "start_width", "epoch"], as_index=False).width.mean()
        for j, (lam, by_lam) in enumerate(mean.groupby("price")):
            for i, (start, g) in enumerate(by_lam.groupby("start_width")):
                ax.plot(g.epoch, g.width, styles[j % 4], color=f"C{i}",
                        label=f"start {start}, price {lam:g}" if init == inits[0] else None)
        ax.set(yscale="log", xlabel="epoch", title=f"init {init}")
    axes[0][0].set_ylabel("width")
    fig.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title)
    return fig


def final_widths(table: pd.DataFrame, title: str = "") -> Figure:
    """Final width against the start, a line per (init, price); the identity dotted."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ok = table[table.status == "ok"]
    for i, ((init, lam), g) in enumerate(ok.groupby(["init", "price"])):
        m = g.groupby("start_width").final_width.mean()
        ax.plot(m.index, m.to_numpy(), "o-" if init != "none" else "o:", color=f"C{i}",
                label=f"{init}, price {lam:g}")
    s = sorted(ok.start_width.unique())
    ax.plot(s, s, ":", color="0.6", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="starting width", ylabel="final width",
           title=title or "final width against the start")
    ax.legend(fontsize=7)
    return fig
