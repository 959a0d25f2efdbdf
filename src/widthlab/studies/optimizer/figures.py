"""Figures of the optimizer study, from :func:`widthlab.studies.optimizer.envelope_table` and
:func:`~widthlab.studies.optimizer.spike_table` frames."""

from __future__ import annotations

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _panels(frame: pd.DataFrame):
    opts = list(dict.fromkeys(frame["optimizer"]))
    fig, axes = plt.subplots(1, len(opts), figsize=(4.2 * len(opts), 3.8), sharey=True,
                             squeeze=False)
    return fig, list(zip(opts, axes[0], strict=True))


def envelopes(env: pd.DataFrame, title: str = "") -> Figure:
    """Per optimizer: the median batch loss per epoch (line), min-max envelope (light band)
    and the replicates' spread of medians (dark band), per variant; log scale."""
    fig, panels = _panels(env)
    for opt, ax in panels:
        sub = env[env.optimizer == opt]
        for i, (var, g) in enumerate(sub.groupby("variant", sort=False)):
            g = g.sort_values("epoch")
            c = f"C{i}"
            ax.fill_between(g.epoch, g.loss_min, g.loss_max, color=c, alpha=0.12, lw=0)
            ax.fill_between(g.epoch, g.median_lo, g.median_hi, color=c, alpha=0.3, lw=0)
            ax.plot(g.epoch, g.loss_median, color=c, label=var)
        ax.set(yscale="log", xlabel="epoch", title=opt)
        ax.legend(fontsize=7)
    panels[0][1].set_ylabel("minibatch loss")
    fig.suptitle(title)
    return fig


def spike_counts(spikes: pd.DataFrame, title: str = "") -> Figure:
    """Per optimizer: spikes per epoch (summed over replicates), one line per variant."""
    fig, panels = _panels(spikes)
    for opt, ax in panels:
        sub = spikes[spikes.optimizer == opt]
        for i, (var, g) in enumerate(sub.groupby("variant", sort=False)):
            g = g.sort_values("epoch")
            ax.plot(g.epoch, g.spikes, "o-", ms=2.5, color=f"C{i}", label=var)
        ax.set(xlabel="epoch", title=opt)
        ax.legend(fontsize=7)
    panels[0][1].set_ylabel("spikes (all replicates)")
    fig.suptitle(title)
    return fig
