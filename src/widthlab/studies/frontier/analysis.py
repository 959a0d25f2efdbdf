"""The frontier study's stored analysis and tables.

:func:`compute` cuts every chosen model of the variance sweep with every method of the
profile on the sweep's own splits (validation images decide, test images report) and stores
per model the arrays ``frontier_k`` / ``frontier_acc_<method>`` and the metrics
``recommended_<method>`` and ``full_acc``. :func:`model_table` and :func:`sweep_table` are pure
reads of the store.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from widthlab.data import load_splits, reload_splits
from widthlab.data.tensors import DatasetSplits
from widthlab.engine import load_bank, resolve_device
from widthlab.engine.lifecycle import Result
from widthlab.errors import UsageError
from widthlab.frontier import frontier_of_bank
from widthlab.metrics.variance import accuracy_plateau
from widthlab.store import ArrayRow, MetricRow, Store
from widthlab.studies.base import RunContext
from widthlab.studies.frontier.config import SOURCE_STUDY, FrontierProfile


def source_run(ctx: RunContext) -> str:
    """The finished variance sweep this study cuts (from ``ctx.upstream``)."""
    runs = ctx.upstream[SOURCE_STUDY]
    source = runs["sweep"] if "sweep" in runs else runs.ids()[0]
    info = ctx.store.get_run(source)
    if info is None or info["status"] != "done":
        raise UsageError(f"run {source!r} is not a finished run in {ctx.store.root}; run "
                         "`widthlab study variance` first")
    return source


def config(ctx: RunContext) -> dict:
    return {"source_run": source_run(ctx), "profile": ctx.profile.to_dict()}


def _splits(ctx: RunContext, info: dict) -> DatasetSplits:
    if ctx.data is not None:
        return ctx.data
    described = info["config"].get("data")
    if described:
        return reload_splits(described)
    cfg = info["config"]
    return load_splits(info["dataset"], val_size=int(cfg.get("val_size", 5000)),
                       seed=int(cfg.get("data_seed", 0)))


def compute(ctx: RunContext) -> Result:
    """The frontiers of the sweep's chosen models (stored by the study as a run of its
    own)."""
    p: FrontierProfile = ctx.profile
    source = source_run(ctx)
    info = ctx.store.get_run(source)
    dev = resolve_device(ctx.device)
    t0 = time.perf_counter()
    bank = load_bank(ctx.store, source, device=dev)
    data = _splits(ctx, info).to(dev)
    n = len(data.val) if p.calib_size is None else min(p.calib_size, len(data.val))
    calib, ev = (data.val.x[:n], data.val.y[:n]), (data.test.x, data.test.y)
    models = ctx.store.models(source)
    chosen = models[(models.status == "ok") & models.seed.map(
        lambda s: p.seeds is None or int(s) in p.seeds)]
    if chosen.empty:
        raise UsageError(f"run {source!r} has no finished model with seeds {p.seeds}; pick "
                         "seeds the variance sweep trained, or none for all")
    metrics, arrays, specs = [], [], []
    for j, row in enumerate(chosen.itertuples()):
        frs = {m: frontier_of_bank(bank, int(row.model), calib, ev, method=m)
               for m in p.methods}
        first = frs[p.methods[0]]
        arrays.append(ArrayRow(j, 1, "frontier_k", first.table.k.to_numpy(np.int64)))
        for m, fr in frs.items():
            arrays.append(ArrayRow(j, 1, f"frontier_acc_{m}", fr.table.acc.to_numpy(float)))
            metrics.append(MetricRow(j, 1, "test", f"recommended_{m}",
                                     float(fr.recommend(p.tol))))
        metrics.append(MetricRow(j, 1, "test", "full_acc", float(first.table.acc.iloc[-1])))
        specs.append({"name": row.name, "arch": list(row.arch), "seed": int(row.seed),
                      "variant": row.variant, "options": {"source_model": int(row.model)}})
    return Result(info["dataset"], models=specs, metrics=metrics, arrays=arrays,
                  config={"source_run": source, "profile": p.to_dict()}, device=str(dev),
                  precision="fp64", timings={"analysis_s": round(time.perf_counter() - t0, 3)})


def model_table(st: Store, run_id: str) -> pd.DataFrame:
    """One row per cut model: width, seed, full test accuracy, recommended width per method."""
    models = st.models(run_id)
    met = st.metrics(run_id)
    wide = met.pivot_table(index="model", columns="name", values="value")
    out = pd.DataFrame({"model": models.model, "width": models.width, "seed": models.seed})
    return out.join(wide, on="model")


def curves(st: Store, run_id: str, method: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per trained width (lowest seed): ``(k, test accuracy)`` of ``method``'s frontier."""
    models = st.models(run_id).sort_values("seed")
    out = {}
    for row in models.itertuples():
        if int(row.width) not in out:
            out[int(row.width)] = (st.array(run_id, int(row.model), "frontier_k"),
                                   st.array(run_id, int(row.model), f"frontier_acc_{method}"))
    return out


def sweep_plateau(st: Store, source: str, tol: float) -> tuple[int, pd.DataFrame]:
    """The width the sweep itself needed (its test-accuracy plateau within ``tol``) and its
    mean test accuracy per width."""
    met = st.metrics(source)
    last = met.epoch.max()
    acc = met[(met.name == "acc") & (met.split == "test") & (met.epoch == last)]
    width = st.models(source).set_index("model").width
    per = acc.assign(width=acc.model.map(width)).groupby("width", as_index=False).value.mean()
    per = per.rename(columns={"value": "test_acc"})
    return accuracy_plateau(per.width.to_numpy(), per.test_acc.to_numpy(), tol), per
