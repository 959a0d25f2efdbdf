"""Figures of the PCA study, drawn from its stored tables only (re-plotting never retrains).

Inputs are :func:`widthlab.studies.pca.load` results (``d``: per-model table and curves) and
:func:`widthlab.studies.pca.per_width` tables. Each function returns a matplotlib ``Figure``;
the report layer saves it.

Example::

    fig = spectra(pca.load(store, run_id), "MNIST: PCA spectra")
    fig.savefig("spectra.png")
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from widthlab.metrics.variance import accuracy_plateau
from widthlab.studies._plot import pick_widths, plt


def _by_width(d: dict) -> dict[int, list[int]]:
    """Analysed model indices per width."""
    out: dict[int, list[int]] = {}
    for row in d["table"].itertuples():
        out.setdefault(int(row.width), []).append(int(row.model))
    return out


def spectra(d: dict, title: str = "") -> Figure:
    """Explained-variance fraction of each component (log scale), one line per width."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    groups = _by_width(d)
    widths = pick_widths(sorted(groups), 6)
    cmap = plt.get_cmap("viridis")
    for i, w in enumerate(widths):
        vals = d["curves"]["pca_values"][groups[w][0]]
        frac = vals / vals.sum() if vals.sum() > 0 else vals
        ax.plot(np.arange(1, len(frac) + 1), np.maximum(frac, 1e-12),
                color=cmap(i / max(len(widths) - 1, 1)), label=f"{w} neurons")
    ax.set(xscale="log", yscale="log", xlabel="component (sorted)",
           ylabel="explained variance fraction", title=title or "PCA spectra")
    ax.legend(fontsize=7)
    return fig


def recon_curves(d: dict, key: str, ylabel: str, title: str = "") -> Figure:
    """``recon_dist`` or ``recon_acc`` versus k, one line per width (first analysed seed)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    groups = _by_width(d)
    widths = pick_widths(sorted(groups), 6)
    cmap = plt.get_cmap("viridis")
    for i, w in enumerate(widths):
        m = groups[w][0]
        ks = d["curves"]["recon_k"][m]
        ax.plot(np.maximum(ks, 0.5), d["curves"][key][m], "o-", ms=3,
                color=cmap(i / max(len(widths) - 1, 1)), label=f"{w} neurons")
    ax.set(xscale="log", xlabel="k (principal components kept; 0 drawn at 0.5)",
           ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return fig


def effective_dimension(summary: pd.DataFrame, plateau: int, title: str = "") -> Figure:
    """Components for 90/95/99%, participation ratio and the accuracy-keeping k versus width;
    the accuracy plateau of the sweep and the line ``y = width`` drawn for reference."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    w = summary["width"]
    for col, label in (("n90", "90% variance"), ("n95", "95% variance"),
                       ("n99", "99% variance"), ("participation_ratio", "participation ratio"),
                       ("k_recon", "k keeping accuracy (0.5 pt)")):
        ax.plot(w, np.maximum(summary[col], 0.5), "o-", ms=3, label=label)
    ax.plot(w, w, color="grey", lw=0.8, ls=":", label="y = width")
    ax.axvline(plateau, color="k", ls="--", lw=1.2, label=f"accuracy plateau ({plateau})")
    ax.set(xscale="log", yscale="log", xlabel="hidden neurons", ylabel="dimensions",
           title=title or "effective dimension")
    ax.legend(fontsize=7)
    return fig


def conjecture(image: pd.DataFrame, noise: pd.DataFrame, teacher_width: int,
               title: str = "") -> Figure:
    """Test accuracy versus width on the image task and on the teacher-labelled noise task."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (label, t) in enumerate((("image task", image), ("noise labelled by M", noise))):
        ax.plot(t["width"], t["test_acc"], "o-", color=f"C{i}", label=label)
        p = accuracy_plateau(t["width"], t["test_acc"])
        ax.axvline(p, color=f"C{i}", ls="--", lw=1, label=f"{label}: plateau {p}")
    ax.axvline(teacher_width, color="k", lw=1.5, label=f"M ({teacher_width} neurons)")
    ax.set(xscale="log", xlabel="hidden neurons", ylabel="test accuracy", title=title)
    ax.legend(fontsize=7)
    return fig
