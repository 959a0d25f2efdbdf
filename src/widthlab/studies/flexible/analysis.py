"""The flexible-layer study's tables: pure pandas/numpy on stored numbers (recomputed for every
report, never stored).

Example::

    from widthlab.studies.flexible import analysis

    table = analysis.frontier_table("widthlab-runs", run_id)   # one row per flexible model
    analysis.frontier_summary(table)                            # medians per arm and penalty
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from widthlab.errors import UsageError
from widthlab.nn.flexible import FlexibleCutoff, cutoff_scale_array
from widthlab.nn.modifiers import create_modifier
from widthlab.store import Store
from widthlab.studies.flexible.config import HELPER


def _metric_key(split: str, name: str) -> str:
    """Column name of a stored metric: ``acc``/``loss`` get their split (``test_acc``), the
    others (``x0``, ``size_grad``, ``acc_pruned``, ...) keep their name."""
    return f"{split}_{name}" if name in ("acc", "loss") else name


def stored_cutoff(store: Store | str, run_id: str) -> FlexibleCutoff:
    """The :class:`~widthlab.nn.flexible.FlexibleCutoff` run ``run_id`` was trained with,
    rebuilt (not built on a bank) from its stored description, found by its kind."""
    info = Store.open(store).require_run(run_id)
    mods = [create_modifier(d) for d in info["config"].get("modifiers", []) if "hook" not in d]
    cuts = [m for m in mods if type(m) is FlexibleCutoff]
    if not cuts:
        raise UsageError(f"run {run_id!r} was not trained with a flexible cut-off; pass a run "
                         "of the flexible study")
    return cuts[0]


def per_model(value: object, n: int) -> list[float]:
    """A stored per-model setting (one value for all, or a list of ``n``) as ``n`` floats."""
    if isinstance(value, list | tuple):
        return [float(v) for v in value]
    return [float(value)] * n


def model_meta(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model that finished: index, width ``N``, seed, variant, weight decay and its
    options as columns (arm, start, penalty, slope, pretrain, ...)."""
    st = Store.open(store)
    st.require_run(run_id)
    models = st.models(run_id)
    models = models[models.status == "ok"]
    opts = pd.DataFrame(list(models["options"]), index=models.index).drop(
        columns=["lr"], errors="ignore")
    return pd.concat([models[["model", "width", "seed", "variant"]], opts],
                     axis=1).reset_index(drop=True)


