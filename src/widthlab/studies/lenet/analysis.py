"""The lenet study's tables: pure reads of its stored runs.

:func:`unit_runs` finds the runs of one profile (the manifest's list), :func:`read_runs` turns
them into per-epoch ``curves`` and one ``rows`` entry per learned-width result (each gated run,
and per cut run the network without gates and the cut one), :func:`rows_table` adds the
published rows, and :func:`budget` states what was trained.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from widthlab.nn.lenet import LAYERS, NETWORKS, lenet_weights
from widthlab.store import Store
from widthlab.studies.lenet.compute import MANIFEST, manifest_runs
from widthlab.studies.lenet.config import HC, L1
from widthlab.studies.lenet.references import published_frame, widths_text

DENSE, CUT = "no gates (same epochs)", "width_frontier cut + 1 epoch fine-tune"
#: the method label of a gated run per gate kind (followed by ", price <p>")
GATED = {L1: "widthlab gates", HC: "widthlab gates (hard concrete)"}
ROW_COLUMNS = ["source", "network", "method", "widths", "total_width", "weights", "error"]


def unit_runs(st: Store, by_exp: Mapping[str, str]) -> dict[str, str]:
    """Step name -> run id of the runs to report: the newest manifest's list, else every
    unit run given."""
    if MANIFEST in by_exp:
        return manifest_runs(st, by_exp[MANIFEST])
    return {k: v for k, v in by_exp.items() if k != MANIFEST}


def _epochs(st: Store, run_id: str) -> pd.DataFrame:
    """One row per epoch, a column per ``split/name`` metric."""
    met = st.metrics(run_id)
    met = met.assign(key=met.split + "/" + met.name)
    return met.pivot_table(index="epoch", columns="key", values="value").sort_index()


def _widths(row: pd.Series, network: str) -> tuple[int, ...]:
    return tuple(int(row[f"train/width/{name}"]) for name in LAYERS[network])


def _curve(ep: pd.DataFrame, network: str, method: str, price: float) -> pd.DataFrame:
    widths = [_widths(r, network) for _, r in ep.iterrows()]
    return pd.DataFrame({"network": network, "method": method, "price": price,
                         "epoch": ep.index.astype(int), "error": 100 * ep["test/error"].values,
                         "widths": [widths_text(w) for w in widths],
                         "total_width": [sum(w) for w in widths],
                         "epoch_time": ep["train/epoch_time"].values,
                         "n_params": ep["train/n_params"].values.astype(int)})


def _row(ep: pd.DataFrame, epoch: int, network: str, method: str, price: float,
         n_classes: int, first: int = 1) -> dict:
    r = ep.loc[epoch]
    w = _widths(r, network)
    t0, t1 = float(ep.loc[first, "train/epoch_time"]), float(r["train/epoch_time"])
    return {"source": "widthlab", "network": network, "method": method, "price": price,
            "widths": widths_text(w), "total_width": int(sum(w)),
            "weights": lenet_weights(network, w, n_classes),
            "error": 100 * float(r["test/error"]), "epochs": int(epoch),
            "first_epoch_s": t0, "last_epoch_s": t1, "time_ratio": t1 / t0,
            "params_first": int(ep.loc[first, "train/n_params"]),
            "params_last": int(r["train/n_params"])}


def distilled(settings: Mapping) -> str:
    """The method's note of a distilled run (the training loss it states, and the training
    images' translations), else ``""``."""
    shift = f", images shifted up to {settings['shift']} px" if settings.get("shift") else ""
    if not settings.get("distill"):
        return shift
    return (f", distilled from {settings['teacher']} (a={settings['distill']:g}, "
            f"T={settings['distill_temp']:g}){shift}")


def _read_one(st: Store, run_id: str) -> tuple[list[dict], list[pd.DataFrame], str | None]:
    info = st.require_run(run_id)
    cfg = info["config"]
    network, models = cfg["network"], st.models(run_id)
    if (models.status == "failed").all():
        return [], [], f"{network}: {models.failure.iloc[0]}"
    ep = _epochs(st, run_id)
    n_classes = int(cfg["data"]["n_classes"])
    if cfg["kind"] == "gated":
        kind = cfg.get("gate_kind", L1)
        method = f"{GATED[kind]}, price {cfg['price']:g}" + distilled(cfg["settings"])
        row = _row(ep, int(ep.index.max()), network, method, cfg["price"], n_classes)
        return ([{**row, "gate_kind": kind}],
                [_curve(ep, network, method, cfg["price"]).assign(gate_kind=kind)], None)
    last = int(ep.index.max())
    dense = _row(ep, last - 1, network, DENSE, np.nan, n_classes)
    cut = _row(ep, last, network, CUT, np.nan, n_classes)
    cut["error_before_finetune"] = 100 * float(ep.loc[last, "test/error_before_finetune"])
    cut["first_epoch_s"] = dense["first_epoch_s"]  # the fine-tune epoch against the first
    cut["time_ratio"] = cut["last_epoch_s"] / cut["first_epoch_s"]
    return [dense, cut], [_curve(ep.loc[:last - 1], network, DENSE, np.nan),
                          _curve(ep, network, CUT, np.nan)], None


