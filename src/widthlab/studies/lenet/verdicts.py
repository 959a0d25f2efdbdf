"""The lenet study's claims (issue 17's acceptance), recomputed from its rows."""

from __future__ import annotations

import pandas as pd

from widthlab.metrics.variance import Verdict
from widthlab.nn.lenet import LENET5, LENET300
from widthlab.studies.lenet.analysis import CUT, GATED
from widthlab.studies.lenet.config import L1
from widthlab.studies.lenet.references import (
    BOUND,
    MAX_FEATURES_300,
    PUBLISHED,
    WEIGHTS_ROW_5,
    published_weights,
    widths_text,
)


def _gated(rows: pd.DataFrame, network: str, kind: str | None = None) -> pd.DataFrame:
    """The gated rows of ``network`` (of one gate kind, or all)."""
    if rows.empty:
        return rows
    out = rows[(rows.network == network) & rows.method.str.startswith("widthlab gates")]
    if kind is not None:
        kinds = out["gate_kind"].fillna(L1) if "gate_kind" in out else \
            pd.Series(L1, index=out.index)
        out = out[kinds == kind]
    return out


def _kind_text(kind: str) -> str:
    return "" if kind == L1 else f" ({GATED[kind].removeprefix('widthlab ')})"


def _listing(g: pd.DataFrame) -> str:
    return "; ".join(f"price {r.price:g}: {r.widths} ({r.total_width} features, {r.weights} "
                     f"weights) at {r.error:.2f}%" for r in g.sort_values("price").itertuples())


def _target(rows: pd.DataFrame, network: str, claim: str, ok: pd.Series, criterion: str,
            key: str, kind: str) -> Verdict:
    g = _gated(rows, network, kind)
    if g.empty:
        how = f"--networks {network}" if kind == L1 else f"--gate-kinds ...,{kind}"
        return Verdict(claim, False, f"no gated {network} run{_kind_text(kind)} stored; run "
                                     f"the study with {how}")
    within = g[ok.loc[g.index]]
    holds = not within.empty
    best = within.sort_values([key, "error"]).iloc[0] if holds else \
        g.sort_values("error").iloc[0]
    text = (f"{claim}. Final-epoch test error and widths per price: {_listing(g)}. Criterion: "
            f"{criterion}; {'met' if holds else 'not met'} "
            f"({'best' if holds else 'lowest-error'} row: price {best.price:g}, "
            f"{best.widths}, {best[key]} {key.replace('_', ' ')}, {best.error:.2f}%).")
    return Verdict(claim, holds, text, {"error": float(best.error), key: int(best[key]),
                                        "widths": best.widths, "price": float(best.price)})


def lenet300_target(rows: pd.DataFrame, kind: str = L1) -> Verdict:
    """LeNet-300-100 with gates of ``kind`` reaches at most 1.6% final-epoch test error with
    at most 200 input features kept in all over its three layers (better than L0 and SBP,
    level with VIB)."""
    claim = (f"{LENET300}{_kind_text(kind)}: at most {BOUND[LENET300]}% error with at most "
             f"{MAX_FEATURES_300} input features in all")
    ok = (rows.error <= BOUND[LENET300]) & (rows.total_width <= MAX_FEATURES_300) \
        if not rows.empty else pd.Series(dtype=bool)
    return _target(rows, LENET300, claim, ok, f"error <= {BOUND[LENET300]}% and <= "
                   f"{MAX_FEATURES_300} features", "total_width", kind)


def lenet5_target(rows: pd.DataFrame, kind: str = L1) -> Verdict:
    """LeNet-5-Caffe with gates of ``kind`` reaches at most 1.0% with fewer weights than
    L0's row."""
    limit = published_weights(LENET5, WEIGHTS_ROW_5)
    claim = (f"{LENET5}{_kind_text(kind)}: at most {BOUND[LENET5]}% error with fewer weights "
             f"than {WEIGHTS_ROW_5}'s row ({limit})")
    ok = (rows.error <= BOUND[LENET5]) & (rows.weights < limit) if not rows.empty \
        else pd.Series(dtype=bool)
    return _target(rows, LENET5, claim, ok, f"error <= {BOUND[LENET5]}% and < {limit} "
                   "weights", "weights", kind)


