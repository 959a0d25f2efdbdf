"""Figures of the sparsifier study, drawn from the study's stored tables only.

Inputs are :func:`widthlab.studies.sparsifier.summarize` (``table``: one row per model, with
``price``, ``start``, ``seed``, ``width`` = final alive width, accuracies and the static
network's accuracies) and :func:`widthlab.studies.sparsifier.curves` (``curve``: one row per
model and epoch). Lambdas are drawn as categories (0, the journal's unpenalised network, has no
place on a log axis); widths are drawn on linear axes from 0 (a model may keep no neuron).
Each function returns a matplotlib ``Figure``; the report layer saves it.

Example::

    fig = lambda_sweep(sparsifier.summarize(store, run_id), "MNIST: price sweep")
    fig.savefig("sweep.png")
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _lam_label(lam: float) -> str:
    return "0" if lam == 0 else f"{lam:.0e}".replace("e-0", "e-")


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table.status == "ok") & table.width.notna()]


def _by_lambda(table: pd.DataFrame, col: str) -> tuple[list[float], np.ndarray]:
    means = _ok(table).groupby("price")[col].mean()
    return list(means.index), means.to_numpy(float)


def lambda_sweep(table: pd.DataFrame, title: str = "") -> Figure:
    """Left: final alive width per price (every seed, and the mean). Right: train and test
    accuracy per price, sparsifier (filled) against the static network of the same final
    width (open markers)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    lams = sorted(_ok(table).price.unique())
    pos = {lam: i for i, lam in enumerate(lams)}
    ok = _ok(table)
    ax1.plot([pos[v] for v in ok.price], ok.width, "o", color="C0", alpha=0.5, label="each seed")
    x, w = _by_lambda(table, "width")
    ax1.plot([pos[v] for v in x], w, "-", color="C0", label="mean")
    start = int(table.start.max())
    ax1.axhline(start, color="0.6", ls=":", lw=1, label=f"start ({start})")
    ax1.set(xlabel="price", ylabel="final alive width", title="neurons kept")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    for split, color in (("train", "C2"), ("test", "C1")):
        x, acc = _by_lambda(table, f"{split}_acc")
        ax2.plot([pos[v] for v in x], acc, "o-", color=color, label=f"sparsifier {split}")
        ref = f"static_{split}_acc"
        if ref in table and table[ref].notna().any():
            x, acc = _by_lambda(table, ref)
            ax2.plot([pos[v] for v in x], acc, "o--", color=color, mfc="none",
                     label=f"static, same width, {split}")
    ax2.set(xlabel="price", ylabel="accuracy", title="accuracy after the last epoch")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(lams)), [_lam_label(v) for v in lams])
    if title:
        fig.suptitle(title)
    return fig


def training_curves(curve: pd.DataFrame, title: str = "") -> Figure:
    """Per price (mean over seeds): test accuracy and alive width against epoch."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    mean = curve.groupby(["price", "epoch"], as_index=False)[["test_acc", "alive_width"]].mean()
    for i, (lam, grp) in enumerate(mean.groupby("price")):
        label = f"price {_lam_label(lam)}"
        ax1.plot(grp.epoch, grp.test_acc, "o-", ms=3, color=f"C{i}", label=label)
        ax2.plot(grp.epoch, grp.alive_width, "o-", ms=3, color=f"C{i}", label=label)
    ax1.set(xlabel="epoch", ylabel="test accuracy", title="accuracy")
    ax2.set(xlabel="epoch", ylabel="alive neurons", title="alive width")
    ax2.set_ylim(bottom=0)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def start_width(table: pd.DataFrame, curve: pd.DataFrame, title: str = "") -> Figure:
    """Left: final alive width against the starting width, one line per price (the
    identity dotted). Right: alive width per epoch for each starting width."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ok = _ok(table)
    starts = sorted(ok.start.unique())
    for i, (lam, grp) in enumerate(ok.groupby("price")):
        means = grp.groupby("start").width.mean()
        ax1.plot(grp.start, grp.width, "o", color=f"C{i}", alpha=0.4)
        ax1.plot(means.index, means.to_numpy(), "-", color=f"C{i}",
                 label=f"price {_lam_label(lam)}")
    if starts:
        ax1.plot(starts, starts, ":", color="0.6", lw=1, label="kept everything")
    ax1.set(xscale="log", xlabel="starting width", ylabel="final alive width",
            title="final width")
    ax1.set_xticks(starts, [str(int(s)) for s in starts])
    ax1.minorticks_off()
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    mean = curve.groupby(["start", "price", "epoch"], as_index=False)["alive_width"].mean()
    styles = ["-", "--", ":", "-."]
    for j, (lam, by_lam) in enumerate(mean.groupby("price")):
        for i, (start, grp) in enumerate(by_lam.groupby("start")):
            ax2.plot(grp.epoch, grp.alive_width, styles[j % len(styles)], color=f"C{i}",
                     label=f"start {int(start)}" + (f", price {_lam_label(lam)}"
                                                     if mean.price.nunique() > 1 else ""))
    ax2.set(xlabel="epoch", ylabel="alive neurons", title="alive width")
    ax2.set_ylim(bottom=0)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def datasets_widths(tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Final alive width per price for each dataset (every seed, and the mean)."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    lams = sorted(set().union(*(_ok(t).price.unique() for t in tables.values())))
    pos = {lam: i for i, lam in enumerate(lams)}
    for i, (name, table) in enumerate(tables.items()):
        ok = _ok(table)
        ax.plot([pos[v] for v in ok.price], ok.width, "o", color=f"C{i}", alpha=0.4)
        x, w = _by_lambda(table, "width")
        ax.plot([pos[v] for v in x], w, "-", color=f"C{i}", label=name)
    ax.set_xticks(range(len(lams)), [_lam_label(v) for v in lams])
    ax.set(xlabel="price", ylabel="final alive width", title="neurons kept per price")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return fig