def read_runs(st: Store, runs: Mapping[str, str]) -> dict:
    """``rows`` (one per result), ``curves`` (per run and epoch) and ``notes`` (networks not
    trained, and why) of the unit runs ``runs``."""
    rows, curves, notes = [], [], []
    for run_id in runs.values():
        r, c, note = _read_one(st, run_id)
        rows += r
        curves += c
        if note:
            notes.append(note)
    frame = pd.DataFrame(rows)
    if len(frame):  # network order, then the gated runs by price, the dense one, its cut
        kind = frame.method.map({DENSE: 1, CUT: 2}).fillna(0)
        order = frame.network.map({n: i for i, n in enumerate(NETWORKS)})
        hc = frame.get("gate_kind", pd.Series("", index=frame.index)) == HC
        frame = frame.assign(_o=order, _k=kind, _g=hc) \
            .sort_values(["_o", "_k", "_g", "price"]).drop(columns=["_o", "_k", "_g"]) \
            .reset_index(drop=True)
    return {"rows": frame, "curves": pd.concat(curves, ignore_index=True)
            if curves else pd.DataFrame(), "notes": notes}


def rows_table(rows: pd.DataFrame, published: bool) -> pd.DataFrame:
    """The published rows (``published``: MNIST only) followed by widthlab's, weights
    computed the same way for all."""
    mine = rows[ROW_COLUMNS + ["error_before_finetune"]] if "error_before_finetune" in rows \
        else rows.reindex(columns=ROW_COLUMNS)
    if not published:
        return mine.reset_index(drop=True)
    return pd.concat([published_frame().assign(source="published")[ROW_COLUMNS], mine],
                     ignore_index=True)


def runs_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per result: epochs, first and last epoch's training seconds, their ratio, and the
    parameters after the first and after the last epoch (after that epoch's shrink)."""
    cols = ["network", "method", "epochs", "first_epoch_s", "last_epoch_s", "time_ratio",
            "params_first", "params_last"]
    return rows.reindex(columns=cols)


def budget(st: Store, runs: Mapping[str, str]) -> str:
    """What was trained: per network its epochs and prices, the seed, the samples, and how
    the frontier cut decided."""
    per: dict[str, dict] = {}
    samples, cut = set(), None
    for run_id in runs.values():
        cfg = st.require_run(run_id)["config"]
        s, d = cfg["settings"], cfg["data"]
        samples.add((int(d["n_train"]), int(d["n_test"]), int(s["seed"])))
        kind = cfg.get("gate_kind", L1)
        label = cfg["network"] if kind == L1 else f"{cfg['network']} ({GATED[kind]})"
        if cfg["kind"] == "gated":
            net = per.setdefault(label, {"epochs": s["epochs"], "prices": []})
            net["prices"].append(cfg["price"])
            net["gate_lr"], net["free"] = s["gate_lr"], int(s["epochs"] * s["free_frac"])
        else:
            half = int(d["n_train"]) // 2
            cut = (s, half if s["calib_size"] is None else min(int(s["calib_size"]), half))
    parts = [f"{n}: {v['epochs']} epochs at each of {len(v['prices'])} prices "
             f"({', '.join(f'{p:g}' for p in v['prices'])}; gates' learning rate "
             f"{v.get('gate_lr', np.nan):g}, the price off for the last "
             f"{v.get('free', 0)} of them)"
             for n, v in per.items()]
    data = "; ".join(f"{a} training samples, {b} test images, seed {c} (one seed)"
                     for a, b, c in sorted(samples))
    text = "; ".join(parts) + (f"; {data}" if data else "")
    if cut is not None:
        s, n = cut
        text += (f"; frontier cut: the same epochs without gates, then cut (compensation fitted "
                 f"on {n} training images, the width decided on {n} others, at most "
                 f"{100 * s['tol']:g} points of their accuracy lost) and one epoch of "
                 f"fine-tuning (Adam {s['finetune_lr']:g})")
    return text
