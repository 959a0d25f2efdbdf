"""Figures of the flexible-layer study, drawn from the tables of
:mod:`widthlab.studies.flexible.analysis` (which read the store only; re-plotting never
retrains).

Each function returns a matplotlib ``Figure``; the report layer saves it.

Example::

    from widthlab.studies.flexible import analysis, figures

    table = analysis.convergence_table("widthlab-runs", run_id)
    figures.convergence(table, "MNIST").savefig("convergence.png")
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

ARM_LABEL = {"l2": "with L2", "none": "without L2"}
ARM_COLOR = {"l2": "C0", "none": "C1"}
SLOPE_COLOR = {"deterministic": "C0", "random": "C3"}


def convergence(table: pd.DataFrame, name: str = "") -> Figure:
    """Final width (left) and test accuracy (right) versus the starting ``x0``, one line per
    arm (median over seeds); the dashed diagonal is "the width did not move"."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, t in table.groupby("arm"):
        per = t.groupby("start")[["final_width", "test_acc"]].median()
        c, label = ARM_COLOR.get(arm, "C2"), ARM_LABEL.get(arm, arm)
        ax1.plot(per.index, per["final_width"], "o-", color=c, label=label)
        ax2.plot(per.index, 100 * per["test_acc"], "o-", color=c, label=label)
    lim = [0, float(table["start"].max()) if len(table) else 1.0]
    ax1.plot(lim, lim, "k--", lw=0.8, label="final = start")
    ax1.set(xlabel="starting x0", ylabel="final width (x0 in [0, N])",
            title=f"{name}: learned width" if name else "learned width")
    ax2.set(xlabel="starting x0", ylabel="test accuracy (%)",
            title=f"{name}: accuracy" if name else "accuracy")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def frontier(summary: pd.DataFrame, best: pd.DataFrame, name: str = "", arm: str = "") -> Figure:
    """Converged width (left) and accuracies (right) versus the size penalty: flexible, a static
    network of the converged width, and the full-width static network (horizontal lines);
    solid test, dashed train."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    s = summary.sort_values("penalty")
    ax1.plot(s["penalty"], s["final_width"], "o-", color="C0")
    ax1.set(xscale="log", xlabel="size penalty", ylabel="median converged width",
            title=f"{name}: width ({ARM_LABEL.get(arm, arm)})")
    series = [("flexible", "test_acc", "train_acc", "C0"),
              ("static, same width", "static_test_acc", "static_train_acc", "C1")]
    for label, test, tr, c in series:
        if test in s and s[test].notna().any():
            ax2.plot(s["penalty"], 100 * s[test], "o-", color=c, label=f"{label} (test)")
        if tr in s and s[tr].notna().any():
            ax2.plot(s["penalty"], 100 * s[tr], "s--", color=c, ms=4, label=f"{label} (train)")
    for _, row in best.iterrows():
        ax2.axhline(100 * row["test_acc"], color="C2", lw=1, label="best static (test)")
        ax2.axhline(100 * row["train_acc"], color="C2", lw=1, ls="--",
                    label="best static (train)")
    ax2.set(xscale="log", xlabel="size penalty", ylabel="median accuracy (%)",
            title=f"{name}: accuracy ({ARM_LABEL.get(arm, arm)})")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plateau(table: pd.DataFrame, name: str = "") -> Figure:
    """Sum of ``|output weights|`` of each hidden neuron (dots, every model at the smallest
    penalty) against the scaler (line, median), with and without L2."""
    arms = [a for a in ("l2", "none") if a in set(table.arm)]
    fig, axes = plt.subplots(1, max(len(arms), 1), figsize=(5.5 * max(len(arms), 1), 4),
                             squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=False):
        t = table[(table.arm == arm)]
        t = t[t.penalty == t.penalty.min()]
        ax.scatter(t["i"], t["out_abs"], s=3, alpha=0.4, color=ARM_COLOR[arm],
                   label="sum |output weights|")
        ax.set(xlabel="hidden neuron i", ylabel="sum of |output weights|",
               title=f"{name}: {ARM_LABEL[arm]}, penalty {t.penalty.min():.1e}")
        ax2 = ax.twinx()
        med = t.groupby("i")["scaler"].median()
        ax2.plot(med.index, med.to_numpy(), "k-", lw=1.2, label="scaler (median)")
        ax2.set_ylim(-0.02, 1.05)
        ax2.set_ylabel("scaler sigmoid(k (x0 - i))")
        lines = ax.get_legend_handles_labels()
        more = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def _band(ax, e: pd.DataFrame, col: str, by: str, colors: dict, labels=None, scale=1.0) -> None:
    for key, t in e.groupby(by):
        g = t.groupby("epoch")[col]
        med, lo, hi = g.median() * scale, g.quantile(0.25) * scale, g.quantile(0.75) * scale
        c = colors.get(key, None)
        label = labels(key) if labels else str(key)
        ax.plot(med.index, med.to_numpy(), "o-", ms=3, color=c, label=label)
        ax.fill_between(med.index, lo.to_numpy(), hi.to_numpy(), color=c, alpha=0.2, lw=0)


def minima(e: pd.DataFrame, name: str = "") -> Figure:
    """Deterministic vs random slope per epoch: width, direction of the size update
    (``-dloss/dx0``) and mean batch loss; medians with interquartile bands."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    _band(axes[0], e, "width_now", "slope", SLOPE_COLOR)
    _band(axes[1], e, "size_grad", "slope", SLOPE_COLOR, scale=-1.0)
    _band(axes[2], e, "loss_running", "slope", SLOPE_COLOR)
    axes[1].axhline(0, color="k", lw=0.6)
    for ax, ylabel in zip(axes, ("width (x0)", "-mean dloss/dx0 (direction of x0)",
                                 "mean batch loss"), strict=True):
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.legend(fontsize=8)
    axes[2].set_yscale("log")
    fig.suptitle(f"{name}: deterministic versus random slope" if name else "")
    fig.tight_layout()
    return fig


