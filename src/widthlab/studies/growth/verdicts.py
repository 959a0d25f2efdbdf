"""The growth study's claims, with their numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from widthlab.metrics.variance import Verdict
from widthlab.studies.gate_kinds import kind_terms

SPREAD = 0.20   # "the same width from any start": every start's mean within 20% of the mean
MARGIN = 0.003  # "as good as a static network": at most 0.3 points below


def same_width_from_any_start(sp: pd.DataFrame, init: str = "gradmax") -> Verdict:
    claim = f"the final width does not depend on the start ({init})"
    g = sp[sp.init == init].sort_values("price")
    if g.empty or (g.starts < 2).all():
        return Verdict(claim, False, "needs at least two starts; run the study's starts")
    holds = bool((g.spread <= SPREAD).all())
    parts = ", ".join(f"price {lam:g}: mean {w:.0f}, spread {100 * s:.0f}%"
                      for lam, w, s in zip(g.price, g.mean_width, g.spread, strict=True))
    others = sp[sp.init != init].groupby("init").spread.max()
    ref = "; largest spread of " + ", ".join(f"{i} {100 * s:.0f}%" for i, s in others.items()) \
        if len(others) else ""
    text = (f"Final width over the starts ({parts}){ref}; criterion: every spread <= "
            f"{100 * SPREAD:.0f}%, {'met' if holds else 'not met'}.")
    return Verdict(claim, holds, text, {"price": g.price.tolist(), "spread": g.spread.tolist()})


def as_good_as_static(t: pd.DataFrame, init: str = "gradmax") -> Verdict:
    claim = f"accuracy at the final width is as good as a static network of that width ({init})"
    pairs = t[(t.init == init) & (t.status == "ok") & t.static_acc.notna()]
    if pairs.empty:
        return Verdict(claim, False, "no static networks of the final widths stored; run the "
                                     "study with its static references (the default)")
    diff = (pairs.test_acc - pairs.static_acc).to_numpy(float)
    holds = bool(diff.mean() >= -MARGIN)
    text = (f"Test accuracy minus a static network of the same final width and seed: mean "
            f"{100 * diff.mean():+.2f} points over {len(diff)} models (min "
            f"{100 * diff.min():+.2f}, max {100 * diff.max():+.2f}); criterion: mean >= "
            f"{-100 * MARGIN:+.1f} points, {'met' if holds else 'not met'}.")
    return Verdict(claim, holds, text, {"mean": float(diff.mean()), "n": len(diff)})


def growing_is_cheaper(t: pd.DataFrame, init: str = "gradmax") -> Verdict:
    """Growing from the smallest start costs less than shrinking (the sparsifier) from the
    largest, for the same final accuracy (within 0.3 points), at every price."""
    claim = "growing from small costs less than shrinking from large for the same accuracy"
    ok = t[t.status == "ok"]
    lo, hi = ok.start_width.min(), ok.start_width.max()
    grow = ok[(ok.init == init) & (ok.start_width == lo)].groupby("price")
    shrink = ok[(ok.init == "none") & (ok.start_width == hi)].groupby("price")
    both = pd.DataFrame({"g_flops": grow.train_flops.mean(), "g_acc": grow.test_acc.mean(),
                         "s_flops": shrink.train_flops.mean(),
                         "s_acc": shrink.test_acc.mean()}).dropna()
    if both.empty:
        return Verdict(claim, False, "needs growing models from the smallest start and "
                                     "sparsifier models (init none) from the largest")
    wins = (both.g_flops < both.s_flops) & (both.g_acc >= both.s_acc - MARGIN)
    holds = bool(wins.all())
    parts = "; ".join(f"price {lam:g}: {r.g_flops / 1e9:.1f} vs {r.s_flops / 1e9:.1f} GFLOPs, "
                      f"{100 * r.g_acc:.2f}% vs {100 * r.s_acc:.2f}%"
                      for lam, r in both.iterrows())
    text = (f"Growing from {lo} against the sparsifier from {hi} ({parts}); cheaper at equal "
            f"accuracy at {int(wins.sum())} of {len(wins)} prices.")
    return Verdict(claim, holds, text, {"price": both.index.tolist()})


def fashion_ends_wider(mnist: pd.DataFrame, fashion: pd.DataFrame, init: str = "gradmax",
                       kinds: tuple[str, str] = ("l1", "l1")) -> Verdict:
    """Does FashionMNIST end wider than MNIST at every price (models of ``init``); ``kinds``:
    the gate kinds of the MNIST and FashionMNIST runs (named in the claim when not L1)."""
    claim, lead, mismatch = kind_terms(
        f"FashionMNIST ends wider than MNIST at every price ({init})", kinds)
    if mismatch:
        return Verdict(claim, False, mismatch)
    a = mnist[mnist.init == init].set_index("price").mean_width
    b = fashion[fashion.init == init].set_index("price").mean_width
    lams = sorted(set(a.index) & set(b.index))
    if not lams:
        return Verdict(claim, False, "needs the same prices on both datasets")
    wider = np.array([b[lam] > a[lam] for lam in lams])
    holds = bool(wider.all())
    parts = ", ".join(f"price {lam:g}: {b[lam]:.0f} vs {a[lam]:.0f}" for lam in lams)
    text = (f"{lead}Mean final width, FashionMNIST vs MNIST ({parts}): wider at "
            f"{int(wider.sum())} of {len(lams)} prices; the claim "
            f"{'holds' if holds else 'does not hold'}.")
    return Verdict(claim, holds, text, {"price": lams})
