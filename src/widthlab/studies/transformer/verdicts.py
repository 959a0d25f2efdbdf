"""The transformer study's claims, computed from its tables (each states its numbers)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from widthlab.metrics.variance import Verdict

PLATEAU_TOL = 0.01  # nats: the plateau is the narrowest FFN width this close to the best


def plateau(stats_or_sweep: pd.DataFrame, tol: float = PLATEAU_TOL) -> Verdict:
    """Where the validation loss stops improving with the FFN width."""
    if stats_or_sweep.empty or stats_or_sweep.ffn_width.nunique() < 2:
        return Verdict("the validation loss plateaus in the FFN width", False,
                       "needs at least two FFN widths; run more --ffn-widths")
    loss = stats_or_sweep.groupby("ffn_width").val_loss.mean()
    best = float(loss.min())
    at = int(loss[loss <= best + tol].index.min())
    widest = int(loss.index.max())
    holds = at < widest
    return Verdict("the validation loss plateaus in the FFN width", holds,
                   f"narrowest FFN width within {tol} nats of the best loss {best:.4f}: {at} "
                   f"(loss {loss[at]:.4f}); the widest, {widest}, reaches {loss[widest]:.4f}",
                   {"plateau": at, "best": best, "widest": widest})


def proxy_tracks_plateau(stats: pd.DataFrame, tol: float = PLATEAU_TOL) -> Verdict:
    """The journal's proxy: the width whose activation-std distribution is most normal
    (largest Shapiro W) is within a factor 2 of the plateau width."""
    claim = "the most normal std distribution (journal's proxy) marks the plateau width"
    if stats.empty or len(stats) < 2 or stats.shapiro_w.isna().all():
        return Verdict(claim, False, "needs the statistics of at least two FFN widths")
    best = float(stats.val_loss.min())
    at = int(stats.width[stats.val_loss <= best + tol].min())
    proxy = int(stats.width[stats.shapiro_w.idxmax()])
    holds = at / 2 <= proxy <= at * 2
    return Verdict(claim, holds, f"largest Shapiro W {stats.shapiro_w.max():.3f} at FFN width "
                   f"{proxy}; loss plateau (within {tol} nats) at {at}",
                   {"proxy": proxy, "plateau": at})


def dead_grows(stats: pd.DataFrame) -> Verdict:
    claim = "near-constant FFN neurons grow with the FFN width"
    if stats.empty or len(stats) < 2:
        return Verdict(claim, False, "needs at least two FFN widths")
    fr = stats.near_constant_frac.to_numpy()
    holds = bool(fr[-1] > fr[0])
    return Verdict(claim, holds, "near-constant fraction (std < 1% of the median) per width: "
                   + ", ".join(f"{w}: {f:.3f}" for w, f in zip(stats.width, fr, strict=True)),
                   {"fractions": fr.tolist()})


def _cuts(front: pd.DataFrame, group: str, frac: float, col: str = "loss") -> pd.Series:
    sel = front[(front.group == group) & np.isclose(front.frac, frac)]
    return sel.set_index("method")[col]


def obs_wins(front: pd.DataFrame, group: str, frac: float, within: float | None = None,
             col: str = "loss") -> Verdict:
    """obs below every other ranking (and, with ``within``, that close to dense)."""
    what = "FFN neurons" if group == "ffn" else "heads"
    when = "one-shot" if col == "loss" else "after the fine-tune"
    claim = f"{frac:.0%} of every block's {what} kept, {when}: obs below every other ranking" \
        + (f" and within {within} nats of dense" if within is not None else "")
    if front.empty:
        return Verdict(claim, False, "no frontier stored")
    cuts = _cuts(front, group, frac, col)
    if "obs" not in cuts or len(cuts) < 2:
        return Verdict(claim, False, f"needs obs and another ranking at {frac}")
    dense = float(front[front.group == "dense"].loss.iloc[0])
    others = cuts.drop("obs")
    best = others.idxmin()
    holds = bool(cuts["obs"] < others.min())
    if within is not None:
        holds = holds and cuts["obs"] - dense <= within
    return Verdict(claim, holds, f"dense {dense:.4f}; obs {cuts['obs']:.4f} (+"
                   f"{cuts['obs'] - dense:.4f}); best other {best} {others.min():.4f}",
                   {"dense": dense, "obs": float(cuts["obs"]), "best_other": best})


def allocation_wins(front: pd.DataFrame, frac: float = 0.5) -> Verdict:
    claim = (f"the whole-network allocation beats the uniform obs cut at the parameters of "
             f"{frac:.0%} of the FFN")
    if front.empty:
        return Verdict(claim, False, "no frontier stored")
    alloc = front[(front.method == "allocation (obs)") & np.isclose(front.frac, frac)]
    uni = _cuts(front, "ffn", frac)
    if alloc.empty or "obs" not in uni:
        return Verdict(claim, False, f"no allocation or uniform obs cut at {frac}")
    best = alloc.loc[alloc.loss.idxmin()]
    holds = bool(best.loss < uni["obs"])
    return Verdict(claim, holds, f"allocation over {best.group}: {best.loss:.4f} ({best.widths})"
                   f"; uniform obs {uni['obs']:.4f}", {"allocation": float(best.loss),
                                                       "uniform": float(uni["obs"])})


def learned_widths(gated: pd.DataFrame, tol: float = 0.02, ratio: float = 2.0) -> Verdict:
    """A learned network with >= ``ratio`` x fewer FFN parameters than dense, within ``tol``
    nats of dense, and below the static model of its widths trained from scratch."""
    claim = (f"learned widths: >= {ratio:g}x fewer FFN parameters than dense, within {tol} "
             "nats of dense, below the same widths trained from scratch")
    if gated.empty:
        return Verdict(claim, False, "no gated runs stored")
    ok = gated[(gated.ffn_ratio >= ratio) & (gated.vs_dense <= tol) & (gated.vs_static < 0)]
    rows = "; ".join(f"{r.kind} {r.price}: {r.ffn_ratio:.2f}x fewer, {r.val_loss:.4f} "
                     f"(dense {r.dense_val_loss:.4f}, static {r.static_val_loss:.4f})"
                     for r in gated.itertuples())
    return Verdict(claim, not ok.empty, rows, {"passing": ok.kind.tolist()})


__all__ = ["allocation_wins", "dead_grows", "learned_widths", "obs_wins", "plateau",
           "proxy_tracks_plateau"]
