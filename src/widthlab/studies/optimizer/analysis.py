"""The optimizer study's tables: batch-loss envelopes and spike counts, from stored numbers.

Example::

    from widthlab.studies.optimizer import analysis

    spikes = analysis.spike_table("widthlab-runs", run_ids)   # run x variant x epoch
    analysis.spike_rates(spikes)                             # early and late rates per run
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from widthlab.errors import UsageError
from widthlab.metrics.spikes import FACTOR, WINDOW, spikes_per_epoch
from widthlab.store import Store


def _series(st: Store, run_id: str) -> tuple[dict[int, np.ndarray], int]:
    """Per model, its whole batch-loss series (epochs concatenated), and steps per epoch."""
    per = {}
    epochs = int(st.get_run(run_id)["epochs_done"])
    steps = None
    for m in st.models(run_id).model:
        parts = []
        for e in range(1, epochs + 1):
            try:
                parts.append(st.array(run_id, int(m), "batch_loss", epoch=e))
            except Exception:  # a failed model stops storing: keep what it has
                break
        if parts:
            steps = len(parts[0])
            per[int(m)] = np.concatenate(parts)
    if steps is None:
        raise UsageError(f"run {run_id!r} stored no batch losses; it was not trained with "
                         "record_batch_loss")
    return per, steps


def _groups(st: Store, run_id: str) -> list[tuple[str, str, str, list[int]]]:
    """``(dataset, optimizer, variant, models)`` of each variant a run holds: one run per
    optimizer labels its models by variant (``optimizer:adam``); a run labelled
    ``optimizer:adam-static`` holds one variant."""
    info = st.get_run(run_id)
    opt, _, var = info["experiment"].partition("-")
    models = st.models(run_id)
    if var:
        return [(info["dataset"], opt, var, [int(m) for m in models.model])]
    return [(info["dataset"], opt, str(v), [int(m) for m in g.model])
            for v, g in models.groupby("variant", sort=False)]


def envelope_table(store: Store | str, run_ids: Sequence[str]) -> pd.DataFrame:
    """One row per run x variant x epoch: the replicates' median of each model's per-epoch
    min, median and max batch loss, and the spread (lowest and highest per-model median)."""
    st = Store.open(store)
    rows = []
    for r in run_ids:
        m = st.metrics(r)
        m = m[m.name.str.startswith("batch_loss_")]
        w = m.pivot_table(index=["epoch", "model"], columns="name", values="value")
        for dataset, opt, var, models in _groups(st, r):
            mine = w[w.index.get_level_values("model").isin(models)]
            for epoch, g in mine.groupby(level="epoch"):
                rows.append({"run_id": r, "dataset": dataset, "optimizer": opt,
                             "variant": var, "epoch": int(epoch),
                             "loss_min": float(g["batch_loss_min"].median()),
                             "loss_median": float(g["batch_loss_median"].median()),
                             "loss_max": float(g["batch_loss_max"].median()),
                             "median_lo": float(g["batch_loss_median"].min()),
                             "median_hi": float(g["batch_loss_median"].max()),
                             "replicates": len(g)})
    return pd.DataFrame(rows)


def spike_table(store: Store | str, run_ids: Sequence[str], factor: float = FACTOR,
                window: int = WINDOW) -> pd.DataFrame:
    """One row per run x variant x epoch: spikes summed over replicates, batches looked at."""
    st = Store.open(store)
    rows = []
    for r in run_ids:
        per, steps = _series(st, r)
        for dataset, opt, var, models in _groups(st, r):
            counts = {m: spikes_per_epoch(per[m], steps, factor, window)
                      for m in models if m in per}
            if not counts:
                continue
            n_ep = max(len(c) for c in counts.values())
            for e in range(n_ep):
                alive = [c for c in counts.values() if len(c) > e]
                rows.append({"run_id": r, "dataset": dataset, "optimizer": opt,
                             "variant": var, "epoch": e + 1,
                             "spikes": int(sum(c[e] for c in alive)),
                             "batches": steps * len(alive)})
    return pd.DataFrame(rows)


def spike_rates(spikes: pd.DataFrame) -> pd.DataFrame:
    """Spikes per 1,000 batches in the first and last third of training, per run."""
    rows = []
    for (ds, opt, var), g in spikes.groupby(["dataset", "optimizer", "variant"]):
        g = g.sort_values("epoch")
        third = max(len(g) // 3, 1)
        early, late = g.iloc[:third], g.iloc[-third:]
        rows.append({"dataset": ds, "optimizer": opt, "variant": var,
                     "early_rate": 1e3 * early.spikes.sum() / max(early.batches.sum(), 1),
                     "late_rate": 1e3 * late.spikes.sum() / max(late.batches.sum(), 1),
                     "spikes": int(g.spikes.sum())})
    return pd.DataFrame(rows)
