"""The sparsifier study's static references: a static network of every final width.

A Derived step: its models are known only once the experiments are trained (the widths the
gates left alive after the last epoch, read from the store).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from widthlab.engine import TrainConfig
from widthlab.errors import UsageError
from widthlab.nn import ModelSpec
from widthlab.store import Store
from widthlab.studies.base import Experiment, RunContext
from widthlab.studies.sparsifier.config import EXPERIMENTS, SAME_TRAINING, STATIC


def final_widths(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model of a sparsifier run: price, start width, seed, status and the alive
    width after the last epoch (NaN for a failed model)."""
    st = Store.open(store)
    info = st.require_run(run_id)
    models = st.models(run_id)
    met = st.metrics(run_id)
    last = int(info["epochs_done"])
    alive = met[(met.name == "alive_width") & (met.epoch == last)].set_index("model")["value"]
    return pd.DataFrame({
        # "lambda": the option's name in runs stored before the price rename
        "model": models["model"], "price": [float(o.get("price", o.get("lambda", np.nan)))
                                            for o in models["options"]],
        "start": models["width"].astype(int), "seed": models["seed"].astype(int),
        "status": models["status"], "width": models["model"].map(alive).to_numpy(float)})


def static_experiment(ctx: RunContext) -> Experiment | None:
    """Static networks of the final alive widths of this study's runs so far (one per
    ``(width, seed)``), trained with their training settings; None when not asked for."""
    if not ctx.profile.static:
        return None
    run_ids = [ctx.runs[e] for e in EXPERIMENTS if e in ctx.runs]
    if not run_ids:
        return None
    specs, cfg = static_config(ctx.store, run_ids)
    return Experiment("static", specs, cfg, label=STATIC)


def static_config(st: Store, run_ids: list[str]) -> tuple[list[ModelSpec], TrainConfig]:
    """Specs and config of the static references of ``run_ids`` (one dataset, one profile)."""
    infos = [st.get_run(r) for r in run_ids]
    if any(i is None or i["status"] != "done" for i in infos):
        raise UsageError("static references need finished sparsifier runs; train them first")
    settings = [{k: i["config"][k] for k in SAME_TRAINING} for i in infos]
    if len({i["dataset"] for i in infos}) != 1 or any(s != settings[0] for s in settings):
        raise UsageError("static references are trained per dataset for runs that share their "
                         "training settings; pass the runs of one dataset and one profile")
    pairs = set()
    for r in run_ids:
        fw = final_widths(st, r)
        fw = fw[(fw.status == "ok") & (fw.width > 0)]
        pairs |= {(int(w), int(s)) for w, s in zip(fw.width, fw.seed, strict=True)}
    if not pairs:
        raise UsageError("every sparsifier lost all its neurons; lower the prices")
    specs = [ModelSpec((w,), seed=s, variant="static") for w, s in sorted(pairs)]
    cfg = dataclasses.replace(TrainConfig.from_dict(infos[0]["config"]), init_from=None)
    return specs, cfg
