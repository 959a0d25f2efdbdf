"""Figures of the resnet study: accuracy against multiply-adds of every final network,
multiply-adds and training seconds per epoch, measured latency against multiply-adds, and the
journal's per-channel activation stds per group."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from widthlab.studies._plot import plt
from widthlab.studies.resnet.analysis import LABELS
from widthlab.studies.resnet.config import DENSE, LEARNED

PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # 20, 30 on a log axis, not 2 x 10^1


def _plain(axis) -> None:
    axis.set_major_formatter(PLAIN)
    axis.set_minor_formatter(PLAIN)


def acc_vs_macs(f: pd.DataFrame, title: str = "") -> Figure:
    """Final-epoch test accuracy against multiply-adds, one point per method."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, r in enumerate(f.itertuples()):
        style = "*" if r.method == LEARNED else "o"
        ax.plot(r.macs / 1e6, r.acc, style, ms=12 if r.method == LEARNED else 7,
                color=f"C{i}", label=f"{LABELS[r.method]} ({r.epochs} ep)")
    ax.set(xscale="log", xlabel="multiply-adds per image (M)",
           ylabel="final-epoch test accuracy (%)", title=title)
    _plain(ax.xaxis)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def per_epoch(c: pd.DataFrame, title: str = "") -> Figure:
    """Multiply-adds (top) and training seconds (bottom) per epoch, learned and dense."""
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True)
    for i, method in enumerate((DENSE, LEARNED)):
        g = c[c.method == method].sort_values("epoch") if not c.empty else c
        if len(g):
            axes[0].plot(g.epoch, g.macs / 1e6, ".-", color=f"C{i}", label=LABELS[method])
            axes[1].plot(g.epoch, g.epoch_time, ".-", color=f"C{i}")
    axes[0].set(ylabel="MACs after the epoch (M)", title=title)
    axes[1].set(xlabel="epoch", ylabel="training seconds")
    axes[1].xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def latency(f: pd.DataFrame, title: str = "") -> Figure:
    """Measured CPU latency (one thread, median) against multiply-adds, batch 1 and 64."""
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0))
    for ax, col, batch in ((axes[0], "latency_b1_ms", 1), (axes[1], "latency_b64_ms", 64)):
        for i, r in enumerate(f.itertuples()):
            ax.plot(r.macs / 1e6, getattr(r, col), "o", color=f"C{i}", label=LABELS[r.method])
        ax.set(xscale="log", yscale="log", xlabel="multiply-adds per image (M)",
               ylabel="ms", title=f"batch {batch}")
        _plain(ax.xaxis)
        _plain(ax.yaxis)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def stds(s: pd.DataFrame, title: str = "") -> Figure:
    """Every channel's activation std per group (the journal's statistic), dense beside
    learned."""
    groups = list(dict.fromkeys(s.group)) if not s.empty else []
    fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(groups) + 2), 4.2))
    for k, (method, dx) in enumerate(((DENSE, -0.18), (LEARNED, 0.18))):
        data = [s[(s.method == method) & (s.group == g)]["std"].values for g in groups]
        pos = [i + dx for i in range(len(groups))]
        if groups:
            ax.boxplot(data, positions=pos, widths=0.3, patch_artist=True,
                       boxprops={"facecolor": f"C{k}", "alpha": 0.5})
        ax.plot([], [], "s", color=f"C{k}", label=f"{LABELS[method]} (channels: box width)")
    ax.set_xticks(range(len(groups)), groups, rotation=45, fontsize=7)
    ax.set(ylabel="activation std per channel", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
