"""The optimizer study (journal: "Check if Adam is messing up with the training at very low
loss", planned there but never run): do loss spikes appear late in training with Adam, does
AdaMax reduce them, and does the flexible layer's x0 learning rate matter?

For each optimizer (Adam, AdaMax and, as a control, SGD with momentum) and each variant (a
static network, and flexible networks whose cut-off x0 learns at two learning rates), one
engine run trains every replicate together and records every minibatch loss
(``record_batch_loss``). Everything after training reads the store: per-epoch loss envelopes
(min / median / max of the batch losses, spread over replicates) and spike counts
(:mod:`widthlab.metrics.spikes`: a batch above 3x the running median of the 50 before it).

Example::

    from widthlab.studies import optimizer

    run_ids = optimizer.run("mnist", "quick", store="widthlab-runs")
    spikes = optimizer.spike_table("widthlab-runs", run_ids)   # one row per run x epoch
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd

from widthlab.engine import TrainConfig, train
from widthlab.errors import UsageError
from widthlab.metrics.spikes import FACTOR, WINDOW, spikes_per_epoch
from widthlab.metrics.variance import Verdict
from widthlab.nn import ModelSpec
from widthlab.store import Store
from widthlab.studies._common import (
    dataset_option,
    datasets_for,
    device_option,
    display_name,
    experiment_of,
    pick_profile,
    profile_option,
    quiet_option,
    run_label,
    store_option,
)

STUDY = "optimizer"
JOURNAL = ("Planned, never run: after a large number of epochs the loss becomes very noisy; "
           "plot the min and max loss of multiple models during training and compare with "
           "AdaMax to see if that solves the problem.")
# learning rates: Adam's journal default, AdaMax's PyTorch default, a usual SGD+momentum one
OPTIMIZERS = {"adam": {"optimizer": "adam", "lr": 1e-3},
              "adamax": {"optimizer": "adamax", "lr": 2e-3},
              "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}}


@dataclass(frozen=True)
class Profile:
    replicates: int
    epochs: int
    train_size: int | None
    width: int
    x0_start: float           # the flexible layers' starting cut-off
    x0_lrs: tuple[float, ...]  # the flexible variants' cut-off learning rates
    penalty: float            # size penalty of the flexible layers


PROFILES = {
    # under 4 minutes for both datasets here: 10,000 training images reach a low loss quickly
    "quick": Profile(replicates=5, epochs=25, train_size=10_000, width=256, x0_start=128.0,
                     x0_lrs=(1.0, 0.1), penalty=1e-6),
    "full": Profile(replicates=30, epochs=120, train_size=None, width=256, x0_start=128.0,
                    x0_lrs=(1.0, 0.1), penalty=1e-6),
}


def variants(prof: Profile) -> list[str]:
    """``static`` and one ``flexible-lr<x0 lr>`` per cut-off learning rate."""
    return ["static"] + [f"flexible-lr{lr:g}" for lr in prof.x0_lrs]


def _flexible(prof: Profile, x0_lr: float):
    from widthlab.nn.flexible import FlexibleCutoff

    def make():
        return FlexibleCutoff(penalty=prof.penalty, x0=prof.x0_start, lr=x0_lr)

    return make


def run(dataset: str, profile: str | Profile = "quick", *,
        store: Store | str = "widthlab-runs", optimizers: Sequence[str] = tuple(OPTIMIZERS),
        device: str = "auto", progress: bool = True, data=None, **overrides) -> list[str]:
    """Train (or reuse) one run per optimizer x variant on ``dataset``; returns their ids.

    ``overrides`` replace :class:`Profile` fields (``replicates``, ``epochs``, ...); ``data``
    replaces the dataset's splits (a :class:`~widthlab.data.tensors.DatasetSplits`, tests).
    """
    prof = _profile(profile, overrides)
    unknown = set(optimizers) - set(OPTIMIZERS)
    if unknown:
        raise UsageError(f"unknown optimizer(s) {sorted(unknown)}; choose from "
                         f"{', '.join(OPTIMIZERS)}")
    ids = []
    for opt in optimizers:
        for var in variants(prof):
            specs = [ModelSpec((prof.width,), seed=s, variant=var)
                     for s in range(prof.replicates)]
            mods = [] if var == "static" else [
                _flexible(prof, prof.x0_lrs[variants(prof).index(var) - 1])]
            cfg = TrainConfig(dataset=dataset, epochs=prof.epochs, train_size=prof.train_size,
                              record_batch_loss=True, stats_epochs="none",
                              eval_splits=(), device=device,  # batch losses only
                              study=run_label(STUDY, f"{opt}-{var}"), **OPTIMIZERS[opt])
            ids.append(train(specs, cfg, store, modifiers=mods, progress=progress, data=data))
    return ids


def _profile(profile: str | Profile, overrides: dict) -> Profile:
    prof = pick_profile(PROFILES, profile, Profile)
    bad = set(overrides) - set(Profile.__dataclass_fields__)
    if bad:
        raise UsageError(f"unknown option(s) {sorted(bad)} for the optimizer study")
    return Profile(**{**prof.__dict__, **overrides}) if overrides else prof


# ------------------------------------------------------------------------------ reading
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


def _labels(st: Store, run_id: str) -> tuple[str, str, str]:
    info = st.get_run(run_id)
    opt, var = experiment_of(info["study"]).split("-", 1)
    return info["dataset"], opt, var


def envelope_table(store: Store | str, run_ids: Sequence[str]) -> pd.DataFrame:
    """One row per run x epoch: the replicates' median of each model's per-epoch min, median
    and max batch loss, and the spread (lowest and highest per-model median)."""
    st = store if isinstance(store, Store) else Store(store)
    rows = []
    for r in run_ids:
        dataset, opt, var = _labels(st, r)
        m = st.metrics(r)
        m = m[m.name.str.startswith("batch_loss_")]
        w = m.pivot_table(index=["epoch", "model"], columns="name", values="value")
        for epoch, g in w.groupby(level="epoch"):
            rows.append({"run_id": r, "dataset": dataset, "optimizer": opt, "variant": var,
                         "epoch": int(epoch),
                         "loss_min": float(g["batch_loss_min"].median()),
                         "loss_median": float(g["batch_loss_median"].median()),
                         "loss_max": float(g["batch_loss_max"].median()),
                         "median_lo": float(g["batch_loss_median"].min()),
                         "median_hi": float(g["batch_loss_median"].max()),
                         "replicates": len(g)})
    return pd.DataFrame(rows)


def spike_table(store: Store | str, run_ids: Sequence[str], factor: float = FACTOR,
                window: int = WINDOW) -> pd.DataFrame:
    """One row per run x epoch: spikes summed over replicates, batches looked at."""
    st = store if isinstance(store, Store) else Store(store)
    rows = []
    for r in run_ids:
        dataset, opt, var = _labels(st, r)
        per, steps = _series(st, r)
        counts = {m: spikes_per_epoch(x, steps, factor, window) for m, x in per.items()}
        n_ep = max(len(c) for c in counts.values())
        for e in range(n_ep):
            alive = [c for c in counts.values() if len(c) > e]
            rows.append({"run_id": r, "dataset": dataset, "optimizer": opt, "variant": var,
                         "epoch": e + 1, "spikes": int(sum(c[e] for c in alive)),
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


# ------------------------------------------------------------------------------ verdicts
def verdicts(rates: pd.DataFrame, dataset: str) -> list[Verdict]:
    """The study's three questions for one dataset, from :func:`spike_rates`."""
    r = rates[rates.dataset == dataset].set_index(["optimizer", "variant"])
    out = []

    def rate(opt, var, col="late_rate"):
        return float(r.loc[(opt, var), col]) if (opt, var) in r.index else float("nan")

    if ("adam", "static") in r.index:
        e, lt = rate("adam", "static", "early_rate"), rate("adam", "static")
        holds = lt > e and lt > 0
        out.append(Verdict(
            claim="with Adam, loss spikes appear late in training", holds=holds,
            text=f"Adam, static network: {lt:.2f} spikes per 1,000 batches in the last third "
                 f"of training against {e:.2f} in the first third"
                 + (" (spikes concentrate late)" if holds else " (no late excess)"),
            numbers={"early": e, "late": lt}))
    adam = r.loc[r.index.get_level_values(0) == "adam"]
    adamax = r.loc[r.index.get_level_values(0) == "adamax"]
    if len(adam) and len(adamax):
        a, b = float(adam.late_rate.mean()), float(adamax.late_rate.mean())
        holds = b < a
        out.append(Verdict(
            claim="AdaMax reduces late spikes", holds=holds,
            text=f"late spikes per 1,000 batches, averaged over the variants: Adam {a:.2f}, "
                 f"AdaMax {b:.2f}" + ("" if holds else " (AdaMax does not reduce them)"),
            numbers={"adam": a, "adamax": b}))
    flex = [v for v in r.index.get_level_values(1).unique() if v.startswith("flexible")]
    if len(flex) >= 2 and all(("adam", v) in r.index for v in flex):
        vals = {v: rate("adam", v) for v in flex}
        lo, hi = min(vals.values()), max(vals.values())
        holds = hi > 2 * lo and hi > 0
        out.append(Verdict(
            claim="the effect depends on the flexible layer's x0 learning rate", holds=holds,
            text="Adam, late spikes per 1,000 batches: " + ", ".join(
                f"{v.replace('flexible-lr', 'x0 lr ')}: {x:.2f}" for v, x in vals.items())
            + (" (more than 2x apart)" if holds else " (within 2x of each other)"),
            numbers=vals))
    return out


