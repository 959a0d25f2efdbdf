"""The frontier study's claims, recomputed from its tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from widthlab.metrics.variance import Verdict

FACTOR = 2.0  # "finds the width": the recommendation within this factor of the plateau


def _oversized(models: pd.DataFrame, plateau: int, method: str) -> pd.DataFrame:
    col = f"recommended_{method}"
    over = models[models.width > plateau]
    return over.groupby("width", as_index=False)[col].median().rename(columns={col: "rec"})


def finds_sweep_width(models: pd.DataFrame, plateau: int, method: str) -> Verdict:
    """Does the frontier of a network wider than it needed recommend the width the sweep
    needed (its accuracy plateau), within a factor of 2?"""
    claim = "the frontier of an oversized network finds the width the sweep needed"
    over = _oversized(models, plateau, method)
    if over.empty:
        return Verdict(claim, False, f"no trained width above the sweep's plateau ({plateau}); "
                                     "train wider networks (--widths)")
    ratio = float(over.rec.median() / plateau)
    holds = bool(1 / FACTOR <= ratio <= FACTOR)
    pairs = ", ".join(f"{int(w)} -> {r:.0f}" for w, r in zip(over.width, over.rec, strict=True))
    text = (f"Cut by '{method}' with compensation (no retraining), the networks wider than the "
            f"sweep's plateau of {plateau} neurons need (trained -> recommended): {pairs}; "
            f"median {over.rec.median():.0f} = {ratio:.2f}x the plateau, "
            f"{'within' if holds else 'outside'} a factor {FACTOR:g}.")
    return Verdict(claim, holds, text, {"plateau": plateau, "ratio": ratio,
                                        "widths": over.width.tolist(),
                                        "recommended": over.rec.tolist()})


def independent_of_size(models: pd.DataFrame, plateau: int, method: str) -> Verdict:
    """Does the recommendation stay put as the trained network gets wider (widest vs
    narrowest oversized network within a factor of 2)?"""
    claim = "the recommended width does not grow with the trained width"
    over = _oversized(models, plateau, method)
    if len(over) < 2:
        return Verdict(claim, False, "needs at least two trained widths above the plateau; "
                                     "train wider networks (--widths)")
    lo, hi = float(over.rec.iloc[0]), float(over.rec.iloc[-1])
    growth = hi / max(lo, 1.0)
    holds = bool(growth <= FACTOR)
    text = (f"From trained width {int(over.width.iloc[0])} to {int(over.width.iloc[-1])} the "
            f"recommended width goes {lo:.0f} -> {hi:.0f} ({growth:.2f}x); "
            f"{'it stays within' if holds else 'it grows past'} a factor {FACTOR:g}.")
    return Verdict(claim, holds, text, {"growth": growth, "lo": lo, "hi": hi})


def fashion_needs_more(mnist: tuple[pd.DataFrame, int], fashion: tuple[pd.DataFrame, int],
                       method: str) -> Verdict:
    """By the frontier of the oversized networks, does FashionMNIST need more neurons?"""
    claim = "by the frontier, FashionMNIST needs more neurons than MNIST"
    med = {}
    for name, (models, plateau) in (("MNIST", mnist), ("FashionMNIST", fashion)):
        over = _oversized(models, plateau, method)
        med[name] = float(over.rec.median()) if len(over) else np.nan
    if any(np.isnan(v) for v in med.values()):
        return Verdict(claim, False, "needs oversized networks on both datasets")
    holds = bool(med["FashionMNIST"] > med["MNIST"])
    text = (f"Median recommended width of the oversized networks: FashionMNIST "
            f"{med['FashionMNIST']:.0f}, MNIST {med['MNIST']:.0f}; the claim "
            f"{'holds' if holds else 'does not hold'}.")
    return Verdict(claim, holds, text, med)
