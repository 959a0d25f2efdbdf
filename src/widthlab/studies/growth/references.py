"""Static networks of every final width of the growth run (a Derived step)."""

from __future__ import annotations

import dataclasses

import pandas as pd

from widthlab.engine import TrainConfig
from widthlab.nn import ModelSpec
from widthlab.store import Store
from widthlab.studies.base import Experiment, RunContext
from widthlab.studies.growth.config import STATIC


def final_table(st: Store, run_id: str) -> pd.DataFrame:
    """One row per model: init, price, start width, seed, status, final width, test accuracy
    and the summed width over steps (``unit_steps``), after the last epoch."""
    info = st.get_run(run_id)
    last = int(info["epochs_done"])
    models = st.models(run_id)
    met = st.metrics(run_id)
    met = met[met.epoch == last]
    train = met[met.split == "train"].pivot(index="model", columns="name", values="value")
    acc = met[(met.split == "test") & (met.name == "acc")].set_index("model")["value"]
    return pd.DataFrame({
        "model": models.model, "init": [o.get("init") for o in models.options],
        # "lambda": the option's name in runs stored before the price rename
        "price": [float(o.get("price", o.get("lambda", "nan"))) for o in models.options],
        "start_width": models.width.astype(int), "seed": models.seed.astype(int),
        "status": models.status,
        "final_width": models.model.map(train.get("kept_width", pd.Series(dtype=float))),
        "test_acc": models.model.map(acc),
        "unit_steps": models.model.map(train.get("unit_steps", pd.Series(dtype=float)))})


def static_experiment(ctx: RunContext) -> Experiment | None:
    """Static networks of each final width and seed, trained the same way."""
    if not ctx.profile.static or "grow" not in ctx.runs:
        return None
    info = ctx.store.get_run(ctx.runs["grow"])
    t = final_table(ctx.store, ctx.runs["grow"])
    t = t[(t.status == "ok") & (t.final_width > 0)]
    pairs = sorted({(int(w), int(s)) for w, s in zip(t.final_width, t.seed, strict=True)})
    if not pairs:
        return None
    specs = [ModelSpec((w,), seed=s, variant="static") for w, s in pairs]
    cfg = dataclasses.replace(TrainConfig.from_dict(info["config"]), init_from=None)
    return Experiment("static", specs, cfg, label=STATIC)