def shrinking_is_cheaper(rows: pd.DataFrame) -> Verdict:
    """Shrinking makes training cheaper: every gated run's last epoch trains faster than its
    first (seconds of training, without evaluation)."""
    claim = "shrinking makes training cheaper: last epoch's time / first's < 1 in every run"
    g = rows[rows.method.str.startswith("widthlab gates") & (rows.epochs >= 2)] \
        if not rows.empty else rows
    if g.empty:
        return Verdict(claim, False, "needs gated runs of at least two epochs")
    holds = bool((g.time_ratio < 1).all())
    parts = "; ".join(f"{r.network} price {r.price:g}: {r.first_epoch_s:.2f}s -> "
                      f"{r.last_epoch_s:.2f}s ({r.time_ratio:.2f}), parameters after them "
                      f"{r.params_first} -> {r.params_last}" for r in g.itertuples())
    cheaper = int((g.time_ratio < 1).sum())
    text = (f"Last epoch's training seconds against the first: {parts}. Cheaper at the end in "
            f"{cheaper} of {len(g)} runs (median ratio {g.time_ratio.median():.2f}).")
    return Verdict(claim, holds, text, {"ratios": g.time_ratio.tolist()})


def gates_beat_the_cut(rows: pd.DataFrame) -> Verdict:
    """Per network: some gated run reaches the error of the frontier cut (after its
    fine-tuning epoch) or lower with fewer weights."""
    claim = "learning the widths beats pruning after training (fewer weights at the same error)"
    cuts = rows[rows.method == CUT] if not rows.empty else rows
    if cuts.empty:
        return Verdict(claim, False, "no frontier cut stored; run the study with --cut true")
    wins, parts = [], []
    for cut in cuts.itertuples():
        g = _gated(rows, cut.network)
        level = g[g.error <= cut.error]
        best = level.sort_values("weights").iloc[0] if len(level) else None
        win = best is not None and best.weights < cut.weights
        wins.append(win)
        mine = (f"gates at price {best.price:g}: {best.widths}, {best.weights} weights, "
                f"{best.error:.2f}%" if best is not None else
                "no gated run at that error or lower")
        parts.append(f"{cut.network}: cut {cut.widths}, {cut.weights} weights, "
                     f"{cut.error:.2f}% ({cut.error_before_finetune:.2f}% before fine-tuning) "
                     f"against {mine}")
    holds = bool(all(wins))
    text = (f"Pruned after training against learned, the lowest-weight gated run at the cut's "
            f"error or lower: {'; '.join(parts)}. Fewer weights for the gates in {sum(wins)} of "
            f"{len(wins)} networks.")
    return Verdict(claim, holds, text, {"wins": wins})


def reached_rows(rows: pd.DataFrame, kind: str = L1) -> list[tuple[tuple, pd.Series | None]]:
    """Per published row with gated rows of ``kind`` on its network: the row and the
    smallest of ``kind``'s final-epoch rows reaching it (error at most the published one with
    at most its total width on LeNet-300-100, at most its weights on LeNet-5-Caffe), or
    None. ``rows`` need ``network, method, price, widths, total_width, weights, error``."""
    out = []
    for pub in PUBLISHED:
        net, _, widths, err = pub
        g = _gated(rows, net, kind)
        if g.empty:
            continue
        key = "total_width" if net == LENET300 else "weights"
        size = sum(widths) if net == LENET300 else published_weights(net, pub[1])
        hit = g[(g.error <= err) & (g[key] <= size)].sort_values([key, "error"])
        out.append((pub, hit.iloc[0] if len(hit) else None))
    return out


def published_reached(rows: pd.DataFrame, kind: str = L1) -> Verdict:
    """Which published rows the final-epoch rows of gate ``kind`` reach (at most the row's
    error with at most its features / weights). The published rows report their best epoch
    (RigL its last), widthlab's rows the final epoch."""
    claim = f"{GATED[kind]} reach every published row"
    pairs = reached_rows(rows, kind)
    if not pairs:
        return Verdict(claim, False, f"no gated run{_kind_text(kind)} stored")
    parts = []
    for (net, method, widths, err), hit in pairs:
        got = (f"reached at price {hit.price:g} ({hit.widths}, {hit.error:.2f}%)"
               if hit is not None else "not reached")
        parts.append(f"{net} {method} {widths_text(widths)} at {err}%: {got}")
    n = sum(hit is not None for _, hit in pairs)
    text = (f"Published rows (their best epoch; RigL: the last) against the final-epoch rows "
            f"of {GATED[kind]}: {'; '.join(parts)}. Reached {n} of {len(pairs)}.")
    return Verdict(claim, n == len(pairs), text,
                   {"reached": [f"{p[0]} {p[1]}" for p, hit in pairs if hit is not None]})
