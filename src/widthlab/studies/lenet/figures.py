"""Figures of the lenet study: error against total width with the published points, and width
and epoch time per epoch."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from widthlab.studies._plot import plt
from widthlab.studies.lenet.analysis import CUT, DENSE, GATED
from widthlab.studies.lenet.config import HC, L1

PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # 2, 4, 8 on a log axis, not 2 x 10^0
# minor labels of a log axis at 2, 3 and 5 x 10^k only (no overlapping 700 800 900)
SPARSE = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "235" else "")


def _networks(*frames: pd.DataFrame) -> list[str]:
    seen: list[str] = []
    for f in frames:
        if not f.empty:
            seen += [n for n in dict.fromkeys(f.network) if n not in seen]
    return seen or ["(none)"]


def error_vs_width(rows: pd.DataFrame, published: pd.DataFrame | None,
                   title: str = "") -> Figure:
    """One panel per network: final-epoch test error against the total width (the sum of the
    row's widths), widthlab's gated runs as a line over the prices per gate kind (L1,
    hard-concrete), the network without gates
    and its frontier cut (before and after the fine-tuning epoch), the published points."""
    nets = _networks(rows, published if published is not None else pd.DataFrame())
    fig, axes = plt.subplots(1, len(nets), figsize=(5.2 * len(nets), 4.2), squeeze=False)
    for ax, net in zip(axes[0], nets, strict=True):
        mine = rows[rows.network == net] if not rows.empty else rows
        g = mine[mine.method.str.startswith("widthlab gates")].sort_values("total_width") \
            if not mine.empty else mine
        kinds = g["gate_kind"].fillna(L1) if "gate_kind" in g else pd.Series(L1, index=g.index)
        for kind, color in ((L1, "C0"), (HC, "C2")):
            k = g[kinds == kind]
            if len(k):
                ax.plot(k.total_width, k.error, "o-", color=color, label=GATED[kind])
            for r in k.itertuples():
                ax.annotate(f"{r.price:g}", (r.total_width, r.error), fontsize=7,
                            textcoords="offset points", xytext=(4, 4))
        for method, style, label in ((DENSE, "s", "no gates"), (CUT, "D", "frontier cut + "
                                                                          "fine-tune")):
            m = mine[mine.method == method] if not mine.empty else mine
            if len(m):
                ax.plot(m.total_width, m.error, style, color="C1" if method == CUT else "0.4",
                        label=label)
            if method == CUT and len(m) and "error_before_finetune" in m:
                ax.plot(m.total_width, m.error_before_finetune, "D", mfc="none", color="C1",
                        label="frontier cut, before fine-tuning")
        if published is not None:
            p = published[published.network == net]
            ax.plot(p.total_width, p.error, "^", color="k",
                    label="published (best epoch; RigL: the last)")
            for r in p.itertuples():
                ax.annotate(r.method.split(" (")[0], (r.total_width, r.error), fontsize=7,
                            textcoords="offset points", xytext=(4, -9))
        ax.set(xscale="log", yscale="log", xlabel="total width (sum of the row's widths)",
               ylabel="final-epoch test error (%)", title=net)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(PLAIN)
            axis.set_minor_formatter(SPARSE)
        ax.tick_params(which="minor", labelsize=7)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def per_epoch(curves: pd.DataFrame, title: str = "") -> Figure:
    """Per network: total width per epoch (top) and seconds of training per epoch (bottom),
    a line per gated run and for the network without gates (then cut)."""
    nets = _networks(curves)
    fig, axes = plt.subplots(2, len(nets), figsize=(5.2 * len(nets), 6.4), squeeze=False,
                             sharex="col")
    for j, net in enumerate(nets):
        c = curves[curves.network == net] if not curves.empty else curves
        runs = sorted(dict.fromkeys(c.method), key=lambda m: m == CUT) if len(c) else []
        for i, method in enumerate(r for r in runs if r != DENSE):
            g = c[c.method == method]
            style = "--" if method == CUT else "-"
            axes[0][j].plot(g.epoch, g.total_width, style, marker=".", color=f"C{i}",
                            label=method)
            axes[1][j].plot(g.epoch, g.epoch_time, style, marker=".", color=f"C{i}")
        axes[0][j].set(yscale="log", ylabel="total width", title=net)
        axes[0][j].yaxis.set_major_formatter(PLAIN)
        axes[0][j].yaxis.set_minor_formatter(SPARSE)
        axes[0][j].tick_params(which="minor", labelsize=7)
        axes[1][j].set(xlabel="epoch", ylabel="training seconds")
        axes[1][j].xaxis.get_major_locator().set_params(integer=True)
        axes[0][j].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
