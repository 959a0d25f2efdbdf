"""The resnet study's tables: pure reads of its stored runs (recomputed for every report).

- ``curves``: one row per run and epoch (test accuracy, multiply-adds, parameters, training
  seconds, widths per group);
- ``final``: one row per final network (accuracy at its last epoch, cost, measured latency:
  ``latency_*_ms`` deployed (BatchNorm folded, channels-last), ``latency_eager_b64_ms`` the
  plain eager model (NaN when not measured); training budget in epochs and multiply-adds);
- ``groups``: per group the dense network's journal signal (the channels holding 95% of the
  activation variance, dead channels) beside the learned width;
- ``stds``: every channel's activation std per group, dense and learned (last epoch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from widthlab.store import Store
from widthlab.studies.resnet.config import (
    ALTERNATIVES,
    COST,
    CUT,
    DENSE,
    LEARNED,
    LETTERS,
    MANIFEST,
    SLIM,
    SLIM_TRAIN,
    TP,
    UNIFORM,
)
from widthlab.studies.tables import StudyTables, table, value

UPSTREAM = {TP: DENSE, CUT: DENSE, SLIM: SLIM_TRAIN}
LABELS = {DENSE: "(a) dense", LEARNED: "learned widths", UNIFORM: "(b) uniform width, scratch",
          TP: "(c) Torch-Pruning + fine-tune", SLIM: "(d) network slimming + fine-tune",
          CUT: "(e) widthlab cut + fine-tune", SLIM_TRAIN: "slimming training (before cut)"}


@dataclass(frozen=True)
class ResnetTables(StudyTables):
    curves: pd.DataFrame = table("method", "epoch", "acc", "macs", "params", "epoch_time")
    final: pd.DataFrame = table("method", "label", "acc", "macs", "params", "macs_ratio",
                                "epochs", "train_gmacs", "latency_b1_ms", "latency_b64_ms",
                                "speedup_b64", "latency_eager_b64_ms", "speedup_eager_b64")
    groups: pd.DataFrame = table("group", "width", "dense_k95", "dense_dead", "learned_width",
                                 "learned_dead")
    stds: pd.DataFrame = table("method", "group", "std")
    runs: list = value("every run id of the profile")
    budget: str = value("what was trained")
    note: str = value("why nothing was trained, if so")


def unit_runs(st: Store, by_exp: Mapping[str, str]) -> dict[str, str]:
    """Step name -> run id: the newest manifest's list, else the runs given."""
    if MANIFEST in by_exp:
        return dict(st.require_run(by_exp[MANIFEST])["config"]["runs"])
    return {k: v for k, v in by_exp.items() if k != MANIFEST}


def _epochs(st: Store, run_id: str) -> pd.DataFrame:
    met = st.metrics(run_id)
    met = met.assign(key=met.split + "/" + met.name)
    return met.pivot_table(index="epoch", columns="key", values="value").sort_index()


