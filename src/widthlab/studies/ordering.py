"""The ordering-stability study (journal: "Evaluate the stability of these orderings at
training time"): how much does each neuron ordering move while a model trains, and is any of
them steady enough to drive a sorted cut-off layer?

One engine run per dataset trains one-hidden-layer MLPs; an engine epoch hook
(:class:`widthlab.studies.importance.ImportanceHook` with ``record="all"``) stores every
ordering's scores after every epoch: the exact importance on the validation split and each
proxy. From the store, consecutive records are compared (:mod:`widthlab.metrics.ordering`):
Kendall tau, pairwise swaps, mean and max displacement, top-quarter churn; and every proxy is
compared with the exact order at each epoch (fidelity).

The study also trains what such an ordering would drive, the journal's first remedy for the
width plateau: the sorted flexible layer (:class:`widthlab.nn.sorted_flexible.SortedFlexibleCutoff`,
the cut-off over each neuron's rank), against the plain flexible layer and the sparsifier at
matched width (:func:`run_sorted`, one engine run per variant, labelled
``ordering:variant-<name>``).

Example::

    from widthlab.studies import ordering

    run_id, *variants = ordering.run("mnist", profile="quick", store="widthlab-runs")
    ordering.stability_table("widthlab-runs", run_id)   # model x ordering x epoch
    ordering.sorted_table("widthlab-runs", variants)    # the sorted layer vs the others

or ``widthlab study ordering-stability --dataset both --profile quick``.
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
from widthlab.metrics.importance import PROXIES
from widthlab.metrics.ordering import kendall_tau, stability_series
from widthlab.metrics.variance import Verdict
from widthlab.nn import ModelSpec
from widthlab.store import Store
from widthlab.studies._common import (
    dataset_option,
    datasets_for,
    device_option,
    display_name,
    newest_runs,
    parse_seeds,
    profile_option,
    quiet_option,
    run_label,
    store_option,
    sweep_specs,
)
from widthlab.studies.importance import ImportanceHook

STUDY = "ordering"
#: "Stable enough to drive a sorted cut-off layer", over the second half of training:
#: consecutive records agree at Kendall tau >= STABLE_TAU and at most STABLE_CHURN of the top
#: quarter leaves it between records (those neurons would jump from scale ~1 to ~0) ...
STABLE_TAU = 0.9
STABLE_CHURN = 0.05
#: ... and the ordering still means something: Kendall tau with the exact order >= this.
FAITHFUL_TAU = 0.3
#: Stored scores compared, plus ``exact_abs`` (the magnitude of the exact importance),
#: derived from ``exact`` when reading.
ORDERINGS = ("exact", *PROXIES)


@dataclass(frozen=True)
class Profile:
    """Widths, seeds and epochs of a study profile."""

    widths: tuple[int, ...]
    seeds: int
    epochs: int
    train_size: int | None = None   # None: the whole training split


PROFILES = {
    # ~20 s per dataset on an idle 2-core CPU: 8 records per model, one every 157 steps
    "quick": Profile((128, 512), seeds=2, epochs=8, train_size=20_000),
    "full": Profile((64, 256, 1024), seeds=3, epochs=30),
}


def specs_for(widths: Sequence[int], seeds: int | Sequence[int]) -> list[ModelSpec]:
    """One ModelSpec per width x seed (``seeds`` a count, 3 = seeds 0, 1, 2, or a list)."""
    return sweep_specs(widths, seeds, "ordering")


def config_for(dataset: str, profile: str = "quick", *, widths: Sequence[int] | None = None,
               seeds: int | Sequence[int] | None = None, epochs: int | None = None,
               **train_options) -> tuple[list[ModelSpec], TrainConfig]:
    """The engine's models and config for a profile, with optional overrides."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose {' or '.join(PROFILES)}")
    p = PROFILES[profile]
    specs = specs_for(widths if widths is not None else p.widths,
                      seeds if seeds is not None else p.seeds)
    epochs = epochs if epochs is not None else p.epochs
    train_options.setdefault("train_size", p.train_size)
    if epochs < 2:
        raise UsageError("the ordering study compares consecutive epochs: give epochs >= 2")
    cfg = TrainConfig(dataset=dataset, epochs=epochs, stats_epochs="none",
                      eval_splits=("val", "test"), study=STUDY, **train_options)
    return specs, cfg


