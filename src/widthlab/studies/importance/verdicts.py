"""The importance study's verdicts: the journal's claims recomputed from its tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from widthlab.errors import UsageError
from widthlab.metrics.variance import Verdict
from widthlab.studies.importance.analysis import ACC_TOLERANCE, cut_summary, proxy_summary

#: A proxy "orders like the exact importance" at a mean Kendall tau of at least this.
TAU_GOOD = 0.5


def closest_proxy(agree: pd.DataFrame) -> Verdict:
    """Which proxy ranks neurons most like the exact importance (mean Kendall tau over
    models); holds when that proxy reaches :data:`TAU_GOOD`."""
    s = proxy_summary(agree)
    best = s.iloc[0]
    others = "; ".join(f"{r.proxy} {r.kendall:.2f}" for r in s.iloc[1:].itertuples())
    mag = s.sort_values("kendall_abs", ascending=False).iloc[0]
    text = (f"{best.proxy} is closest to the exact importance: mean Kendall tau "
            f"{best.kendall:.2f}, Spearman {best.spearman:.2f}, top-25% overlap "
            f"{best['top25%']:.2f} over {agree.model.nunique()} models (others, tau: {others}); "
            f"against its magnitude |exact| the best is {mag.proxy} (tau {mag.kendall_abs:.2f})")
    return Verdict(f"a cheap proxy orders neurons like the exact importance "
                   f"(Kendall tau >= {TAU_GOOD})", bool(best.kendall >= TAU_GOOD), text,
                   {"best": best.proxy, "kendall": s.set_index("proxy")["kendall"].to_dict()})


def best_cut(topk: pd.DataFrame) -> Verdict:
    """Does the exact ordering keep the most accuracy under top-k cuts (highest mean accuracy
    over the k grid, averaged over models)?"""
    cs = cut_summary(topk)
    mean = cs.groupby("ordering")["mean_acc"].mean().sort_values(ascending=False)
    best = mean.index[0]
    ex = mean.get("exact", np.nan)
    parts = "; ".join(f"{k} {v:.3f}" for k, v in mean.items())
    text = (f"{best} keeps the most accuracy under top-k cuts (mean test accuracy over the k "
            f"grid, averaged over models): {parts}")
    return Verdict("the exact ordering keeps the most accuracy when only the top k neurons "
                   "are kept", bool(mean.max() - ex <= 1e-12), text,
                   {"mean_acc": mean.to_dict()})


def inference_gain(topk: pd.DataFrame, tolerance: float = ACC_TOLERANCE) -> Verdict:
    """Inference-time influence on the widest models: the kept count (and latency) that holds
    the full accuracy within ``tolerance``, by the exact order versus a random one."""
    cs = cut_summary(topk, tolerance)
    wide = cs[cs.width == cs.width.max()]
    per = wide.groupby("ordering").agg(k_keep=("k_keep", "mean"), ms_keep=("ms_keep", "mean"),
                                       ms_full=("ms_full", "mean"))
    if "exact" not in per.index or "random" not in per.index:
        raise UsageError("the top-k table needs the exact and the random ordering")
    e, r = per.loc["exact"], per.loc["random"]
    best = per["k_keep"].idxmin()
    width = int(wide.width.iloc[0])
    text = (f"width {width}: keeping the exact top {e.k_keep:.0f} neurons holds the test "
            f"accuracy within {100 * tolerance:.0f} point of the full layer, at "
            f"{e.ms_keep:.2f} ms per test-set forward versus {e.ms_full:.2f} ms for all "
            f"{width}; a random order needs {r.k_keep:.0f} neurons ({r.ms_keep:.2f} ms); "
            f"fewest kept: {best} ({per.loc[best, 'k_keep']:.0f})")
    return Verdict("ordering by exact importance lets a smaller, faster layer keep the accuracy "
                   "(fewer neurons than a random order)", bool(e.k_keep < r.k_keep), text,
                   {"k_keep": per["k_keep"].to_dict(), "ms_keep": per["ms_keep"].to_dict()})