def curves(st: Store, runs: Mapping[str, str]) -> pd.DataFrame:
    out = []
    for method, run_id in runs.items():
        if method in (COST, MANIFEST):
            continue
        ep = _epochs(st, run_id)
        if "train/macs" not in ep:
            continue
        widths = {c.removeprefix("train/width/"): ep[c].values for c in ep
                  if c.startswith("train/width/")}
        out.append(pd.DataFrame({"method": method, "epoch": ep.index.astype(int),
                                 "acc": 100 * (1 - ep["test/error"].values),
                                 "macs": ep["train/macs"].values,
                                 "params": ep["train/params"].values,
                                 "epoch_time": ep["train/epoch_time"].values,
                                 **{f"width/{g}": v for g, v in widths.items()}}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["method", "epoch", "acc", "macs", "params", "epoch_time"])


def _cost(st: Store, run_id: str | None) -> pd.DataFrame:
    if run_id is None:
        return pd.DataFrame(columns=["method"])
    m = st.metrics(run_id, wide=True)
    return m.rename(columns={"variant": "method"})


def _train_gmacs(c: pd.DataFrame, method: str, n_train: int) -> float:
    """Training multiply-adds (forward + backward ~ 3x the forward) in billions: per epoch
    the network's multiply-adds at that epoch's start, times the training images. The stored
    ``macs`` of an epoch are those after its shrink, so the learned run's first epoch starts at
    the dense network's (the architecture it is built at)."""
    g = c[c.method == method].sort_values("epoch")
    if g.empty:
        return np.nan
    dense = c[c.method == DENSE].macs
    first = dense.values[:1] if method == LEARNED and len(dense) else g.macs.values[:1]
    start = np.r_[first, g.macs.values[:-1]]
    own = float(3 * start.sum() * n_train / 1e9)
    up = UPSTREAM.get(method)
    return own + (_train_gmacs(c, up, n_train) if up else 0.0)


def final_table(st: Store, runs: Mapping[str, str], c: pd.DataFrame) -> pd.DataFrame:
    cost = _cost(st, runs.get(COST))
    rows = []
    for method in (DENSE, LEARNED, *ALTERNATIVES):
        if method not in runs or c[c.method == method].empty:
            continue
        last = c[c.method == method].sort_values("epoch").iloc[-1]
        n_train = int(st.require_run(runs[method])["config"]["data"]["n_train"])
        k = cost[cost.method == method] if "method" in cost else cost.iloc[:0]
        lat = {n: float(k[n].iloc[0]) if len(k) and n in k else np.nan
               for n in ("latency_b1", "latency_b64", "latency_eager_b64")}
        up = UPSTREAM.get(method)
        epochs = int(last.epoch) + (int(c[c.method == up].epoch.max()) if up else 0)
        rows.append({"method": method, "label": LABELS[method], "acc": float(last.acc),
                     "macs": float(last.macs), "params": float(last.params),
                     "epochs": epochs, "train_gmacs": _train_gmacs(c, method, n_train),
                     "latency_b1_ms": 1e3 * lat["latency_b1"],
                     "latency_b64_ms": 1e3 * lat["latency_b64"],
                     "latency_eager_b64_ms": 1e3 * lat["latency_eager_b64"],
                     "cost_macs": float(k["macs"].iloc[0]) if len(k) else np.nan})
    f = pd.DataFrame(rows, columns=["method", "label", "acc", "macs", "params", "epochs",
                                    "train_gmacs", "latency_b1_ms", "latency_b64_ms",
                                    "latency_eager_b64_ms", "cost_macs"])
    dense = f[f.method == DENSE]

    def d(col):
        return float(dense[col].iloc[0]) if len(dense) else np.nan

    return f.assign(macs_ratio=d("macs") / f.macs,
                    speedup_b64=d("latency_b64_ms") / f.latency_b64_ms,
                    speedup_eager_b64=d("latency_eager_b64_ms") / f.latency_eager_b64_ms)


def k95(std: np.ndarray, share: float = 0.95) -> int:
    """The fewest channels holding ``share`` of the group's summed activation variance."""
    var = np.sort(np.asarray(std, dtype=np.float64) ** 2)[::-1]
    total = var.sum()
    if total <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(var) / total, share) + 1)


def _last_arrays(st: Store, run_id: str, groups: list[str]) -> dict[str, np.ndarray]:
    return {g: st.array(run_id, 0, f"std/{g}") for g in groups}


def journal_tables(st: Store, runs: Mapping[str, str], c: pd.DataFrame):
    """``groups`` and ``stds`` (see the module docstring)."""
    cols = ["group", "width", "dense_k95", "dense_dead", "learned_width", "learned_dead"]
    if DENSE not in runs or LEARNED not in runs or c.empty:
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=["method", "group", "std"])
    names = [k.removeprefix("width/") for k in c.columns if k.startswith("width/")]
    dense = _last_arrays(st, runs[DENSE], names)
    learned = _last_arrays(st, runs[LEARNED], names)
    last = c[c.method == LEARNED].sort_values("epoch").iloc[-1]
    from widthlab.studies.resnet.train import dead

    rows = [{"group": g, "width": len(dense[g]), "dense_k95": k95(dense[g]),
             "dense_dead": dead(dense[g]), "learned_width": int(last[f"width/{g}"]),
             "learned_dead": dead(learned[g])} for g in names]
    stds = [{"method": m, "group": g, "std": float(v)}
            for m, arrs in ((DENSE, dense), (LEARNED, learned)) for g in names
            for v in arrs[g]]
    return pd.DataFrame(rows, columns=cols), pd.DataFrame(stds)


def budget(st: Store, runs: Mapping[str, str], f: pd.DataFrame) -> str:
    """Epochs and training multiply-adds per method, data, seed."""
    if f.empty:
        return "nothing trained"
    cfg = st.require_run(runs[DENSE if DENSE in runs else next(iter(runs))])["config"]
    d = cfg.get("data", {})
    parts = "; ".join(f"{LETTERS.get(r.method, '')}{' ' if r.method in LETTERS else ''}"
                      f"{r.method}: {r.epochs} epochs, {r.train_gmacs:.0f} G training MACs"
                      for r in f.itertuples())
    return (f"{d.get('n_train')} training images, {d.get('n_test')} test images, one seed; "
            f"{parts} (a fine-tuned method counts its upstream run's epochs and MACs)")


def tables_of(st: Store, by_exp: Mapping[str, str]) -> ResnetTables:
    runs = unit_runs(st, by_exp)
    c = curves(st, runs)
    f = final_table(st, runs, c)
    groups, stds = journal_tables(st, runs, c)
    why = st.require_run(runs[DENSE])["config"].get("why") if DENSE in runs else None
    return ResnetTables(curves=c, final=f, groups=groups, stds=stds,
                        runs=list(dict.fromkeys(runs.values())), budget=budget(st, runs, f),
                        note=f"Not trained: {why}." if why else "")