# ------------------------------------------------------------------------------ sorted layer
#: The layers compared at matched width: the plain flexible cut-off (over the neuron index), the
#: sorted one (over the rank by activation std, or by the Taylor score), and the sparsifier.
VARIANTS = ("flexible", "sorted-act_std", "sorted-taylor", "sparsifier")
VARIANT_PREFIX = "variant-"


@dataclass(frozen=True)
class SortedProfile:
    """The sorted-layer comparison: every variant starts at ``width`` neurons (the flexible
    cut-off at ``x0 = width``, the gates at 1), one model per penalty and seed; the flexible
    penalty and the sparsifier's L1 weight are the same price per neuron."""

    width: int
    penalties: tuple[float, ...]
    seeds: int
    epochs: int
    train_size: int | None
    every: int = 50          # re-sort every 50 steps ...
    decay: float = 0.5       # ... from a moving average of the window scores
    gate_lr: float = 1e-2    # the sparsifier study's quick setting


SORTED_PROFILES = {
    # ~20 s per dataset on a 2-core CPU (4 runs of 3 models, 316 steps each)
    "quick": SortedProfile(width=256, penalties=(1e-4, 1e-3, 1e-2), seeds=1, epochs=4,
                           train_size=10_000),
    "full": SortedProfile(width=500, penalties=(1e-5, 1e-4, 1e-3, 1e-2), seeds=3, epochs=15,
                          train_size=None),
}


def variant_modifier(variant: str, p: SortedProfile, penalties: Sequence[float]):
    """A factory of the modifier of one variant (one penalty per model)."""
    from widthlab.nn.flexible import FlexibleCutoff
    from widthlab.nn.gated import SparsifierGate
    from widthlab.nn.sorted_flexible import SortedFlexibleCutoff

    lams = [float(v) for v in penalties]
    if variant == "flexible":
        return lambda: FlexibleCutoff(penalty=lams, k=1.0, lr=1.0)
    if variant.startswith("sorted-"):
        score = variant.split("-", 1)[1]
        return lambda: SortedFlexibleCutoff(penalty=lams, k=1.0, lr=1.0, score=score,
                                            every=p.every, decay=p.decay)
    if variant == "sparsifier":
        return lambda: SparsifierGate(lams, penalty="strict", lr=p.gate_lr)
    raise UsageError(f"unknown variant {variant!r}; choose {', '.join(VARIANTS)}")


def run_sorted(dataset: str, profile: str = "quick", *, store: Store | str = "widthlab-runs",
               variants: Sequence[str] = VARIANTS, seeds: int | Sequence[int] | None = None,
               epochs: int | None = None, width: int | None = None,
               penalties: Sequence[float] | None = None, progress: bool = True, data=None,
               **train_options) -> dict[str, str]:
    """Train the sorted flexible layer against the plain flexible layer and the sparsifier at
    matched width (one engine run per variant); returns ``{variant: run id}``."""
    if profile not in SORTED_PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose {' or '.join(SORTED_PROFILES)}")
    p = SORTED_PROFILES[profile]
    seed_list = list(range(seeds if seeds is not None else p.seeds)) \
        if not isinstance(seeds, Sequence) else [int(v) for v in seeds]
    lams = list(penalties if penalties is not None else p.penalties)
    n = int(width if width is not None else p.width)
    train_options.setdefault("train_size", p.train_size)
    out = {}
    for variant in variants:
        specs = [ModelSpec((n,), seed=sd, variant=variant, options=(("penalty", float(lam)),))
                 for lam in lams for sd in seed_list]
        cfg = TrainConfig(dataset=dataset, epochs=epochs if epochs is not None else p.epochs,
                          stats_epochs="none", eval_splits=("val", "test"),
                          study=run_label(STUDY, VARIANT_PREFIX + variant), **train_options)
        make = variant_modifier(variant, p, [dict(sp.options)["penalty"] for sp in specs])
        out[variant] = train(specs, cfg, store, progress=progress, data=data, modifiers=[make])
    return out


