"""The PCA study's tables: pure numpy/pandas on stored numbers (recomputed for every report).

Example::

    from widthlab.studies.pca import tables

    d = tables.load("widthlab-runs", analysis_run_id)   # per-model table and curves
    tables.per_width(d)                                   # one row per width
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from widthlab.store import Store

CURVES = ("pca_values", "recon_k", "recon_dist", "recon_acc")


def last_test_acc(st: Store, run_id: str) -> pd.DataFrame:
    """Per model of an engine run: ``model``, ``width`` and the test accuracy (``value``)
    after its last evaluated epoch."""
    met = st.metrics(run_id)
    last = met[(met.name == "acc") & (met.split == "test")]
    last = last[last.epoch == last.epoch.max()]
    return last.merge(st.models(run_id)[["model", "width"]], on="model")


def source_accuracy(st: Store, source: str) -> pd.DataFrame:
    """The analysed sweep's mean test accuracy per width over its finished models (the
    variance study's ``test_acc``): columns ``width``, ``test_acc``."""
    models = st.models(source)
    t = last_test_acc(st, source)
    ok = set(models.model[models.status == "ok"])
    t = t[t.model.isin(ok)].sort_values("model")
    rows = [(int(w), float(np.asarray(g.value.to_numpy(), dtype=float).mean()))
            for w, g in t.groupby("width", sort=True)]
    return pd.DataFrame(rows, columns=["width", "test_acc"])


def conjecture_accuracy(st: Store, conj: str) -> pd.DataFrame:
    """The conjecture sweep's mean test accuracy per width: columns ``width``, ``test_acc``."""
    return last_test_acc(st, conj).groupby("width").value.mean().rename(
        "test_acc").reset_index()


def load(store: Store | str, run_id: str) -> dict:
    """Everything an analysis stored: ``info``, ``table`` (one row per analysed model),
    ``curves`` (per model: values, recon_k, recon_dist, recon_acc), the ``source`` run id,
    the source sweep's per-width ``source_accuracy`` and the ``conjecture_run`` id."""
    st = Store.open(store)
    info = st.require_run(run_id)
    models = st.models(run_id)
    table = st.metrics(run_id).pivot_table(index="model", columns="name",
                                           values="value").reset_index()
    table = models[["model", "width", "seed"]].merge(table, on="model")
    source = info["config"]["source_run"]
    return {"info": info, "table": table, "source": source,
            "curves": {name: st.arrays(run_id, name) for name in CURVES},
            "source_accuracy": source_accuracy(st, source),
            "conjecture_run": info["config"].get("conjecture_run")}


def summarize(store: Store | str, run_id: str) -> pd.DataFrame:
    """:func:`per_width` of the stored analysis ``run_id``."""
    return per_width(load(store, run_id))


def per_width(d: dict) -> pd.DataFrame:
    """One row per width of a loaded analysis (:func:`load`): components for 90/95/99%,
    participation ratio, the smallest k whose reconstruction accuracy is within half a point
    of the plain accuracy, the plain test accuracy (means over the analysed seeds)."""
    t = d["table"].copy()
    k_ok = []
    for m in t.model:
        ks, acc = d["curves"]["recon_k"][m], d["curves"]["recon_acc"][m]
        k_ok.append(int(ks[np.argmax(acc >= acc[-1] - 0.005)]))
    t["k_recon"] = k_ok
    cols = ["n90", "n95", "n99", "participation_ratio", "k_recon", "total_var", "acc"]
    out = t.groupby("width")[cols].mean().reset_index()
    out.insert(1, "models", t.groupby("width").size().to_numpy())
    return out.rename(columns={"acc": "test_acc"})
