"""The optimizer study's three questions, recomputed from the spike rates."""

from __future__ import annotations

import pandas as pd

from widthlab.metrics.variance import Verdict


def verdicts(rates: pd.DataFrame, dataset: str) -> list[Verdict]:
    """The study's three questions for one dataset, from :func:`spike_rates`."""
    r = rates[rates.dataset == dataset].set_index(["optimizer", "variant"])
    out = []

    def rate(opt, var, col="late_rate"):
        return float(r.loc[(opt, var), col]) if (opt, var) in r.index else float("nan")

    if ("adam", "static") in r.index:
        e, lt = rate("adam", "static", "early_rate"), rate("adam", "static")
        holds = lt > e and lt > 0
        out.append(Verdict(
            claim="with Adam, loss spikes appear late in training", holds=holds,
            text=f"Adam, static network: {lt:.2f} spikes per 1,000 batches in the last third "
                 f"of training against {e:.2f} in the first third"
                 + (" (spikes concentrate late)" if holds else " (no late excess)"),
            numbers={"early": e, "late": lt}))
    adam = r.loc[r.index.get_level_values(0) == "adam"]
    adamax = r.loc[r.index.get_level_values(0) == "adamax"]
    if len(adam) and len(adamax):
        a, b = float(adam.late_rate.mean()), float(adamax.late_rate.mean())
        holds = b < a
        out.append(Verdict(
            claim="AdaMax reduces late spikes", holds=holds,
            text=f"late spikes per 1,000 batches, averaged over the variants: Adam {a:.2f}, "
                 f"AdaMax {b:.2f}" + ("" if holds else " (AdaMax does not reduce them)"),
            numbers={"adam": a, "adamax": b}))
    flex = [v for v in r.index.get_level_values(1).unique() if v.startswith("flexible")]
    if len(flex) >= 2 and all(("adam", v) in r.index for v in flex):
        vals = {v: rate("adam", v) for v in flex}
        lo, hi = min(vals.values()), max(vals.values())
        holds = hi > 2 * lo and hi > 0
        out.append(Verdict(
            claim="the effect depends on the flexible layer's x0 learning rate", holds=holds,
            text="Adam, late spikes per 1,000 batches: " + ", ".join(
                f"{v.replace('flexible-lr', 'x0 lr ')}: {x:.2f}" for v, x in vals.items())
            + (" (more than 2x apart)" if holds else " (within 2x of each other)"),
            numbers=vals))
    return out
