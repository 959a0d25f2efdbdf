"""The sparsifier study's verdicts: the journal's claims recomputed from its tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from widthlab.metrics.variance import Verdict
from widthlab.studies.gate_kinds import kind_terms
from widthlab.studies.sparsifier.analysis import per_price


def fashion_keeps_more(mnist: pd.DataFrame, fashion: pd.DataFrame,
                       kinds: tuple[str, str] = ("l1", "l1")) -> Verdict:
    """Journal: "for a given penalty the FashionMNIST size is always higher than MNIST"
    (lambda > 0; mean final width over seeds, lambda-sweep runs); ``kinds``: the gate kinds
    of the MNIST and FashionMNIST runs (named in the claim when not L1)."""
    claim, lead, mismatch = kind_terms("FashionMNIST keeps more neurons than MNIST at each "
                                        "lambda", kinds)
    if mismatch:
        return Verdict(claim, False, mismatch)
    a, b = per_price(mnist), per_price(fashion)
    both = a.merge(b, on=["start", "price"], suffixes=("_mnist", "_fashion"))
    both = both[both.price > 0].sort_values("price")
    if both.empty:
        return Verdict(claim, False,
                       "no lambda > 0 trained on both datasets; run the lambda sweep on both")
    more = (both.width_fashion > both.width_mnist).to_numpy()
    pairs = ", ".join(f"price {lam:g}: {wf:.0f} vs {wm:.0f}" for lam, wf, wm in
                      zip(both.price, both.width_fashion, both.width_mnist, strict=True))
    holds = bool(more.all())
    text = (f"{lead}FashionMNIST keeps more neurons than MNIST at {int(more.sum())} of "
            f"{len(more)} "
            f"prices (final alive width, FashionMNIST vs MNIST: {pairs}); the journal's claim "
            f"'at every lambda' {'holds' if holds else 'does not hold'}.")
    return Verdict(claim, holds, text,
                   {"price": both.price.tolist(), "fashion": both.width_fashion.tolist(),
                    "mnist": both.width_mnist.tolist()})


def start_width_matters(table: pd.DataFrame, *, rel: float = 0.2,
                        alpha: float = 0.05) -> Verdict:
    """The journal's open question: does the final width depend on the starting width?

    Per price, across start widths: with several seeds per start, a one-way ANOVA of the final
    widths (depends when p < ``alpha``); with one seed, the spread of the final widths relative
    to their mean (depends when above ``rel``). It depends if it does at any price.
    """
    ok = table[(table.status == "ok") & table.width.notna()]
    parts, depends, numbers = [], [], {}
    for lam, grp in ok.groupby("price"):
        by_start = [g.width.to_numpy(float) for _, g in grp.groupby("start")]
        if len(by_start) < 2:
            continue
        means = grp.groupby("start").width.mean()
        spread = float((means.max() - means.min()) / max(means.mean(), 1e-12))
        rho = float(sps.spearmanr(means.index, means.to_numpy()).statistic) \
            if means.nunique() > 1 else 0.0
        if min(len(v) for v in by_start) >= 2 and any(np.ptp(v) > 0 for v in by_start):
            p = float(sps.f_oneway(*by_start).pvalue)
            dep = bool(p < alpha)
            how = f"ANOVA p = {p:.2g}"
        else:
            p = float("nan")
            dep = spread > rel
            how = f"spread {100 * spread:.0f}% of the mean"
        depends.append(dep)
        numbers[float(lam)] = {"starts": means.index.tolist(), "final": means.tolist(),
                               "p": p, "spread": spread, "spearman": rho}
        parts.append(f"price {lam:g}: " + ", ".join(
            f"{int(s)} -> {w:.0f}" for s, w in means.items()) + f" ({how}, Spearman {rho:+.2f})")
    if not depends:
        return Verdict("final width depends on the starting width", False,
                       "needs at least two start widths at one price; run start-width")
    holds = any(depends)
    text = (f"Final alive width {'depends' if holds else 'does not depend'} on the starting "
            f"width (start -> final: {'; '.join(parts)}).")
    return Verdict("final width depends on the starting width", holds, text, numbers)


def sparsifier_vs_static(table: pd.DataFrame, split: str = "test", *,
                         margin: float = 0.005) -> Verdict:
    """Sparsifier against a static network at equal width (the journal compared its
    sparsifiers with static networks and found them "better at fitting and generalizing").

    Paired by model: accuracy of each sparsifier (price > 0) minus that of the static network
    of its final width and seed. Holds when the sparsifiers are at least as accurate within
    ``margin`` (mean difference >= -0.5 points); the 95% Student-t interval is reported.
    """
    col, ref = f"{split}_acc", f"static_{split}_acc"
    claim = f"sparsifier at least as accurate as a static network of its width ({split})"
    pairs = table[(table.status == "ok") & (table.price > 0) & table[ref].notna()] \
        if ref in table else table.iloc[:0]
    if pairs.empty:
        return Verdict(claim, False, "no static reference of the final widths stored; run the "
                                     "study with its static references (the default)")
    diff = (pairs[col] - pairs[ref]).to_numpy(float)
    mean = float(diff.mean())
    if len(diff) >= 2 and diff.std(ddof=1) > 0:
        half = float(sps.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
    else:
        half = float("nan")
    holds = bool(mean >= -margin)
    wins = int((diff > 0).sum())
    ci = ("" if np.isnan(half) else
          f" (95% CI {100 * (mean - half):+.2f} to {100 * (mean + half):+.2f})")
    text = (f"{split.capitalize()} accuracy of a sparsifier minus a static network of its final "
            f"width and seed: mean {100 * mean:+.2f} points{ci} over {len(diff)} models, "
            f"sparsifier ahead in {wins}; the sparsifier is "
            f"{'as accurate or better' if holds else 'less accurate'} at equal width "
            f"(criterion: mean >= {-100 * margin:+.1f} points).")
    return Verdict(claim, holds, text,
                   {"mean": mean, "half_ci": half, "n": len(diff), "wins": wins})