# ------------------------------------------------------------------------------ report
def report_sections(store: Store | str, run_ids: list[str], out_dir) -> list:
    """One section per dataset: envelopes, spike counts, verdicts (newest run of each
    optimizer x variant)."""
    from widthlab.report import fig_optimizer as fo
    from widthlab.report.figures import save
    from widthlab.report.html import Section
    from widthlab.studies._common import newest_runs

    st = store if isinstance(store, Store) else Store(store)
    chosen = newest_runs(st, run_ids)
    sections = []
    for dataset in sorted({k[0] for k in chosen}, key=lambda s: (s != "mnist", s)):
        ids = [r for (ds, _), r in chosen.items() if ds == dataset]
        env, spikes = envelope_table(st, ids), spike_table(st, ids)
        rates = spike_rates(spikes)
        name = display_name(dataset)
        figs = [(f"{name}: batch-loss envelopes per epoch (min / median / max over each "
                 "epoch's batches, replicate median; band: spread of the replicates' medians)",
                 save(fo.envelopes(env, f"{name}: loss envelopes"), out_dir,
                      f"optimizer-{dataset}-envelopes")[0]),
                (f"{name}: spikes per epoch (batch loss above {FACTOR:g}x the median of the "
                 f"previous {WINDOW} batches), summed over replicates",
                 save(fo.spike_counts(spikes, f"{name}: loss spikes"), out_dir,
                      f"optimizer-{dataset}-spikes")[0])]
        sections.append(Section(
            title=f"Optimizer study: {name}",
            intro="Static and flexible networks trained long with Adam, AdaMax and SGD with "
                  "momentum; every minibatch loss recorded. The journal planned this check "
                  "but never ran it.",
            verdicts=verdicts(rates, dataset), figures=figs,
            tables=[(f"{name}: spike rates", rates.round(3))],
            runs=[st.get_run(r) for r in ids]))
    return sections