def sorted_table(store: Store | str, run_ids: Sequence[str]) -> pd.DataFrame:
    """One row per model of the variant runs at their last epoch: ``variant, penalty, seed,
    start, width`` (the effective width: ``x0`` clipped to ``[0, start]`` for the cut-off
    layers, the live gates for the sparsifier), ``test_acc``, ``val_acc`` and, for the sorted
    layers, ``rank_moves`` (mean rank change per neuron over the last epoch's re-sorts)."""
    st = _store(store)
    rows = []
    for run_id in run_ids:
        info = st.get_run(run_id)
        last = int(info["epochs_done"])
        models = st.models(run_id)
        met = st.metrics(run_id)
        met = met[met.epoch == last]
        for r in models.itertuples():
            if r.status != "ok":
                continue
            mine = met[met.model == r.model]
            val = {(s, n): v for s, n, v in zip(mine.split, mine.name, mine.value, strict=True)}
            start = int(r.arch[0])
            if ("train", "x0") in val:
                width = float(np.clip(val[("train", "x0")], 0, start))
            else:
                width = float(val.get(("train", "alive_width"), np.nan))
            rows.append({"variant": r.variant, "penalty": float(r.options.get("penalty")),
                         "seed": int(r.seed), "start": start, "width": width,
                         "test_acc": val.get(("test", "acc"), np.nan),
                         "val_acc": val.get(("val", "acc"), np.nan),
                         "rank_moves": val.get(("train", "rank_moves"), np.nan),
                         "run_id": run_id})
    return pd.DataFrame(rows)


#: Tolerances of a paired comparison: 0.2 point of test accuracy (20 of 10,000 test images)
#: and 2% of the starting width count as equal; smaller gaps are within run-to-run noise.
ACC_TIE, WIDTH_TIE = 2e-3, 0.02


def paired_wins(table: pd.DataFrame, variant: str, against: str = "flexible") -> dict[str, int]:
    """Compare ``variant`` with ``against`` model by model (same penalty and seed): a *win* is
    no less accurate and no wider (within :data:`ACC_TIE`, :data:`WIDTH_TIE`) and better in at
    least one; a *loss* the reverse; anything else is a *tie* (equal) or a *trade* (one better,
    one worse). ``WIDTH_TIE`` is a share of the starting width."""
    keys = ["dataset", "penalty", "seed"] if "dataset" in table else ["penalty", "seed"]
    pairs = table[table.variant == variant].merge(table[table.variant == against], on=keys,
                                                  suffixes=("", "_ref"))
    out = {"win": 0, "loss": 0, "tie": 0, "trade": 0}
    for r in pairs.itertuples():
        da, dw = r.test_acc - r.test_acc_ref, (r.width - r.width_ref) / r.start
        better = (da > ACC_TIE) or (dw < -WIDTH_TIE)
        worse = (da < -ACC_TIE) or (dw > WIDTH_TIE)
        out["trade" if better and worse else "win" if better else "loss" if worse
            else "tie"] += 1
    return out


def sorted_verdict(table: pd.DataFrame) -> Verdict:
    """Does sorting the neurons give the cut-off layer a better accuracy-for-width trade-off
    than the plain flexible layer? Compared model by model (:func:`paired_wins`); holds when a
    sorted variant wins more pairs than it loses."""
    mean = table.groupby("variant")[["width", "test_acc"]].mean()
    parts = "; ".join(f"{v}: {r.test_acc:.4f} at {r.width:.0f} neurons"
                      for v, r in mean.iterrows())
    claim = ("sorting the neurons (cut-off over importance ranks) gives a better accuracy for "
             "the width than the plain flexible layer (model by model, same penalty and seed)")
    sorted_variants = [v for v in mean.index if v.startswith("sorted")]
    if "flexible" not in mean.index or not sorted_variants:
        return Verdict(claim, False, f"needs the flexible and a sorted variant ({parts})",
                       {"mean": mean.to_dict("index")})
    wins = {v: paired_wins(table, v) for v in sorted_variants}
    score = {v: w["win"] - w["loss"] for v, w in wins.items()}
    best = max(score, key=score.get)
    counts = "; ".join(f"{v}: {w['win']} wins, {w['loss']} losses, {w['tie']} ties, "
                       f"{w['trade']} trades" for v, w in wins.items())
    text = (f"against the plain flexible layer, {counts}; means over penalties and seeds, test "
            f"accuracy at effective width: {parts}")
    return Verdict(claim, bool(score[best] > 0), text,
                   {"mean": mean.to_dict("index"), "wins": wins, "best": best})


