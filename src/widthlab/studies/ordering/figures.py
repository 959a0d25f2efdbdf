"""Figures of the ordering-stability study, drawn from its stored tables only.

Inputs are :func:`widthlab.studies.ordering.stability_table` (``series``),
:func:`~widthlab.studies.ordering.fidelity_table` (``fidelity``) and
:func:`~widthlab.studies.ordering.sorted_table` (``table``: the sorted-layer comparison).
Each function returns a matplotlib ``Figure``; the report layer saves it.

Example::

    fig = stability_curves(ordering.stability_table(store, run_id), "MNIST")
    fig.savefig("stability.png")
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from widthlab.studies._importance_plots import color  # noqa: E402

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
            ax.plot(m.index, m.values, "o-", ms=3, color=color(name), label=name,
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
        ax.plot(m.index, m.values, "o-", ms=3, color=color(name), label=name)
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
        col, marker = VARIANT_STYLE.get(variant, ("C7", "x"))
        ax.scatter(g["width"], g["test_acc"], color=col, marker=marker, label=variant)
        for r in g.itertuples():
            ax.annotate(f"{r.penalty:g}", (r.width, r.test_acc), fontsize=6, color=col,
                        xytext=(3, 2), textcoords="offset points")
    start = int(table["start"].max()) if len(table) else 0
    ax.axvline(start, color="0.7", ls=":", lw=1, label=f"start width ({start})")
    ax.set(xlabel="effective width (x0, or live gates)", ylabel="test accuracy",
           title=title or "accuracy for width")
    ax.legend(fontsize=7)
    return fig
