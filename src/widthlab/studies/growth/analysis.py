"""The growth study's tables: final widths, accuracy against static networks, cost, curves."""

from __future__ import annotations

import numpy as np
import pandas as pd

from widthlab.store import Store
from widthlab.studies.gate_kinds import gate_kind  # noqa: F401 - re-exported
from widthlab.studies.growth.config import STATIC
from widthlab.studies.growth.references import final_table


def static_runs(st: Store, run_id: str) -> list[str]:
    """Finished static reference runs of ``run_id``'s dataset (newest first)."""
    info = st.get_run(run_id)
    runs = st.runs()
    runs = runs[(runs.study == STATIC) & (runs.status == "done")
                & (runs.dataset == info["dataset"])]
    return list(runs.sort_values("finished_at", ascending=False).run_id)


def static_accuracy(st: Store, static_id: str) -> pd.DataFrame:
    """Last-epoch test accuracy of every static network: ``width, seed, static_acc``."""
    models = st.models(static_id)
    met = st.metrics(static_id)
    last = met.epoch.max()
    acc = met[(met.name == "acc") & (met.split == "test") & (met.epoch == last)]
    acc = acc.set_index("model")["value"]
    return pd.DataFrame({"final_width": models.width.astype(int),
                         "seed": models.seed.astype(int),
                         "static_acc": models.model.map(acc)})


def models_table(st: Store, run_id: str, static_id: str | None) -> pd.DataFrame:
    """One row per model, with the static network of its final width and seed and the
    training FLOPs of its hidden layer (``B * w * (4 * in + 6 * out)`` per step, summed as
    the recorded ``unit_steps``: forward, weight and output gradients)."""
    t = final_table(st, run_id)
    info = st.get_run(run_id)
    data = info["config"].get("data") or {}
    d_in, d_out = int(data.get("n_features", 784)), int(data.get("n_classes", 10))
    batch = int(info["config"].get("batch_size", 128))
    t["train_flops"] = batch * (4 * d_in + 6 * d_out) * t.unit_steps
    if static_id is not None:
        key = t.final_width.fillna(-1).astype(int)
        t = t.assign(_w=key).merge(static_accuracy(st, static_id).rename(
            columns={"final_width": "_w"}), on=["_w", "seed"], how="left").drop(columns="_w")
    else:
        t["static_acc"] = np.nan
    return t


def width_curves(st: Store, run_id: str) -> pd.DataFrame:
    """Per model and epoch: init, price, start and the kept width."""
    met = st.metrics(run_id)
    kept = met[met.name == "kept_width"][["model", "epoch", "value"]]
    t = final_table(st, run_id).set_index("model")[["init", "price", "start_width"]]
    return kept.rename(columns={"value": "width"}).join(t, on="model")


SPREAD_COLUMNS = ("init", "price", "mean_width", "spread", "test_acc", "static_acc", "starts")


def spreads(t: pd.DataFrame) -> pd.DataFrame:
    """Per (init, price): mean final width over starts and seeds, and the spread (largest
    distance of a start's mean from the mean, relative to the mean)."""
    ok = t[t.status == "ok"]
    rows = []
    for (init, lam), g in ok.groupby(["init", "price"]):
        per = g.groupby("start_width").final_width.mean()
        mean = float(per.mean())
        spread = float(max(per.max() - mean, mean - per.min()) / mean) if mean > 0 else np.nan
        rows.append({"init": init, "price": lam, "mean_width": mean, "spread": spread,
                     "test_acc": float(g.test_acc.mean()),
                     "static_acc": float(g.static_acc.mean()), "starts": len(per)})
    return pd.DataFrame(rows, columns=list(SPREAD_COLUMNS))