def run_stability(dataset: str, profile: str = "quick", *,
                  store: Store | str = "widthlab-runs", widths: Sequence[int] | None = None,
                  seeds: int | Sequence[int] | None = None, epochs: int | None = None,
                  progress: bool = True, data=None, max_samples: int | None = None,
                  **train_options) -> str:
    """Train (or resume, or find done) the stability run on ``dataset``; returns its id.

    Every epoch, every ordering is scored on the validation split (its first ``max_samples``
    samples when given). ``train_options`` go to :class:`~widthlab.engine.TrainConfig`;
    ``data`` replaces the dataset's splits (tests).
    """
    specs, cfg = config_for(dataset, profile, widths=widths, seeds=seeds, epochs=epochs,
                            **train_options)
    hook = ImportanceHook(record="all", topk="none", max_samples=max_samples)
    return train(specs, cfg, store, progress=progress, data=data, hooks=[hook])


def run(dataset: str, profile: str = "quick", *, store: Store | str = "widthlab-runs",
        progress: bool = True, data=None, with_sorted: bool = True, **overrides) -> list[str]:
    """The whole study on ``dataset``: the stability run (:func:`run_stability`, which takes
    the ``overrides``) and, with ``with_sorted``, the sorted-layer comparison
    (:func:`run_sorted`, profile settings; ``device`` and other engine options are passed on).
    Returns the stability run id followed by the variant run ids."""
    ids = [run_stability(dataset, profile, store=store, progress=progress, data=data,
                         **overrides)]
    if with_sorted:
        engine_opts = {k: v for k, v in overrides.items()
                       if k not in ("widths", "seeds", "epochs", "max_samples")}
        ids += list(run_sorted(dataset, profile, store=store, progress=progress, data=data,
                               **engine_opts).values())
    return ids


# ------------------------------------------------------------------------------ reading
def _store(store) -> Store:
    return store if isinstance(store, Store) else Store(store)


def records(store: Store | str, run_id: str) -> dict[int, dict[str, tuple[list, np.ndarray]]]:
    """``{model: {ordering: (epochs, scores (R, H))}}``: every stored record of every score,
    and ``exact_abs`` (the magnitude of the exact importance)."""
    st = _store(store)
    info = st.get_run(run_id)
    if info is None:
        raise UsageError(f"no run {run_id!r} in {st.root}")
    models = st.models(run_id)
    ok = set(models.loc[models.status == "ok", "model"].astype(int))
    out: dict[int, dict[str, tuple[list, np.ndarray]]] = {}
    for name in ORDERINGS:
        per: dict[int, list] = {}
        for epoch in range(1, int(info["epochs_done"]) + 1):
            try:
                arrs = st.arrays(run_id, f"imp_{name}", epoch)
            except UsageError:
                continue
            for m, v in arrs.items():
                per.setdefault(int(m), []).append((epoch, v))
        for m, recs in per.items():
            if m in ok:
                out.setdefault(m, {})[name] = ([e for e, _ in recs],
                                               np.stack([v for _, v in recs]))
    if not out:
        raise UsageError(f"run {run_id!r} stored no importance scores; was it trained by the "
                         "ordering study?")
    for per in out.values():
        if "exact" in per:
            epochs, exact = per["exact"]
            per["exact_abs"] = (epochs, np.abs(exact))
    return out


def stability_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model x ordering x consecutive pair of epochs: the columns of
    :func:`widthlab.metrics.ordering.stability_series` (``step`` = the later epoch), with
    ``model``, ``width``, ``seed`` and ``ordering``. The churn uses the top quarter."""
    st = _store(store)
    info = st.models(run_id).set_index("model")
    parts = []
    for m, per in records(st, run_id).items():
        for name, (epochs, scores) in per.items():
            t = stability_series(scores, epochs)
            t.insert(0, "ordering", name)
            t.insert(0, "seed", int(info.loc[m, "seed"]))
            t.insert(0, "width", scores.shape[1])
            t.insert(0, "model", m)
            parts.append(t)
    return pd.concat(parts, ignore_index=True)


def fidelity_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model x proxy x epoch: Kendall tau-b of the proxy with the exact scores."""
    rows = []
    for m, per in records(store, run_id).items():
        epochs, exact = per["exact"]
        for name, (ep, scores) in per.items():
            if name == "exact":
                continue
            for e, s in zip(ep, scores, strict=True):
                if e in epochs:
                    rows.append({"model": m, "width": s.size, "proxy": name, "epoch": e,
                                 "kendall": kendall_tau(exact[epochs.index(e)], s)})
    return pd.DataFrame(rows, columns=["model", "width", "proxy", "epoch", "kendall"])