# ------------------------------------------------------------------------------ CLI
@click.command("optimizer")
@dataset_option
@profile_option("quick: 5 replicates, 25 epochs on 10,000 images (minutes); full: 30 "
                "replicates, 120 epochs on the whole training split.")
@click.option("--optimizers", default="adam,adamax,sgd", show_default=True,
              help="Comma-separated subset of adam, adamax, sgd.")
@click.option("--replicates", type=click.IntRange(min=1), default=None, help="Override.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override.")
@device_option
@store_option
@quiet_option
def cli(dataset: str, profile: str, optimizers: str, replicates: int | None,
        epochs: int | None, device: str, store: Path, quiet: bool) -> None:
    """Loss spikes at low loss: Adam, AdaMax and SGD+momentum on static and flexible networks,
    every batch loss recorded. Resumable; prints the run ids."""
    from widthlab.report.console import print_frame

    over = {k: v for k, v in (("replicates", replicates), ("epochs", epochs)) if v is not None}
    opts = [o.strip() for o in optimizers.split(",") if o.strip()]
    for name in datasets_for(dataset):
        ids = run(name, profile, store=store, optimizers=opts, device=device,
                  progress=not quiet, **over)
        if not quiet:
            print_frame(spike_rates(spike_table(store, ids)).round(3),
                        ["optimizer", "variant", "early_rate", "late_rate", "spikes"],
                        title=f"{name}: spikes per 1,000 batches")
        for r in ids:
            click.echo(r)
