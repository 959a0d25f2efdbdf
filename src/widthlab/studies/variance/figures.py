"""Figures of the variance study, drawn from its stored tables only (re-plotting never retrains).

Every function takes plain tables/arrays and returns a matplotlib ``Figure``; the report layer
saves it. Inputs are the per-width table of :func:`widthlab.studies.variance.summarize`
(``summary``) and the per-neuron stds of :func:`widthlab.studies.variance.collect`
(``stds[width] = [array per seed]``, pooled over seeds here).

Example::

    fig = accuracy_vs_width(variance.summarize(store, run_id), "test", "MNIST: test accuracy")
    fig.savefig("accuracy.png")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as sps

from widthlab.metrics.variance import accuracy_plateau, log_fit, most_normal_width
from widthlab.studies._plot import pick_widths, plt, yerr


def _pooled(stds: Mapping[int, Sequence[np.ndarray]], width: int) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64) for a in stds[width]])


def _kde(ax, values: np.ndarray, label: str, grid: np.ndarray) -> None:
    live = values[np.isfinite(values)]
    if len(live) >= 3 and np.ptp(live) > 0:
        ax.plot(grid, sps.gaussian_kde(live)(grid), label=label)
    else:  # a KDE needs spread: show a point mass instead
        ax.axvline(float(live.mean()) if len(live) else 0.0, ls=":", label=f"{label} (no spread)")


def std_distributions(stds: Mapping[int, Sequence[np.ndarray]], widths: Sequence[int],
                      title: str = "") -> Figure:
    """KDE of the pooled per-neuron activation std, one curve per width."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    allv = np.concatenate([_pooled(stds, w) for w in widths])
    hi = float(np.nanpercentile(allv, 99.5)) if allv.size else 1.0
    grid = np.linspace(0, max(hi, 1e-6) * 1.05, 400)
    for w in widths:
        _kde(ax, _pooled(stds, w), f"{w} neurons", grid)
    ax.set(xlabel="activation std of a neuron", ylabel="density",
           title=title or "distribution of neuron activation std")
    ax.legend(fontsize=8)
    return fig


def shapiro_vs_width(summary: pd.DataFrame, title: str = "") -> Figure:
    """Shapiro-Wilk W of the pooled stds versus width, the argmax marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(summary["width"], summary["shapiro_w"], "o-")
    best = most_normal_width(summary)
    ax.axvline(best["width"], color="C3", ls="--", label=f"max W at {best['width']} neurons")
    ax.set(xscale="log", xlabel="hidden neurons", ylabel="Shapiro-Wilk W",
           title=title or "normality of the std distribution")
    ax.legend(fontsize=8)
    return fig


def most_normal_neighbours(stds: Mapping[int, Sequence[np.ndarray]], summary: pd.DataFrame,
                           title: str = "") -> Figure:
    """The std distribution of the most-normal width and of its two neighbours."""
    best = most_normal_width(summary)
    widths = [w for w in (best["lower"], best["width"], best["upper"]) if w is not None]
    return std_distributions(stds, widths, title or
                             f"most normal width ({best['width']}) and its neighbours")


def total_std_vs_width(summary: pd.DataFrame, title: str = "") -> Figure:
    """Mean total std (sum over neurons) with its 95% interval and a fitted ``a + b ln w``."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    w = summary["width"].to_numpy(float)
    ax.errorbar(w, summary["total_std"], yerr=yerr(summary, "total_std"), fmt="o", capsize=2,
                label="total std (mean, 95% CI)")
    fit = log_fit(w, summary["total_std"].to_numpy(float))
    grid = np.geomspace(w.min(), w.max(), 200)
    ax.plot(grid, fit["a"] + fit["b"] * np.log(grid), "C3-",
            label=f"{fit['a']:.3g} + {fit['b']:.3g} ln w  (R² = {fit['r2']:.3f})")
    ax.set(xscale="log", xlabel="hidden neurons", ylabel="sum of neuron stds",
           title=title or "total activation std")
    ax.legend(fontsize=8)
    return fig