def stability_summary(series: pd.DataFrame, fidelity: pd.DataFrame) -> pd.DataFrame:
    """Per ordering, over the second half of training (records after the middle epoch):
    mean consecutive Kendall tau, swap share, mean/max displacement share, top-quarter churn,
    the mean Kendall tau with the exact order at the last epoch, and whether it is *stable*
    and *faithful* (see :data:`STABLE_TAU`, :data:`STABLE_CHURN`, :data:`FAITHFUL_TAU`)."""
    last = int(series["step"].max())
    late = series[series["step"] > last / 2]
    late = late if len(late) else series
    s = late.assign(max_displacement_share=late["max_displacement"] / late["n"]).groupby(
        "ordering", sort=False)[["kendall_tau", "swap_share", "mean_displacement_share",
                                 "max_displacement_share", "topk_churn"]].mean()
    fid = fidelity[fidelity.epoch == fidelity.epoch.max()].groupby("proxy")["kendall"].mean()
    s["tau_with_exact"] = [1.0 if o == "exact" else float(fid.get(o, np.nan)) for o in s.index]
    s["stable"] = (s["kendall_tau"] >= STABLE_TAU) & (s["topk_churn"] <= STABLE_CHURN)
    s["faithful"] = s["tau_with_exact"] >= FAITHFUL_TAU
    return s.reset_index().sort_values("kendall_tau", ascending=False, ignore_index=True)


def sorted_layer_verdict(summary: pd.DataFrame) -> Verdict:
    """Which ordering is stable enough to drive a sorted cut-off layer: among the stable and
    faithful orderings, the most faithful; holds when there is one."""
    ok = summary[summary.stable & summary.faithful].sort_values("tau_with_exact",
                                                                ascending=False)
    parts = "; ".join(f"{r.ordering}: tau {r.kendall_tau:.3f}, churn {r.topk_churn:.3f}, "
                      f"with exact {r.tau_with_exact:.2f}" for r in summary.itertuples())
    claim = (f"an ordering is stable enough to drive a sorted cut-off layer (second half of "
             f"training: consecutive Kendall tau >= {STABLE_TAU}, top-quarter churn <= "
             f"{STABLE_CHURN}) and still faithful (tau with exact >= {FAITHFUL_TAU})")
    if ok.empty:
        return Verdict(claim, False, f"no ordering is both stable and faithful ({parts})",
                       {"orderings": summary.to_dict("records")})
    best = ok.iloc[0]
    text = (f"{best.ordering} is the ordering to drive a sorted layer: stable (tau "
            f"{best.kendall_tau:.3f}, churn {best.topk_churn:.3f}) and closest to exact (tau "
            f"{best.tau_with_exact:.2f}); stable and faithful: {', '.join(ok.ordering)}; all: "
            f"{parts}")
    return Verdict(claim, True, text, {"best": best.ordering, "stable": list(ok.ordering),
                                       "orderings": summary.to_dict("records")})


def exact_stability_verdict(summary: pd.DataFrame) -> Verdict:
    """Is the exact ordering itself stable (the journal's worry: it may reorder too fast)?"""
    r = summary.set_index("ordering").loc["exact"]
    text = (f"exact importance ordering, second half of training: consecutive Kendall tau "
            f"{r.kendall_tau:.3f}, {100 * r.swap_share:.1f}% of pairs swapped, mean "
            f"displacement {100 * r.mean_displacement_share:.1f}% of the width (max "
            f"{100 * r.max_displacement_share:.0f}%), top-quarter churn {100 * r.topk_churn:.1f}%")
    return Verdict("the exact importance ordering is stable during training", bool(r.stable),
                   text, {k: float(r[k]) for k in ("kendall_tau", "swap_share",
                                                   "mean_displacement_share", "topk_churn")})


