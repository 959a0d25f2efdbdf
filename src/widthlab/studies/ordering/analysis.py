"""The ordering-stability study's tables: pure pandas/numpy on the stored records.

From the stability run, consecutive records of every ordering are compared
(:mod:`widthlab.metrics.ordering`: Kendall tau, pairwise swaps, mean and max displacement,
top-quarter churn) and every proxy is compared with the exact order at each epoch (fidelity);
from the variant runs, every model's effective width and accuracy at its last epoch.

Example::

    from widthlab.studies.ordering import analysis

    series = analysis.stability_table("widthlab-runs", run_id)   # model x ordering x epoch
    analysis.stability_summary(series, analysis.fidelity_table("widthlab-runs", run_id))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from widthlab.errors import UsageError
from widthlab.metrics.importance_hook import SCORES
from widthlab.metrics.ordering import kendall_tau, stability_series
from widthlab.store import Store

#: "Stable enough to drive a sorted cut-off layer", over the second half of training:
#: consecutive records agree at Kendall tau >= STABLE_TAU and at most STABLE_CHURN of the top
#: quarter leaves it between records (those neurons would jump from scale ~1 to ~0) ...
STABLE_TAU = 0.9
STABLE_CHURN = 0.05
#: ... and the ordering still means something: Kendall tau with the exact order >= this.
FAITHFUL_TAU = 0.3
#: Stored scores compared, plus ``exact_abs`` (the magnitude of the exact importance),
#: derived from ``exact`` when reading.
ORDERINGS = SCORES
#: Tolerances of a paired comparison: 0.2 point of test accuracy (20 of 10,000 test images)
#: and 2% of the starting width count as equal; smaller gaps are within run-to-run noise.
ACC_TIE, WIDTH_TIE = 2e-3, 0.02


def _epoch_records(st: Store, run_id: str, name: str, epochs: int) -> dict[int, list]:
    per: dict[int, list] = {}
    for epoch in range(1, epochs + 1):
        try:
            arrs = st.arrays(run_id, f"imp_{name}", epoch)
        except UsageError:
            continue
        for m, v in arrs.items():
            per.setdefault(int(m), []).append((epoch, v))
    return per


def records(store: Store | str, run_id: str) -> dict[int, dict[str, tuple[list, np.ndarray]]]:
    """``{model: {ordering: (epochs, scores (R, H))}}``: every stored record of every score,
    and ``exact_abs`` (the magnitude of the exact importance)."""
    st = Store.open(store)
    info = st.require_run(run_id)
    models = st.models(run_id)
    ok = set(models.loc[models.status == "ok", "model"].astype(int))
    out: dict[int, dict[str, tuple[list, np.ndarray]]] = {}
    for name in ORDERINGS:
        for m, recs in _epoch_records(st, run_id, name, int(info["epochs_done"])).items():
            if m in ok:
                out.setdefault(m, {})[name] = ([e for e, _ in recs],
                                               np.stack([v for _, v in recs]))
    if not out:
        raise UsageError(f"run {run_id!r} stored no importance scores; was it trained by the "
                         "ordering study?")
    for per in out.values():
        if "exact" in per:
            epochs, exact = per["exact"]
            per["exact_abs"] = (epochs, np.abs(exact))
    return out


def stability_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model x ordering x consecutive pair of epochs: the columns of
    :func:`widthlab.metrics.ordering.stability_series` (``step`` = the later epoch), with
    ``model``, ``width``, ``seed`` and ``ordering``. The churn uses the top quarter."""
    st = Store.open(store)
    info = st.models(run_id).set_index("model")
    parts = []
    for m, per in records(st, run_id).items():
        for name, (epochs, scores) in per.items():
            t = stability_series(scores, epochs)
            t.insert(0, "ordering", name)
            t.insert(0, "seed", int(info.loc[m, "seed"]))
            t.insert(0, "width", scores.shape[1])
            t.insert(0, "model", m)
            parts.append(t)
    return pd.concat(parts, ignore_index=True)