def _wide(metrics: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    metrics = metrics.assign(key=[_metric_key(s, n) for s, n in zip(metrics.split, metrics.name,
                                                                    strict=True)])
    wide = metrics.pivot_table(index=index, columns="key", values="value")
    wide.columns.name = None
    return wide.reset_index()


def model_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """:func:`model_meta` plus each model's last-epoch metrics (``x0``, ``test_acc``,
    ``train_acc``, ``acc_pruned``, ``pruned_width``, ...) and ``final_width`` (``x0`` clipped to
    ``[0, N]``) where stored."""
    st = Store.open(store)
    table = model_meta(st, run_id)
    met = st.metrics(run_id)
    if not met.empty:
        last = met[met.epoch == met.groupby("model")["epoch"].transform("max")]
        table = table.merge(_wide(last, ["model"]), on="model", how="left")
    if "x0" in table:
        table["final_width"] = table["x0"].clip(lower=0, upper=table["width"])
    return table


def epoch_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per (model, epoch): :func:`model_meta`, ``x0``, ``width_now`` (x0 clipped to
    [0, N]), ``size_grad``, ``size_grad_std``, ``loss_running``, ``test_acc`` and the probes'
    values."""
    st = Store.open(store)
    wide = _wide(st.metrics(run_id), ["model", "epoch"])
    out = wide.merge(model_meta(st, run_id), on="model", how="inner")
    if "x0" in out:
        out["width_now"] = out["x0"].clip(lower=0, upper=out["width"])
    return out.sort_values(["model", "epoch"]).reset_index(drop=True)


def convergence_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """Per model of a convergence run: arm, start, seed, final x0 and width, test accuracy."""
    t = model_table(store, run_id)
    cols = ["model", "arm", "start", "seed", "x0", "final_width", "test_acc", "acc_pruned",
            "pruned_width"]
    return t[[c for c in cols if c in t]].sort_values(["arm", "start", "seed"]).reset_index(
        drop=True)


def find_static(store: Store | str, flex_id: str) -> str | None:
    """The newest finished static-reference run made for the frontier run ``flex_id``."""
    st = Store.open(store)
    runs = st.runs()
    runs = runs[(runs.study == f"{HELPER}:frontier") & (runs.status == "done")]
    for row in reversed(list(runs.itertuples())):
        opts = st.models(row.run_id)["options"]
        if len(opts) and opts.iloc[0].get("flexible_run") == flex_id:
            return row.run_id
    return None


def frontier_table(store: Store | str, flex_id: str, static_id: str | None = None
                   ) -> pd.DataFrame:
    """Per flexible model of a frontier run: arm, penalty, seed, converged width, train/test
    accuracy, and its static twin's (same seed, width and L2) train/test accuracy."""
    st = Store.open(store)
    flex = model_table(st, flex_id)
    static_id = static_id or find_static(st, flex_id)
    cols = ["model", "arm", "penalty", "seed", "x0", "final_width", "train_acc", "test_acc",
            "acc_pruned"]
    out = flex[[c for c in cols if c in flex]].copy()
    if static_id is not None:
        twins = model_table(st, static_id)
        twins = twins[twins["twin_of"].notna()] if "twin_of" in twins else twins.iloc[:0]
        twins = twins.assign(twin_of=twins["twin_of"].astype(int))
        out = out.merge(twins[["twin_of", "width", "train_acc", "test_acc"]].rename(columns={
            "width": "static_width", "train_acc": "static_train_acc",
            "test_acc": "static_test_acc"}), left_on="model", right_on="twin_of",
            how="left").drop(columns="twin_of")
    return out.sort_values(["arm", "penalty", "seed"], ascending=[True, False, True]
                           ).reset_index(drop=True)


def best_static(store: Store | str, flex_id: str, static_id: str | None = None
                ) -> pd.DataFrame:
    """Median train/test accuracy of the full-width static networks, one row per arm."""
    st = Store.open(store)
    static_id = static_id or find_static(st, flex_id)
    if static_id is None:
        return pd.DataFrame(columns=["arm", "train_acc", "test_acc", "replicates"])
    t = model_table(st, static_id)
    t = t[t["best"].fillna(False).astype(bool)] if "best" in t else t.iloc[:0]
    return (t.groupby("arm").agg(train_acc=("train_acc", "median"),
                                 test_acc=("test_acc", "median"),
                                 replicates=("model", "count")).reset_index())


def frontier_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Medians per (arm, penalty) of :func:`frontier_table`."""
    cols = [c for c in ("final_width", "train_acc", "test_acc", "static_train_acc",
                        "static_test_acc", "acc_pruned") if c in table]
    g = table.groupby(["arm", "penalty"])
    out = g[cols].median()
    out["replicates"] = g.size()
    return out.reset_index().sort_values(["arm", "penalty"], ascending=[True, False]
                                         ).reset_index(drop=True)


def plateau_table(store: Store | str, flex_id: str) -> pd.DataFrame:
    """Per hidden neuron of every frontier model: arm, penalty, seed, index ``i``, scaler and
    sum of ``|output weights|`` (``out_abs``), plus where the neuron sits (``on``: scaler >
    0.993, ``off``: scaler < 0.007, else ``gray``)."""
    st = Store.open(store)
    models = model_table(st, flex_id)
    arrays = st.arrays(flex_id, "out_abs")
    k = per_model(stored_cutoff(st, flex_id).k_init, int(st.models(flex_id)["model"].max()) + 1)
    frames = []
    for row in models.itertuples():
        if row.model not in arrays:
            continue
        out_abs = arrays[row.model]
        s = cutoff_scale_array(row.x0, k[row.model], len(out_abs))  # (N,) the scaler
        frames.append(pd.DataFrame({"model": row.model, "arm": row.arm, "penalty": row.penalty,
                                    "seed": row.seed, "i": np.arange(len(out_abs), dtype=float),
                                    "scaler": s, "out_abs": out_abs}))
    if not frames:
        raise UsageError(f"run {flex_id!r} stored no out_abs arrays; rerun its study")
    t = pd.concat(frames, ignore_index=True)
    t["zone"] = np.where(t.scaler > 0.993, "on", np.where(t.scaler < 0.007, "off", "gray"))
    return t


def start_x0(store: Store | str, run_id: str) -> pd.Series:
    """Each model's starting cut-off ``x0`` (index: model), from the run's stored cut-off."""
    st = Store.open(store)
    x0, models = stored_cutoff(st, run_id).x0_init, st.models(run_id)
    if x0 is None:  # each model started at its width
        return pd.Series(models["width"].to_numpy(float))
    return pd.Series(per_model(x0, len(models)), dtype=float)


def pretrain_chain(store: Store | str, run_id: str) -> list[str]:
    """The static pretraining runs a pretrained run started from (``init_from``), first
    first."""
    st = Store.open(store)
    chain: list[str] = []
    info = st.get_run(run_id)
    while info is not None and info["config"].get("init_from"):
        parent = st.get_run(info["config"]["init_from"])
        if parent is None or parent["study"] != f"{HELPER}:pretrain":
            break
        chain.insert(0, parent["run_id"])
        info = parent
    return chain


def last_epoch_summary(e: pd.DataFrame, by: str) -> pd.DataFrame:
    """Medians at the last epoch of :func:`epoch_table`, per value of column ``by``."""
    last = e[e.epoch == e.epoch.max()]
    cols = {c: "median" for c in ("width_now", "size_grad", "size_grad_std", "loss_running",
                                  "test_acc") if c in last}
    out = last.groupby(by).agg(cols)
    out["models"] = last.groupby(by).size()
    return out.reset_index()
