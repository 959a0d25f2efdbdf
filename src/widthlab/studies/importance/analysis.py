"""The importance study's tables: pure pandas/numpy on the stored scores and cut curves.

Example::

    from widthlab.studies.importance import analysis

    agree = analysis.agreement_table("widthlab-runs", run_id)   # one row per model x proxy
    analysis.proxy_summary(agree)                               # mean over models, best first
    analysis.cut_summary(analysis.topk_table("widthlab-runs", run_id))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from widthlab.errors import UsageError
from widthlab.metrics.importance import PROXIES, agreement, k_to_reach
from widthlab.metrics.importance_hook import TOPK_ORDERINGS
from widthlab.metrics.ordering import kendall_tau
from widthlab.store import Store

#: Orderings of a top-k curve: the exact one, its magnitude, every proxy, a random one.
ORDERINGS = TOPK_ORDERINGS
#: A cut "keeps the accuracy" when its test accuracy is at most this far below the full layer.
ACC_TOLERANCE = 0.01


def score_arrays(store: Store | str, run_id: str, epoch: int | None = None
                 ) -> dict[int, dict[str, np.ndarray]]:
    """``{model: {score name: (H,) array}}`` at ``epoch`` (None: the last scored epoch); score
    names are ``exact`` and the proxies (the ``imp_`` prefix dropped)."""
    st = Store.open(store)
    models = st.models(run_id)
    exact = st.arrays(run_id, "imp_exact", epoch)
    out: dict[int, dict[str, np.ndarray]] = {int(m): {"exact": v} for m, v in exact.items()}
    for name in PROXIES:
        try:
            arrs = st.arrays(run_id, f"imp_{name}", epoch)
        except UsageError:
            continue  # e.g. no gates in this run
        for m, v in arrs.items():
            if m in out:
                out[m][name] = v
    ok = set(models.loc[models.status == "ok", "model"].astype(int))
    return {m: v for m, v in out.items() if m in ok}


def agreement_table(store: Store | str, run_id: str, epoch: int | None = None) -> pd.DataFrame:
    """One row per model x proxy: Spearman, Kendall tau-b and top-10%/25% overlap of the proxy
    with the exact importance, and ``kendall_abs``, Kendall tau-b with its magnitude (from the
    stored scores)."""
    st = Store.open(store)
    info = st.models(run_id).set_index("model")
    parts = []
    for m, scores in score_arrays(st, run_id, epoch).items():
        width = scores["exact"].size
        ks = (max(1, width // 10), max(1, width // 4))
        t = agreement(scores["exact"], {k: v for k, v in scores.items() if k != "exact"}, ks)
        t = t.rename(columns={f"top{ks[0]}": "top10%", f"top{ks[1]}": "top25%"})
        # magnitude proxies (all >= 0) can only rank |exact|: how well they do that
        t["kendall_abs"] = [kendall_tau(np.abs(scores["exact"]), scores[p]) for p in t.proxy]
        t.insert(0, "seed", int(info.loc[m, "seed"]))
        t.insert(0, "width", width)
        t.insert(0, "model", m)
        parts.append(t)
    if not parts:
        raise UsageError(f"run {run_id!r} stored no importance scores")
    return pd.concat(parts, ignore_index=True)


def topk_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model x ordering x k: ``acc``, ``loss`` (on the top-k split), ``ms`` (the
    cut model's forward latency) and ``full_acc`` (the model with every neuron)."""
    st = Store.open(store)
    info = st.models(run_id).set_index("model")
    ks = st.arrays(run_id, "topk_k")
    ms = st.arrays(run_id, "topk_ms")
    parts = []
    for m, k in ks.items():
        if info.loc[m, "status"] != "ok":
            continue
        for name in ORDERINGS:
            try:
                acc = st.array(run_id, m, f"topk_acc_{name}")
                loss = st.array(run_id, m, f"topk_loss_{name}")
            except UsageError:
                continue
            parts.append(pd.DataFrame({"model": m, "width": int(k.max()),
                                       "seed": int(info.loc[m, "seed"]), "ordering": name,
                                       "k": k, "acc": acc, "loss": loss, "ms": ms[m]}))
    if not parts:
        raise UsageError(f"run {run_id!r} stored no top-k curves")
    table = pd.concat(parts, ignore_index=True)
    full = table[table.k == table.width].groupby("model")["acc"].first()
    table["full_acc"] = table["model"].map(full)
    return table


def proxy_summary(agree: pd.DataFrame) -> pd.DataFrame:
    """Mean over models of each proxy's agreement, best first (by Kendall tau)."""
    cols = [c for c in ("spearman", "kendall", "top10%", "top25%", "kendall_abs") if c in agree]
    return (agree.groupby("proxy")[cols].mean().sort_values("kendall", ascending=False)
            .reset_index())


def cut_summary(topk: pd.DataFrame, tolerance: float = ACC_TOLERANCE) -> pd.DataFrame:
    """Per model x ordering: the smallest kept count whose test accuracy is within
    ``tolerance`` of the full layer (``k_keep``, None if none), its latency, and the mean
    accuracy over the k grid (``mean_acc``: the area under the accuracy-vs-log-k curve)."""
    rows = []
    for (m, name), c in topk.groupby(["model", "ordering"], sort=False):
        c = c.sort_values("k")
        k = k_to_reach(c, float(c["full_acc"].iloc[0]) - tolerance)
        rows.append({"model": m, "width": int(c["width"].iloc[0]), "seed": int(c["seed"].iloc[0]),
                     "ordering": name, "k_keep": k,
                     "ms_keep": float(c.loc[c.k == k, "ms"].iloc[0]) if k else np.nan,
                     "ms_full": float(c["ms"].iloc[-1]), "mean_acc": float(c["acc"].mean())})
    return pd.DataFrame(rows)


def cut_means(topk: pd.DataFrame, tolerance: float = ACC_TOLERANCE) -> pd.DataFrame:
    """:func:`cut_summary` averaged over seeds: one row per width x ordering."""
    cuts = cut_summary(topk, tolerance)
    return (cuts.groupby(["width", "ordering"])[["k_keep", "ms_keep", "mean_acc"]]
            .mean().reset_index())
