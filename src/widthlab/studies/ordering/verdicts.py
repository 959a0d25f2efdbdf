"""The ordering-stability study's verdicts: the journal's claims recomputed from its tables."""

from __future__ import annotations

import pandas as pd

from widthlab.metrics.variance import Verdict
from widthlab.studies.ordering.analysis import (
    FAITHFUL_TAU,
    STABLE_CHURN,
    STABLE_TAU,
    paired_wins,
)


def sorted_layer_verdict(summary: pd.DataFrame) -> Verdict:
    """Which ordering is stable enough to drive a sorted cut-off layer: among the stable and
    faithful orderings, the most faithful; holds when there is one."""
    ok = summary[summary.stable & summary.faithful].sort_values("tau_with_exact",
                                                                ascending=False)
    parts = "; ".join(f"{r.ordering}: tau {r.kendall_tau:.3f}, churn {r.topk_churn:.3f}, "
                      f"with exact {r.tau_with_exact:.2f}" for r in summary.itertuples())
    claim = (f"an ordering is stable enough to drive a sorted cut-off layer (second half of "
             f"training: consecutive Kendall tau >= {STABLE_TAU}, top-quarter churn <= "
             f"{STABLE_CHURN}) and still faithful (tau with exact >= {FAITHFUL_TAU})")
    if ok.empty:
        return Verdict(claim, False, f"no ordering is both stable and faithful ({parts})",
                       {"orderings": summary.to_dict("records")})
    best = ok.iloc[0]
    text = (f"{best.ordering} is the ordering to drive a sorted layer: stable (tau "
            f"{best.kendall_tau:.3f}, churn {best.topk_churn:.3f}) and closest to exact (tau "
            f"{best.tau_with_exact:.2f}); stable and faithful: {', '.join(ok.ordering)}; all: "
            f"{parts}")
    return Verdict(claim, True, text, {"best": best.ordering, "stable": list(ok.ordering),
                                       "orderings": summary.to_dict("records")})


def exact_stability_verdict(summary: pd.DataFrame) -> Verdict:
    """Is the exact ordering itself stable (the journal's worry: it may reorder too fast)?"""
    r = summary.set_index("ordering").loc["exact"]
    text = (f"exact importance ordering, second half of training: consecutive Kendall tau "
            f"{r.kendall_tau:.3f}, {100 * r.swap_share:.1f}% of pairs swapped, mean "
            f"displacement {100 * r.mean_displacement_share:.1f}% of the width (max "
            f"{100 * r.max_displacement_share:.0f}%), top-quarter churn {100 * r.topk_churn:.1f}%")
    return Verdict("the exact importance ordering is stable during training", bool(r.stable),
                   text, {k: float(r[k]) for k in ("kendall_tau", "swap_share",
                                                   "mean_displacement_share", "topk_churn")})


def sorted_verdict(table: pd.DataFrame) -> Verdict:
    """Does sorting the neurons give the cut-off layer a better accuracy-for-width trade-off
    than the plain flexible layer? Compared model by model (:func:`paired_wins`); holds when a
    sorted variant wins more pairs than it loses."""
    mean = table.groupby("variant")[["width", "test_acc"]].mean()
    parts = "; ".join(f"{v}: {r.test_acc:.4f} at {r.width:.0f} neurons"
                      for v, r in mean.iterrows())
    claim = ("sorting the neurons (cut-off over importance ranks) gives a better accuracy for "
             "the width than the plain flexible layer (model by model, same penalty and seed)")
    sorted_variants = [v for v in mean.index if v.startswith("sorted")]
    if "flexible" not in mean.index or not sorted_variants:
        return Verdict(claim, False, f"needs the flexible and a sorted variant ({parts})",
                       {"mean": mean.to_dict("index")})
    wins = {v: paired_wins(table, v) for v in sorted_variants}
    score = {v: w["win"] - w["loss"] for v, w in wins.items()}
    best = max(score, key=score.get)
    counts = "; ".join(f"{v}: {w['win']} wins, {w['loss']} losses, {w['tie']} ties, "
                       f"{w['trade']} trades" for v, w in wins.items())
    text = (f"against the plain flexible layer, {counts}; means over penalties and seeds, test "
            f"accuracy at effective width: {parts}")
    return Verdict(claim, bool(score[best] > 0), text,
                   {"mean": mean.to_dict("index"), "wins": wins, "best": best})