def dead_vs_width(summary: pd.DataFrame, title: str = "") -> Figure:
    """Dead neurons (never active on the training set) versus width."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.errorbar(summary["width"], summary["dead"], yerr=yerr(summary, "dead"), fmt="o-",
                capsize=2)
    ax.set(xscale="log", xlabel="hidden neurons", ylabel="dead neurons (mean, 95% CI)",
           title=title or "dead neurons")
    return fig


def accuracy_vs_width(summary: pd.DataFrame, split: str = "test", title: str = "") -> Figure:
    """Accuracy with its 95% interval over seeds; the plateau width marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    col = f"{split}_acc"
    ax.errorbar(summary["width"], summary[col], yerr=yerr(summary, col), fmt="o-", capsize=2)
    plateau = accuracy_plateau(summary["width"], summary[col])
    ax.axvline(plateau, color="C2", ls="--", label=f"plateau at {plateau} neurons")
    ax.set(xscale="log", xlabel="hidden neurons", ylabel=f"{split} accuracy",
           title=title or f"{split} accuracy")
    ax.legend(fontsize=8)
    return fig


def shapiro_and_accuracy(summary: pd.DataFrame, split: str = "test", title: str = "") -> Figure:
    """Shapiro W and accuracy on twin axes."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(summary["width"], summary["shapiro_w"], "o-", color="C0")
    ax.set(xscale="log", xlabel="hidden neurons")
    ax.set_ylabel("Shapiro-Wilk W", color="C0")
    ax2 = ax.twinx()
    ax2.plot(summary["width"], summary[f"{split}_acc"], "s--", color="C1")
    ax2.set_ylabel(f"{split} accuracy", color="C1")
    ax.set_title(title or "normality and accuracy")
    return fig


def metrics_vs_width(summary: pd.DataFrame, mixtures: pd.DataFrame,
                     turning: Mapping[str, float | None], title: str = "") -> Figure:
    """The journal's metrics figure: every width metric min-max normalised to [0, 1] against
    width, the test-accuracy plateau and each metric's turning point marked."""
    def norm(v):
        v = np.asarray(v, dtype=float)
        span = np.nanmax(v) - np.nanmin(v)
        return (v - np.nanmin(v)) / span if span > 0 else np.zeros_like(v)

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    w = summary["width"]
    series = [("test accuracy", w, summary["test_acc"], "k", "-"),
              ("two-gamma mixture", mixtures["width"], mixtures["gamma_useless"], "C0", "-"),
              ("exp+normal mixture", mixtures["width"], mixtures["expnormal_useless"], "C1", "-"),
              ("Shapiro W", w, summary["shapiro_w"], "C2", "-"),
              ("dead neurons", w, summary["dead"], "C3", "-")]
    for label, x, y, color, ls in series:
        ax.plot(x, norm(y), marker="o", ms=3, color=color, ls=ls, label=label)
        t = turning.get(label)
        if t is not None:
            ax.axvline(t, color=color, ls=":", lw=1)
    plateau = accuracy_plateau(w, summary["test_acc"])
    ax.axvline(plateau, color="k", ls="--", lw=1.2, label=f"accuracy plateau ({plateau})")
    ax.set(xscale="log", xlabel="hidden neurons", ylabel="normalised value (min-max)",
           title=title or "width metrics")
    ax.legend(fontsize=7, loc="best")
    return fig


def datasets_side_by_side(summaries: Mapping[str, pd.DataFrame],
                          stds: Mapping[str, Mapping[int, Sequence[np.ndarray]]],
                          split: str = "test") -> Figure:
    """Accuracy (plateau marked) and the std distribution at a common width, per dataset."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    common = sorted(set.intersection(*(set(s["width"]) for s in summaries.values())))
    at = pick_widths(common, 3)[len(pick_widths(common, 3)) // 2] if common else None
    allv = [np.concatenate([np.asarray(a) for a in stds[n][at]]) for n in summaries] if at else []
    hi = max((float(np.nanpercentile(v, 99.5)) for v in allv), default=1.0)
    grid = np.linspace(0, max(hi, 1e-6) * 1.05, 400)
    for i, (name, s) in enumerate(summaries.items()):
        col = f"{split}_acc"
        ax1.plot(s["width"], s[col], "o-", color=f"C{i}", label=name)
        plateau = accuracy_plateau(s["width"], s[col])
        ax1.axvline(plateau, color=f"C{i}", ls="--", lw=1,
                    label=f"{name} plateau: {plateau}")
        if at is not None:
            _kde(ax2, _pooled(stds[name], at), name, grid)
    ax1.set(xscale="log", xlabel="hidden neurons", ylabel=f"{split} accuracy",
            title="accuracy and its plateau")
    ax1.legend(fontsize=8)
    ax2.set(xlabel="activation std of a neuron", ylabel="density",
            title=f"std distribution at {at} neurons" if at else "no common width")
    ax2.legend(fontsize=8)
    return fig