# ------------------------------------------------------------------------------ report
def report_sections(store: Store | str, run_ids: list[str], out_dir) -> list:
    """One section per dataset (the newest run of each)."""
    from widthlab.report import fig_importance as fi
    from widthlab.report.figures import save
    from widthlab.report.html import Section

    st = _store(store)
    sections = []
    newest = newest_runs(st, run_ids)
    variants: dict[str, list[str]] = {}
    for (dataset, exp), run_id in newest.items():
        if exp is not None and exp.startswith(VARIANT_PREFIX):
            variants.setdefault(dataset, []).append(run_id)
    for (dataset, exp), run_id in sorted(newest.items(), key=lambda t: (t[0][0], t[0][1] or "")):
        if exp is not None:
            continue
        name = display_name(dataset)
        series, fidelity = stability_table(st, run_id), fidelity_table(st, run_id)
        summary = stability_summary(series, fidelity)
        figs = [
            (f"{name}: stability of each ordering between consecutive epochs (mean over "
             "models)", save(fi.stability_curves(series, f"{name}: ordering stability"),
                             out_dir, f"{run_id}-stability")[0]),
            (f"{name}: agreement of each proxy with the exact order during training",
             save(fi.fidelity_curves(fidelity, f"{name}: proxies vs exact while training"),
                  out_dir, f"{run_id}-fidelity")[0]),
        ]
        sections.append(Section(
            title=f"Ordering stability: {name}",
            intro="Every ordering (exact importance on the validation split, and each proxy) "
                  "recorded after every epoch; consecutive records compared.",
            verdicts=[sorted_layer_verdict(summary), exact_stability_verdict(summary)],
            figures=figs,
            tables=[(f"{name}: second half of training, mean over models", summary)],
            runs=[st.get_run(run_id)]))
    for dataset, ids in sorted(variants.items()):
        name = display_name(dataset)
        table = sorted_table(st, ids)
        fig = fi.sorted_tradeoff(table, f"{name}: sorted vs plain flexible vs sparsifier")
        sections.append(Section(
            title=f"Sorted flexible layer: {name}",
            intro="The journal's first remedy: the flexible cut-off applied to each neuron's "
                  "rank in an importance ordering (re-sorted every few steps), against the "
                  "plain cut-off over the neuron index and the sparsifier's gates, all starting "
                  "at the same width with the same price per neuron.",
            verdicts=[sorted_verdict(table)],
            figures=[(f"{name}: test accuracy against effective width, one point per model",
                      save(fig, out_dir, f"ordering-sorted-{dataset}-{ids[0][-12:]}")[0])],
            tables=[(f"{name}: every model at its last epoch",
                     table.drop(columns="run_id"))],
            runs=[st.get_run(r) for r in ids]))
    return sections


# ------------------------------------------------------------------------------ CLI
@click.command("ordering-stability")
@dataset_option
@profile_option("quick: widths 128 and 512, 2 seeds, 8 epochs of 20,000 images (about a "
                "minute for both datasets, with the sorted layer); full: widths 64, 256, "
                "1024, 3 seeds, 30 epochs.")
@click.option("--widths", default=None, help="Override: LO:HI (sqrt(2) steps) or a list.")
@click.option("--seeds", default=None, help="Override: a count (3) or a list (0,4,7).")
@click.option("--epochs", type=click.IntRange(min=2), default=None, help="Override.")
@click.option("--sorted/--no-sorted", "with_sorted", default=True, show_default=True,
              help="Also train the sorted flexible layer against the plain flexible layer and "
                   "the sparsifier at matched width (quick: 256 neurons, 3 penalties, 4 epochs "
                   "on 10,000 images).")
@device_option
@store_option
@quiet_option
def cli(dataset: str, profile: str, widths: str | None, seeds: str | None, epochs: int | None,
        with_sorted: bool, device: str, store: Path, quiet: bool) -> None:
    """Stability of neuron orderings during training: every ordering recorded each epoch,
    consecutive records compared (Kendall tau, swaps, displacement, top-k churn); and the
    sorted flexible layer those orderings would drive.

    Resumes interrupted runs and reuses finished ones. Prints the stability run id of each
    dataset, then its variant run ids.
    """
    from widthlab.nn.widths import parse_widths
    from widthlab.report.console import print_frame

    for name in datasets_for(dataset):
        run_id = run_stability(name, profile, store=store,
                               widths=parse_widths(widths) if widths else None,
                               seeds=parse_seeds(seeds) if seeds else None, epochs=epochs,
                               device=device, progress=not quiet)
        if not quiet:
            summary = stability_summary(stability_table(store, run_id),
                                        fidelity_table(store, run_id))
            print_frame(summary.round(4), title=f"{name}: ordering stability ({run_id})")
        click.echo(run_id)
        if with_sorted:
            ids = run_sorted(name, profile, store=store, device=device, progress=not quiet)
            if not quiet:
                table = sorted_table(store, list(ids.values()))
                print_frame(table.drop(columns="run_id").round(4),
                            title=f"{name}: sorted vs plain flexible vs sparsifier")
            for run_id in ids.values():
                click.echo(run_id)
