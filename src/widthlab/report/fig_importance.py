"""Figures of the importance and ordering-stability studies, from stored results only.

Each function takes plain arrays or the tables of :mod:`widthlab.studies.importance` /
:mod:`widthlab.studies.ordering` and returns a matplotlib ``Figure``; save it with
:func:`widthlab.report.figures.save`.

Example::

    from widthlab.report import fig_importance as fi
    from widthlab.report.figures import save

    fig = fi.topk_curves(importance.topk_table(store, run_id).query("model == 0"), "MNIST")
    save(fig, "figures", "topk")
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from widthlab.metrics.ordering import kendall_tau, ranks  # noqa: E402

#: One colour per ordering, the same in every figure.
COLORS = {"exact": "k", "exact_abs": "0.35", "gate": "C9", "act_std": "C0", "in_norm": "C1",
          "out_norm": "C2", "taylor": "C3", "contribution": "C4", "taylor2": "C5",
          "random": "0.6"}


def _color(name: str) -> str:
    return COLORS.get(name, "C7")


def rank_scatter(scores: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """Rank by each proxy (y) against rank by the exact importance (x), one panel per proxy;
    rank 0 is the most important neuron, tau-b in each panel's title."""
    names = [k for k in scores if k != "exact"]
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False,
                             sharex=True, sharey=True)
    rx = ranks(scores["exact"])
    for ax, name in zip(axes.flat, names, strict=False):
        ax.scatter(rx, ranks(scores[name]), s=3, alpha=0.5, color=_color(name), lw=0)
        ax.set_title(f"{name}: tau {kendall_tau(scores['exact'], scores[name]):.2f}",
                     fontsize=9)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("rank by exact importance")
    for ax in axes[:, 0]:
        ax.set_ylabel("rank by proxy")
    fig.suptitle(title or "proxies versus exact importance")
    fig.tight_layout()
    return fig


def agreement_vs_width(agree: pd.DataFrame, title: str = "") -> Figure:
    """Kendall tau and top-25% overlap of each proxy with the exact order versus width."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, g in agree.groupby("proxy", sort=False):
        m = g.groupby("width")[["kendall", "top25%"]].mean()
        ax1.plot(m.index, m["kendall"], "o-", color=_color(name), label=name)
        ax2.plot(m.index, m["top25%"], "o-", color=_color(name), label=name)
    ax1.set(xscale="log", xlabel="hidden neurons", ylabel="Kendall tau with exact",
            title="rank correlation")
    ax2.set(xscale="log", xlabel="hidden neurons", ylabel="share of the exact top 25% kept",
            title="top-25% overlap", ylim=(0, 1.02))
    ax1.axhline(0, color="0.8", lw=0.8)
    ax1.legend(fontsize=7)
    fig.suptitle(title or "agreement with the exact importance")
    fig.tight_layout()
    return fig


def topk_curves(topk: pd.DataFrame, title: str = "") -> Figure:
    """For one model: test accuracy versus kept neurons per ordering (full accuracy dashed),
    and the forward latency of the cut dense layer versus kept neurons."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in topk.groupby("ordering", sort=False):
        c = c.sort_values("k")
        ax1.plot(c["k"], c["acc"], marker=".", color=_color(name), label=name,
                 lw=2 if name == "exact" else 1, ls="--" if name == "random" else "-")
    full = float(topk["full_acc"].iloc[0])
    ax1.axhline(full, color="k", ls=":", lw=1, label=f"all neurons ({full:.3f})")
    ax1.set(xscale="log", xlabel="neurons kept (k)", ylabel="test accuracy",
            title=f"top-k cut, width {int(topk['width'].iloc[0])}")
    ax1.legend(fontsize=7)
    lat = topk.drop_duplicates("k").sort_values("k")
    ax2.plot(lat["k"], lat["ms"], "o-", color="k")
    ax2.set(xscale="log", yscale="log", xlabel="neurons kept (k)",
            ylabel="forward time on the test set (ms)", title="latency of the cut layer")
    fig.suptitle(title or "top-k cuts")
    fig.tight_layout()
    return fig


STABILITY_PANELS = (("kendall_tau", "Kendall tau, consecutive records"),
                    ("swap_share", "pairwise swaps / all pairs"),
                    ("mean_displacement_share", "mean displacement / width"),
                    ("topk_churn", "top-25% churn"))


def stability_curves(series: pd.DataFrame, title: str = "") -> Figure:
    """Stability of each ordering between consecutive epochs (mean over models): Kendall tau,
    share of swapped pairs, mean displacement over width and top-quarter churn."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, (col, label) in zip(axes.flat, STABILITY_PANELS, strict=True):
        for name, g in series.groupby("ordering", sort=False):
            m = g.groupby("step")[col].mean()
            ax.plot(m.index, m.values, "o-", ms=3, color=_color(name), label=name,
                    lw=2 if name == "exact" else 1)
        ax.set(ylabel=label)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title or "ordering stability during training")
    fig.tight_layout()
    return fig


def fidelity_curves(fidelity: pd.DataFrame, title: str = "") -> Figure:
    """Kendall tau of each proxy ordering with the exact ordering at every epoch (mean over
    models)."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, g in fidelity.groupby("proxy", sort=False):
        m = g.groupby("epoch")["kendall"].mean()
        ax.plot(m.index, m.values, "o-", ms=3, color=_color(name), label=name)
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set(xlabel="epoch", ylabel="Kendall tau with exact", title=title or
           "proxy agreement with exact importance during training")
    ax.legend(fontsize=7)
    return fig


VARIANT_STYLE = {"flexible": ("C0", "o"), "sorted-act_std": ("C3", "s"),
                 "sorted-taylor": ("C1", "D"), "sparsifier": ("C2", "^")}


def sorted_tradeoff(table: pd.DataFrame, title: str = "") -> Figure:
    """Test accuracy against effective width, one point per model, per variant; the penalty of
    each point written next to it."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant, g in table.groupby("variant", sort=False):
        color, marker = VARIANT_STYLE.get(variant, ("C7", "x"))
        ax.scatter(g["width"], g["test_acc"], color=color, marker=marker, label=variant)
        for r in g.itertuples():
            ax.annotate(f"{r.penalty:g}", (r.width, r.test_acc), fontsize=6, color=color,
                        xytext=(3, 2), textcoords="offset points")
    start = int(table["start"].max()) if len(table) else 0
    ax.axvline(start, color="0.7", ls=":", lw=1, label=f"start width ({start})")
    ax.set(xlabel="effective width (x0, or live gates)", ylabel="test accuracy",
           title=title or "accuracy for width")
    ax.legend(fontsize=7)
    return fig
