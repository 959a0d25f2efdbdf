"""The sparsifier study's tables: pure pandas on stored numbers (recomputed for every report).

Example::

    from widthlab.studies.sparsifier import analysis

    table = analysis.summarize("widthlab-runs", run_id)   # one row per model
    analysis.per_price(table)                            # means over seeds
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from widthlab.store import Store
from widthlab.studies.gate_kinds import gate_kind  # noqa: F401 - re-exported
from widthlab.studies.sparsifier.config import SAME_TRAINING, STATIC
from widthlab.studies.sparsifier.references import final_widths


def static_runs(store: Store | str, run_id: str) -> list[str]:
    """Finished static runs matching sparsifier run ``run_id`` (same dataset and training
    settings), newest first."""
    st = Store.open(store)
    info = st.require_run(run_id)
    want = {k: info["config"].get(k) for k in SAME_TRAINING}
    runs = st.runs()
    out = []
    for row in runs[(runs.study == STATIC) & (runs.status == "done")
                    & (runs.dataset == info["dataset"])].itertuples():
        cfg = st.get_run(row.run_id)["config"]
        if {k: cfg.get(k) for k in SAME_TRAINING} == want:
            out.append((row.finished_at or "", row.run_id))
    return [r for _, r in sorted(out, reverse=True)]


def static_accuracy(store: Store | str, run_id: str) -> pd.DataFrame:
    """Last-epoch accuracies of the static networks matching sparsifier run ``run_id``:
    one row per ``(width, seed)`` (newest run wins), columns ``static_{split}_acc``."""
    st = Store.open(store)
    rows: dict[tuple[int, int], dict] = {}
    for r in static_runs(st, run_id):
        models = st.models(r).set_index("model")
        met = st.metrics(r)
        last = int(st.get_run(r)["epochs_done"])
        met = met[(met.name == "acc") & (met.epoch == last)]
        for m, grp in met.groupby("model"):
            key = (int(models.loc[m, "width"]), int(models.loc[m, "seed"]))
            if key not in rows and models.loc[m, "status"] == "ok":
                rows[key] = {f"static_{s}_acc": v for s, v in zip(grp.split, grp.value,
                                                                   strict=True)
                             if s in ("train", "test")}
    cols = ["width", "seed", "static_train_acc", "static_test_acc"]
    table = pd.DataFrame([{"width": w, "seed": s, **v} for (w, s), v in rows.items()])
    table = table.reindex(columns=cols)
    return table.astype({"width": int, "seed": int, **{c: float for c in cols[2:]}})


def summarize(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model of a sparsifier run: dataset, experiment, price, start width, seed,
    final alive width, train and test accuracy after the last epoch and those of the static
    network of the same width and seed (NaN when none is stored)."""
    st = Store.open(store)
    info = st.get_run(run_id)
    table = final_widths(st, run_id)
    met = st.metrics(run_id)
    last = int(info["epochs_done"])
    acc = met[(met.name == "acc") & (met.epoch == last)].pivot(
        index="model", columns="split", values="value")
    for split in ("train", "test"):
        table[f"{split}_acc"] = table["model"].map(acc[split]) if split in acc else np.nan
    static = static_accuracy(st, run_id)
    table["width_key"] = table["width"].fillna(-1).astype(int)
    table = table.merge(static.rename(columns={"width": "width_key"}),
                        on=["width_key", "seed"], how="left").drop(columns="width_key")
    table.insert(0, "experiment", info["experiment"] or info["study_name"])
    table.insert(0, "dataset", info["dataset"])
    return table


def curves(store: Store | str, run_id: str) -> pd.DataFrame:
    """Per model and epoch: price, start, seed, alive width, running train accuracy (during
    the epoch), test accuracy, and train accuracy (after the last epoch only)."""
    st = Store.open(store)
    wide = st.metrics(run_id, wide=True)
    fw = final_widths(st, run_id).set_index("model")
    train = wide[wide.split == "train"].set_index(["model", "epoch"])
    test = wide[wide.split == "test"].set_index(["model", "epoch"])
    out = pd.DataFrame({
        "alive_width": train["alive_width"], "acc_running": train["acc_running"],
        "train_acc": train.get("acc"), "test_acc": test["acc"].reindex(train.index)})
    out = out.reset_index()
    for col in ("price", "start", "seed"):
        out.insert(1, col, out["model"].map(fw[col]))
    return out


def per_price(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (start, price): final width, accuracies, static accuracies."""
    cols = [c for c in ("width", "train_acc", "test_acc", "static_train_acc",
                        "static_test_acc") if c in table]
    ok = table[table.status == "ok"]
    out = ok.groupby(["start", "price"], as_index=False)[cols].mean()
    out.insert(2, "seeds", ok.groupby(["start", "price"]).size().to_numpy())
    return out
