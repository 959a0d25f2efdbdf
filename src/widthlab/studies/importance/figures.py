"""Figures of the importance study, drawn from its stored tables only.

Inputs are the scores of one model (:func:`widthlab.studies.importance.score_arrays`), the
agreement table (:func:`~widthlab.studies.importance.agreement_table`) and the top-k table
(:func:`~widthlab.studies.importance.topk_table`). Each function returns a matplotlib
``Figure``; the report layer saves it.

Example::

    fig = topk_curves(importance.topk_table(store, run_id).query("model == 0"), "MNIST")
    fig.savefig("topk.png")
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
from widthlab.studies._importance_plots import color  # noqa: E402


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
        ax.scatter(rx, ranks(scores[name]), s=3, alpha=0.5, color=color(name), lw=0)
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
        ax1.plot(m.index, m["kendall"], "o-", color=color(name), label=name)
        ax2.plot(m.index, m["top25%"], "o-", color=color(name), label=name)
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
        ax1.plot(c["k"], c["acc"], marker=".", color=color(name), label=name,
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