def fidelity_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model x proxy x epoch: Kendall tau-b of the proxy with the exact scores."""
    rows = []
    for m, per in records(store, run_id).items():
        epochs, exact = per["exact"]
        for name, (ep, scores) in per.items():
            if name == "exact":
                continue
            for e, s in zip(ep, scores, strict=True):
                if e in epochs:
                    rows.append({"model": m, "width": s.size, "proxy": name, "epoch": e,
                                 "kendall": kendall_tau(exact[epochs.index(e)], s)})
    return pd.DataFrame(rows, columns=["model", "width", "proxy", "epoch", "kendall"])


def stability_summary(series: pd.DataFrame, fidelity: pd.DataFrame) -> pd.DataFrame:
    """Per ordering, over the second half of training (records after the middle epoch):
    mean consecutive Kendall tau, swap share, mean/max displacement share, top-quarter churn,
    the mean Kendall tau with the exact order at the last epoch, and whether it is *stable*
    and *faithful* (see :data:`STABLE_TAU`, :data:`STABLE_CHURN`, :data:`FAITHFUL_TAU`)."""
    last = int(series["step"].max())
    late = series[series["step"] > last / 2]
    late = late if len(late) else series
    s = late.assign(max_displacement_share=late["max_displacement"] / late["n"]).groupby(
        "ordering", sort=False)[["kendall_tau", "swap_share", "mean_displacement_share",
                                 "max_displacement_share", "topk_churn"]].mean()
    fid = fidelity[fidelity.epoch == fidelity.epoch.max()].groupby("proxy")["kendall"].mean()
    s["tau_with_exact"] = [1.0 if o == "exact" else float(fid.get(o, np.nan)) for o in s.index]
    s["stable"] = (s["kendall_tau"] >= STABLE_TAU) & (s["topk_churn"] <= STABLE_CHURN)
    s["faithful"] = s["tau_with_exact"] >= FAITHFUL_TAU
    return s.reset_index().sort_values("kendall_tau", ascending=False, ignore_index=True)


def _model_row(r, val: dict, run_id: str) -> dict:
    start = int(r.arch[0])
    if ("train", "x0") in val:
        width = float(np.clip(val[("train", "x0")], 0, start))
    else:
        width = float(val.get(("train", "alive_width"), np.nan))
    return {"variant": r.variant, "penalty": float(r.options.get("penalty")),
            "seed": int(r.seed), "start": start, "width": width,
            "test_acc": val.get(("test", "acc"), np.nan),
            "val_acc": val.get(("val", "acc"), np.nan),
            "rank_moves": val.get(("train", "rank_moves"), np.nan), "run_id": run_id}


def sorted_table(store: Store | str, run_ids: Sequence[str]) -> pd.DataFrame:
    """One row per model of the variant runs at their last epoch: ``variant, penalty, seed,
    start, width`` (the effective width: ``x0`` clipped to ``[0, start]`` for the cut-off
    layers, the live gates for the sparsifier), ``test_acc``, ``val_acc`` and, for the sorted
    layers, ``rank_moves`` (mean rank change per neuron over the last epoch's re-sorts)."""
    st = Store.open(store)
    rows = []
    for run_id in run_ids:
        last = int(st.get_run(run_id)["epochs_done"])
        met = st.metrics(run_id)
        met = met[met.epoch == last]
        for r in st.models(run_id).itertuples():
            if r.status != "ok":
                continue
            mine = met[met.model == r.model]
            val = {(s, n): v for s, n, v in zip(mine.split, mine.name, mine.value, strict=True)}
            rows.append(_model_row(r, val, run_id))
    return pd.DataFrame(rows)


def paired_wins(table: pd.DataFrame, variant: str, against: str = "flexible") -> dict[str, int]:
    """Compare ``variant`` with ``against`` model by model (same penalty and seed): a *win* is
    no less accurate and no wider (within :data:`ACC_TIE`, :data:`WIDTH_TIE`) and better in at
    least one; a *loss* the reverse; anything else is a *tie* (equal) or a *trade* (one better,
    one worse). ``WIDTH_TIE`` is a share of the starting width."""
    keys = ["dataset", "penalty", "seed"] if "dataset" in table else ["penalty", "seed"]
    pairs = table[table.variant == variant].merge(table[table.variant == against], on=keys,
                                                  suffixes=("", "_ref"))
    out = {"win": 0, "loss": 0, "tie": 0, "trade": 0}
    for r in pairs.itertuples():
        da, dw = r.test_acc - r.test_acc_ref, (r.width - r.width_ref) / r.start
        better = (da > ACC_TIE) or (dw < -WIDTH_TIE)
        worse = (da < -ACC_TIE) or (dw > WIDTH_TIE)
        out["trade" if better and worse else "win" if better else "loss" if worse
            else "tie"] += 1
    return out