def pretrained(e: pd.DataFrame, name: str = "") -> Figure:
    """Width and mean batch loss per flexible epoch, one line per pretraining level."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    levels = sorted(e["pretrain"].unique())
    colors = {lv: f"C{i}" for i, lv in enumerate(levels)}

    def label(lv):
        return f"{int(lv)} epochs static"

    _band(ax1, e, "width_now", "pretrain", colors, label)
    _band(ax2, e, "loss_running", "pretrain", colors, label)
    ax1.set(xlabel="flexible epoch (x0 reset to 0)", ylabel="width (x0)",
            title=f"{name}: width after pretraining")
    ax2.set(xlabel="flexible epoch", ylabel="mean batch loss", yscale="log",
            title=f"{name}: loss")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def size_only(e: pd.DataFrame, start: pd.Series, name: str = "") -> Figure:
    """Frozen weights: change of ``x0`` from its start and the mean size gradient per epoch,
    one line per model (colour: the slope it was pretrained with)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for model, t in e.groupby("model"):
        t = t.sort_values("epoch")
        c = SLOPE_COLOR.get(t["slope"].iloc[0], "C2") if "slope" in t else "C0"
        x0_start = float(start.get(model, np.nan))
        epochs = np.concatenate([[0], t["epoch"].to_numpy()])
        ax1.plot(epochs, np.concatenate([[0.0], t["x0"].to_numpy() - x0_start]), "-", color=c,
                 alpha=0.6)
        ax2.plot(t["epoch"], t["size_grad"], "o-", ms=3, color=c, alpha=0.6)
    for ax in (ax1, ax2):
        ax.axhline(0, color="k", lw=0.6)
    for key, c in SLOPE_COLOR.items():
        ax1.plot([], [], color=c, label=f"pretrained with {key} slope")
    ax1.set(xlabel="epoch (weights frozen)", ylabel="x0 - starting x0",
            title=f"{name}: size change")
    ax2.set(xlabel="epoch", ylabel="mean dloss/dx0 (> 0: shrinks)",
            title=f"{name}: size gradient")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig
