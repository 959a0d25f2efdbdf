"""Figures of the transformer study: the FFN-width sweep with the journal's statistics, the
frontier of every ranking, and the learned widths against static models."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from widthlab.studies._plot import plt


def _legend(ax, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def sweep(sweep: pd.DataFrame, stats: pd.DataFrame, title: str = "") -> Figure:
    """Validation loss against FFN width (each seed and the mean); the Shapiro W of the pooled
    activation stds and the near-constant fraction on the right."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.4, 4.0))
    if not sweep.empty:
        ax.scatter(sweep.ffn_width, sweep.val_loss, s=12, color="C0", alpha=0.6, label="seeds")
        mean = sweep.groupby("ffn_width").val_loss.mean()
        ax.plot(mean.index, mean.values, "-o", color="C0", label="mean")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="FFN width (every block)", ylabel="validation loss (nats/char)",
           title=f"{title}: loss against FFN width")
    _legend(ax)
    if not stats.empty:
        ax2.plot(stats.width, stats.shapiro_w, "-o", color="C1", label="Shapiro W (stds)")
        ax2.plot(stats.width, stats.near_constant_frac, "-s", color="C3",
                 label="near-constant fraction")
        ax2.plot(stats.width, stats.mix_low_weight, "-^", color="C2",
                 label="gamma mixture: low component weight")
    ax2.set_xscale("log", base=2)
    ax2.set(xlabel="FFN width", title="the journal's statistics of FFN neurons")
    _legend(ax2, fontsize=8)
    fig.tight_layout()
    return fig


def frontier(front: pd.DataFrame, title: str = "") -> Figure:
    """Loss against the fraction kept, per ranking: FFN one-shot, FFN after the fine-tune,
    heads one-shot; dense as a line."""
    panels = [("ffn", "loss", "FFN neurons, one-shot"), ("ffn", "loss_ft", "FFN, fine-tuned"),
              ("heads", "loss", "heads, one-shot")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0))
    if front.empty:
        front = pd.DataFrame(columns=["group", "method", "frac", "loss", "loss_ft"])
    dense = front[front.group == "dense"].loss
    for ax, (group, col, name) in zip(axes, panels, strict=True):
        sel = front[front.group == group]
        for i, (method, g) in enumerate(sel.groupby("method", sort=False)):
            g = g.sort_values("frac")
            ax.plot(g.frac, g[col], "-o", ms=3, color=f"C{i}", label=method,
                    lw=2.2 if method == "obs" else 1.0)
        if len(dense):
            ax.axhline(float(dense.iloc[0]), color="k", ls=":", label="dense")
        ax.set(xlabel="fraction of units kept in every block", ylabel="validation loss",
               title=f"{title}: {name}")
        ax.set_yscale("log")
    _legend(axes[0], fontsize=7)
    fig.tight_layout()
    return fig


def learned(gated: pd.DataFrame, sweep: pd.DataFrame, title: str = "") -> Figure:
    """Validation loss against FFN parameters: the gated runs (per kind), the static models of
    their widths, and the sweep's dense models."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if not sweep.empty:
        mean = sweep.groupby("ffn_params").val_loss.mean()
        ax.plot(mean.index, mean.values, "-o", color="0.5", label="dense sweep")
    for i, (kind, g) in enumerate(gated.groupby("kind")):
        ax.scatter(g.ffn_params, g.val_loss, color=f"C{i}", marker="o", label=f"gated ({kind})")
        ax.scatter(g.ffn_params, g.static_val_loss, color=f"C{i}", marker="x",
                   label=f"same widths from scratch ({kind})")
    ax.set_xscale("log")
    ax.set(xlabel="FFN parameters", ylabel="validation loss (nats/char)",
           title=f"{title}: learned widths")
    _legend(ax, fontsize=8)
    fig.tight_layout()
    return fig


def curves(curves: pd.DataFrame, title: str = "") -> Figure:
    """Validation loss and FFN parameters per chunk of steps for the gated and static runs."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.4, 4.0))
    sel = curves[curves.step.str.startswith(("gated-", "static-")) | (curves.step == "dense")] \
        if not curves.empty else curves
    for step, g in (sel.groupby("step") if not sel.empty else []):
        ax.plot(g.epoch, g["val/loss"], label=step)
        ax2.plot(g.epoch, g["train/ffn_params"], label=step)
    ax.set(xlabel="chunk of steps", ylabel="validation loss", title=f"{title}: training")
    ax2.set(xlabel="chunk of steps", ylabel="FFN parameters", title="FFN parameters")
    _legend(ax, fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["curves", "frontier", "learned", "sweep"]
