"""The sparsifier study (journal: "Try to break the plateau" and "Implement the first version of
a Sparsifier Network"): let gradient descent decide which neurons live.

Every hidden neuron gets a gate ``relu(g)`` (``g`` starts at 1) and the loss gets
``lambda * sum(relu(g))`` (:class:`widthlab.nn.gated.SparsifierGate`); a neuron whose gate
reaches 0 is dead, and the engine removes it for real after every epoch, so it stops costing
compute. Three experiments, each on MNIST and FashionMNIST:

- ``lambda-sweep`` (run label ``sparsifier:lambda-sweep``): the journal's experiment, start width
  500, one model per lambda (and seed), all in one engine run. Final alive width, train and
  test accuracy per lambda; training curves (accuracy and alive width per epoch);
- ``start-width`` (``sparsifier:start-width``): the journal's open question, "does the starting
  size influence the size after convergence?": start widths 250/500/1000/2000 at fixed lambdas,
  one engine run;
- MNIST versus FashionMNIST: the final widths of the two lambda sweeps (the journal's key
  observation: the harder dataset keeps more neurons).

Each sparsifier is compared with a *static* network of its final width, trained the same way
(same epochs, data, optimizer; no gates): one engine run per dataset labelled
``sparsifier-static``, found again in the store by its training settings. Everything after
training reads the store only.

Example::

    from widthlab.studies import sparsifier

    ids = sparsifier.run("mnist", "quick", store="widthlab-runs")   # {experiment: run id}
    table = sparsifier.summarize("widthlab-runs", ids["lambda-sweep"])  # one row per model
    static_id = sparsifier.static_runs("widthlab-runs", ids["lambda-sweep"])[0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import click
import numpy as np
import pandas as pd
from scipy import stats as sps

from widthlab.engine import TrainConfig, train
from widthlab.errors import UsageError
from widthlab.metrics.variance import Verdict
from widthlab.nn import ModelSpec
from widthlab.nn.gated import SparsifierGate
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
)

STUDY = "sparsifier"
STATIC = "sparsifier-static"  # reference runs, not reported on their own
EXPERIMENTS = ("lambda-sweep", "start-width")
# training settings a static reference must share with the sparsifier it is compared with
SAME_TRAINING = ("epochs", "batch_size", "lr", "optimizer", "momentum", "data_seed", "val_size",
                 "train_size", "precision")


@dataclass(frozen=True)
class Profile:
    """What a profile trains (per dataset)."""

    lambdas: tuple[float, ...]        # the lambda sweep, every model starting at `start`
    start: int
    starts: tuple[int, ...]           # the start-width experiment ...
    start_lambdas: tuple[float, ...]  # ... at these lambdas
    seeds: int
    epochs: int
    train_size: int | None = None     # None: the whole training split
    gate_lr: float | None = None      # None: the model's learning rate (1e-3)
    penalty: str = "strict"


PROFILES = {
    # ~1 minute for both datasets on an idle 2-core CPU: 10,000 training images, 4 epochs; the
    # gates learn 10x faster than the weights so that neurons die within those 316 steps
    "quick": Profile(lambdas=(0.0, 1e-4, 1e-3, 1e-2), start=500, starts=(250, 500, 1000, 2000),
                     start_lambdas=(1e-3,), seeds=1, epochs=4, train_size=10_000, gate_lr=1e-2),
    # the journal: start 500, 60 epochs, a lambda sweep (0 is the journal's "static network");
    # the open question at two lambdas; 3 seeds
    "full": Profile(lambdas=(0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1), start=500,
                    starts=(250, 500, 1000, 2000), start_lambdas=(1e-4, 1e-3), seeds=3,
                    epochs=60),
}


def _profile(profile: str) -> Profile:
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose {' or '.join(PROFILES)}")
    return PROFILES[profile]


def _seeds(seeds: int | Sequence[int]) -> list[int]:
    return list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]


def specs_for(experiment: str, p: Profile, *, lambdas=None, starts=None, start_lambdas=None,
              seeds=None) -> tuple[list[ModelSpec], list[float]]:
    """The models of one experiment and the lambda of each (also kept in ``options``)."""
    seed_list = _seeds(seeds if seeds is not None else p.seeds)
    if experiment == "lambda-sweep":
        grid = [(p.start, lam) for lam in (lambdas if lambdas is not None else p.lambdas)]
    elif experiment == "start-width":
        grid = [(w, lam) for lam in (start_lambdas if start_lambdas is not None
                                     else p.start_lambdas)
                for w in (starts if starts is not None else p.starts)]
    else:
        raise UsageError(f"unknown experiment {experiment!r}; choose "
                         f"{', '.join(EXPERIMENTS)}")
    if not grid or not seed_list:
        raise UsageError(f"experiment {experiment} needs at least one lambda, width and seed")
    bad = [lam for _, lam in grid if not (lam >= 0 and np.isfinite(lam))]
    if bad:
        raise UsageError(f"lambdas must be finite and >= 0, got {bad}")
    specs = [ModelSpec((int(w),), seed=s, variant="sparsifier",
                       options=(("lambda", float(lam)),))
             for w, lam in grid for s in seed_list]
    return specs, [dict(s.options)["lambda"] for s in specs]


def config_for(dataset: str, profile: str = "quick", experiment: str = "lambda-sweep", *,
               lambdas=None, starts=None, start_lambdas=None, seeds=None,
               epochs: int | None = None, **train_options):
    """``(specs, TrainConfig, modifier factory)`` of one experiment's engine run."""
    p = _profile(profile)
    specs, lams = specs_for(experiment, p, lambdas=lambdas, starts=starts,
                            start_lambdas=start_lambdas, seeds=seeds)
    train_options.setdefault("train_size", p.train_size)
    cfg = TrainConfig(dataset=dataset, epochs=epochs if epochs is not None else p.epochs,
                      # test accuracy every epoch; train accuracy (and neuron statistics)
                      # after the last one: the sweep's numbers at the cost of one pass
                      eval_splits=("test",), stats_split="train", stats_epochs="last",
                      shrink_every="epoch", study=run_label(STUDY, experiment), **train_options)

    def make() -> SparsifierGate:
        return SparsifierGate(lams, penalty=p.penalty, lr=p.gate_lr)

    return specs, cfg, make


def run(dataset: str, profile: str = "quick", *, store: Store | str = "widthlab-runs",
        experiments: Sequence[str] = EXPERIMENTS, lambdas=None, starts=None,
        start_lambdas=None, seeds=None, epochs: int | None = None, static: bool = True,
        progress: bool = True, data=None, **train_options) -> dict[str, str]:
    """Train (or resume, or find done) the experiments on ``dataset``, then (``static``) the
    static references of their final widths. Returns ``{experiment: run id}``: the runs the
    report shows; find the static run with :func:`static_runs`.

    ``train_options`` go to :class:`~widthlab.engine.TrainConfig` (``device``, ``lr``,
    ``batch_size``, ``train_size``, ...); ``data`` replaces the dataset's splits (tests).
    """
    st = store if isinstance(store, Store) else Store(store)
    ids = {}
    for exp in experiments:
        specs, cfg, make = config_for(dataset, profile, exp, lambdas=lambdas, starts=starts,
                                      start_lambdas=start_lambdas, seeds=seeds, epochs=epochs,
                                      **train_options)
        ids[exp] = train(specs, cfg, st, modifiers=[make], progress=progress, data=data)
    if static and ids:
        run_static(st, list(ids.values()), progress=progress, data=data,
                   device=train_options.get("device", "auto"))
    return ids


def final_widths(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model of a sparsifier run: lambda, start width, seed, status and the alive
    width after the last epoch (NaN for a failed model)."""
    st = store if isinstance(store, Store) else Store(store)
    info = st.get_run(run_id)
    if info is None:
        raise UsageError(f"no run {run_id!r} in {st.root}")
    models = st.models(run_id)
    met = st.metrics(run_id)
    last = int(info["epochs_done"])
    alive = met[(met.name == "alive_width") & (met.epoch == last)].set_index("model")["value"]
    return pd.DataFrame({
        "model": models["model"], "lam": [float(o.get("lambda", np.nan))
                                          for o in models["options"]],
        "start": models["width"].astype(int), "seed": models["seed"].astype(int),
        "status": models["status"], "width": models["model"].map(alive).to_numpy(float)})


def run_static(store: Store | str, run_ids: Sequence[str], *, progress: bool = True,
               data=None, device: str = "auto") -> str:
    """Train static networks of the final alive widths of ``run_ids`` (one dataset, same
    training settings), one per ``(width, seed)``, in one engine run; returns its id."""
    st = store if isinstance(store, Store) else Store(store)
    infos = [st.get_run(r) for r in run_ids]
    if any(i is None or i["status"] != "done" for i in infos):
        raise UsageError("static references need finished sparsifier runs; train them first")
    settings = [{k: i["config"][k] for k in SAME_TRAINING} for i in infos]
    datasets = {i["dataset"] for i in infos}
    if len(datasets) != 1 or any(s != settings[0] for s in settings):
        raise UsageError("static references are trained per dataset for runs that share their "
                         "training settings; pass the runs of one dataset and one profile")
    pairs = set()
    for r in run_ids:
        fw = final_widths(st, r)
        fw = fw[(fw.status == "ok") & (fw.width > 0)]
        pairs |= {(int(w), int(s)) for w, s in zip(fw.width, fw.seed, strict=True)}
    if not pairs:
        raise UsageError("every sparsifier lost all its neurons; lower the lambdas")
    specs = [ModelSpec((w,), seed=s, variant="static") for w, s in sorted(pairs)]
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{**{k: v for k, v in infos[0]["config"].items() if k in known},
                         "study": STATIC, "device": device, "init_from": None})
    return train(specs, cfg, st, progress=progress, data=data)


# ------------------------------------------------------------------------------ reading
def static_runs(store: Store | str, run_id: str) -> list[str]:
    """Finished static runs matching sparsifier run ``run_id`` (same dataset and training
    settings), newest first."""
    st = store if isinstance(store, Store) else Store(store)
    info = st.get_run(run_id)
    if info is None:
        raise UsageError(f"no run {run_id!r} in {st.root}")
    want = {k: info["config"].get(k) for k in SAME_TRAINING}
    runs = st.runs()
    out = []
    for row in runs[(runs.study == STATIC) & (runs.status == "done")
                    & (runs.dataset == info["dataset"])].itertuples():
        cfg = st.get_run(row.run_id)["config"]
        if {k: cfg.get(k) for k in SAME_TRAINING} == want:
            out.append((row.finished_at or "", row.run_id))
    return [r for _, r in sorted(out, reverse=True)]


def static_accuracy(store: Store | str, run_id: str) -> pd.DataFrame:
    """Last-epoch accuracies of the static networks matching sparsifier run ``run_id``:
    one row per ``(width, seed)`` (newest run wins), columns ``static_{split}_acc``."""
    st = store if isinstance(store, Store) else Store(store)
    rows: dict[tuple[int, int], dict] = {}
    for r in static_runs(st, run_id):
        models = st.models(r).set_index("model")
        met = st.metrics(r)
        last = int(st.get_run(r)["epochs_done"])
        met = met[(met.name == "acc") & (met.epoch == last)]
        for m, grp in met.groupby("model"):
            key = (int(models.loc[m, "width"]), int(models.loc[m, "seed"]))
            if key not in rows and models.loc[m, "status"] == "ok":
                rows[key] = {f"static_{s}_acc": v for s, v in zip(grp.split, grp.value,
                                                                   strict=True)
                             if s in ("train", "test")}
    cols = ["width", "seed", "static_train_acc", "static_test_acc"]
    table = pd.DataFrame([{"width": w, "seed": s, **v} for (w, s), v in rows.items()])
    table = table.reindex(columns=cols)
    return table.astype({"width": int, "seed": int, **{c: float for c in cols[2:]}})


def summarize(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model of a sparsifier run: dataset, experiment, lambda, start width, seed,
    final alive width, train and test accuracy after the last epoch and those of the static
    network of the same width and seed (NaN when none is stored)."""
    st = store if isinstance(store, Store) else Store(store)
    info = st.get_run(run_id)
    table = final_widths(st, run_id)
    met = st.metrics(run_id)
    last = int(info["epochs_done"])
    acc = met[(met.name == "acc") & (met.epoch == last)].pivot(
        index="model", columns="split", values="value")
    for split in ("train", "test"):
        table[f"{split}_acc"] = table["model"].map(acc[split]) if split in acc else np.nan
    static = static_accuracy(st, run_id)
    table["width_key"] = table["width"].fillna(-1).astype(int)
    table = table.merge(static.rename(columns={"width": "width_key"}),
                        on=["width_key", "seed"], how="left").drop(columns="width_key")
    table.insert(0, "experiment", info["study"].split(":", 1)[-1])
    table.insert(0, "dataset", info["dataset"])
    return table


def curves(store: Store | str, run_id: str) -> pd.DataFrame:
    """Per model and epoch: lambda, start, seed, alive width, running train accuracy (during
    the epoch), test accuracy, and train accuracy (after the last epoch only)."""
    st = store if isinstance(store, Store) else Store(store)
    wide = st.metrics(run_id, wide=True)
    fw = final_widths(st, run_id).set_index("model")
    train = wide[wide.split == "train"].set_index(["model", "epoch"])
    test = wide[wide.split == "test"].set_index(["model", "epoch"])
    out = pd.DataFrame({
        "alive_width": train["alive_width"], "acc_running": train["acc_running"],
        "train_acc": train.get("acc"), "test_acc": test["acc"].reindex(train.index)})
    out = out.reset_index()
    for col in ("lam", "start", "seed"):
        out.insert(1, col, out["model"].map(fw[col]))
    return out


def per_lambda(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (start, lambda): final width, accuracies, static accuracies."""
    cols = [c for c in ("width", "train_acc", "test_acc", "static_train_acc",
                        "static_test_acc") if c in table]
    ok = table[table.status == "ok"]
    out = ok.groupby(["start", "lam"], as_index=False)[cols].mean()
    out.insert(2, "seeds", ok.groupby(["start", "lam"]).size().to_numpy())
    return out


# ------------------------------------------------------------------------------ verdicts
def fashion_keeps_more(mnist: pd.DataFrame, fashion: pd.DataFrame) -> Verdict:
    """Journal: "for a given penalty the FashionMNIST size is always higher than MNIST"
    (lambda > 0; mean final width over seeds, lambda-sweep runs)."""
    a, b = per_lambda(mnist), per_lambda(fashion)
    both = a.merge(b, on=["start", "lam"], suffixes=("_mnist", "_fashion"))
    both = both[both.lam > 0].sort_values("lam")
    if both.empty:
        return Verdict("FashionMNIST keeps more neurons than MNIST at each lambda", False,
                       "no lambda > 0 trained on both datasets; run the lambda sweep on both")
    more = (both.width_fashion > both.width_mnist).to_numpy()
    pairs = ", ".join(f"lambda {lam:g}: {wf:.0f} vs {wm:.0f}" for lam, wf, wm in
                      zip(both.lam, both.width_fashion, both.width_mnist, strict=True))
    holds = bool(more.all())
    text = (f"FashionMNIST keeps more neurons than MNIST at {int(more.sum())} of {len(more)} "
            f"lambdas (final alive width, FashionMNIST vs MNIST: {pairs}); the journal's claim "
            f"'at every lambda' {'holds' if holds else 'does not hold'}.")
    return Verdict("FashionMNIST keeps more neurons than MNIST at each lambda", holds, text,
                   {"lambda": both.lam.tolist(), "fashion": both.width_fashion.tolist(),
                    "mnist": both.width_mnist.tolist()})


def start_width_matters(table: pd.DataFrame, *, rel: float = 0.2,
                        alpha: float = 0.05) -> Verdict:
    """The journal's open question: does the final width depend on the starting width?

    Per lambda, across start widths: with several seeds per start, a one-way ANOVA of the final
    widths (depends when p < ``alpha``); with one seed, the spread of the final widths relative
    to their mean (depends when above ``rel``). It depends if it does at any lambda.
    """
    ok = table[(table.status == "ok") & table.width.notna()]
    parts, depends, numbers = [], [], {}
    for lam, grp in ok.groupby("lam"):
        by_start = [g.width.to_numpy(float) for _, g in grp.groupby("start")]
        if len(by_start) < 2:
            continue
        means = grp.groupby("start").width.mean()
        spread = float((means.max() - means.min()) / max(means.mean(), 1e-12))
        rho = float(sps.spearmanr(means.index, means.to_numpy()).statistic) \
            if means.nunique() > 1 else 0.0
        if min(len(v) for v in by_start) >= 2 and any(np.ptp(v) > 0 for v in by_start):
            p = float(sps.f_oneway(*by_start).pvalue)
            dep = bool(p < alpha)
            how = f"ANOVA p = {p:.2g}"
        else:
            p = float("nan")
            dep = spread > rel
            how = f"spread {100 * spread:.0f}% of the mean"
        depends.append(dep)
        numbers[float(lam)] = {"starts": means.index.tolist(), "final": means.tolist(),
                               "p": p, "spread": spread, "spearman": rho}
        parts.append(f"lambda {lam:g}: " + ", ".join(
            f"{int(s)} -> {w:.0f}" for s, w in means.items()) + f" ({how}, Spearman {rho:+.2f})")
    if not depends:
        return Verdict("final width depends on the starting width", False,
                       "needs at least two start widths at one lambda; run start-width")
    holds = any(depends)
    text = (f"Final alive width {'depends' if holds else 'does not depend'} on the starting "
            f"width (start -> final: {'; '.join(parts)}).")
    return Verdict("final width depends on the starting width", holds, text, numbers)


def sparsifier_vs_static(table: pd.DataFrame, split: str = "test", *,
                         margin: float = 0.005) -> Verdict:
    """Sparsifier against a static network at equal width (the journal compared its
    sparsifiers with static networks and found them "better at fitting and generalizing").

    Paired by model: accuracy of each sparsifier (lambda > 0) minus that of the static network
    of its final width and seed. Holds when the sparsifiers are at least as accurate within
    ``margin`` (mean difference >= -0.5 points); the 95% Student-t interval is reported.
    """
    col, ref = f"{split}_acc", f"static_{split}_acc"
    claim = f"sparsifier at least as accurate as a static network of its width ({split})"
    pairs = table[(table.status == "ok") & (table.lam > 0) & table[ref].notna()] \
        if ref in table else table.iloc[:0]
    if pairs.empty:
        return Verdict(claim, False, "no static reference of the final widths stored; run the "
                                     "study with its static references (the default)")
    diff = (pairs[col] - pairs[ref]).to_numpy(float)
    mean = float(diff.mean())
    if len(diff) >= 2 and diff.std(ddof=1) > 0:
        half = float(sps.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
    else:
        half = float("nan")
    holds = bool(mean >= -margin)
    wins = int((diff > 0).sum())
    ci = ("" if np.isnan(half) else
          f" (95% CI {100 * (mean - half):+.2f} to {100 * (mean + half):+.2f})")
    text = (f"{split.capitalize()} accuracy of a sparsifier minus a static network of its final "
            f"width and seed: mean {100 * mean:+.2f} points{ci} over {len(diff)} models, "
            f"sparsifier ahead in {wins}; the sparsifier is "
            f"{'as accurate or better' if holds else 'less accurate'} at equal width "
            f"(criterion: mean >= {-100 * margin:+.1f} points).")
    return Verdict(claim, holds, text,
                   {"mean": mean, "half_ci": half, "n": len(diff), "wins": wins})


# ------------------------------------------------------------------------------ report
def report_sections(store: Store | str, run_ids: list[str], out_dir) -> list:
    """One section per dataset (lambda sweep and start width), then MNIST versus
    FashionMNIST; the newest run of each experiment is shown."""
    from widthlab.report import fig_sparsifier as fs
    from widthlab.report.figures import save
    from widthlab.report.html import Section

    st = store if isinstance(store, Store) else Store(store)
    newest = newest_runs(st, list(run_ids))
    datasets = sorted({d for d, _ in newest}, key=lambda s: (s != "mnist", s))
    sections, sweeps = [], {}
    for dataset in datasets:
        name = display_name(dataset)
        figs, tables, verdicts, runs = [], [], [], []
        sweep_id = newest.get((dataset, "lambda-sweep"))
        start_id = newest.get((dataset, "start-width"))
        if sweep_id:
            table = summarize(st, sweep_id)
            sweeps[dataset] = table
            curve = curves(st, sweep_id)
            verdicts.append(sparsifier_vs_static(table))
            figs += [
                ("sweep", "final alive width and accuracy per lambda, against a static network "
                 "of the same width", fs.lambda_sweep(table, f"{name}: lambda sweep")),
                ("curves", "training curves per lambda: test accuracy and alive width per "
                 "epoch", fs.training_curves(curve, f"{name}: training")),
            ]
            tables.append((f"{name}: per lambda (mean over seeds)",
                           per_lambda(table).round(4)))
            runs.append(st.get_run(sweep_id))
        if start_id:
            table = summarize(st, start_id)
            verdicts.append(start_width_matters(table))
            figs.append(("start", "final alive width against starting width, and alive "
                         "width per epoch", fs.start_width(table, curves(st, start_id),
                                                          f"{name}: starting width")))
            tables.append((f"{name}: per starting width and lambda", per_lambda(table).round(4)))
            runs.append(st.get_run(start_id))
        for sid in static_runs(st, sweep_id or start_id)[:1]:
            runs.append(st.get_run(sid))
        saved = [(f"{name}: {cap}", save(fig, out_dir, f"sparsifier-{dataset}-{key}")[0])
                 for key, cap, fig in figs]
        sections.append(Section(
            title=f"Sparsifier networks: {name}",
            intro="Every hidden neuron is multiplied by a learned gate relu(g), g starting at "
                  "1, under the penalty lambda * sum(relu(g)); neurons whose gate reaches 0 "
                  "are removed from the network after each epoch. Static references: plain "
                  "networks of each final width, trained the same way.",
            verdicts=verdicts, figures=saved, tables=tables, runs=runs))
    if {"mnist", "fashion-mnist"} <= set(sweeps):
        pair = {"MNIST": sweeps["mnist"], "FashionMNIST": sweeps["fashion-mnist"]}
        path = save(fs.datasets_widths(pair), out_dir, "sparsifier-mnist-vs-fashion")[0]
        sections.append(Section(
            title="Sparsifier networks: MNIST versus FashionMNIST",
            verdicts=[fashion_keeps_more(sweeps["mnist"], sweeps["fashion-mnist"])],
            figures=[("final alive width per lambda on both datasets", path)]))
    return sections


# ------------------------------------------------------------------------------ CLI
def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        out = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"cannot read {what} {text!r}: give a comma list, e.g. "
                         "0,1e-4,1e-3") from None
    if not out:
        raise UsageError(f"{what} needs at least one value")
    return out


@click.command("sparsifier")
@dataset_option
@profile_option("quick: lambdas 0/1e-4/1e-3/1e-2 at start 500, starts 250..2000 at 1e-3, "
                "4 epochs on 10,000 images (about a minute per dataset); full: the journal's "
                "60 epochs on the whole training split, lambdas 0..1e-1, 3 seeds.")
@click.option("--experiment", type=click.Choice(["all", *EXPERIMENTS]), default="all",
              show_default=True, help="Which experiment(s) to train.")
@click.option("--lambdas", default=None, help="Override the sweep's lambdas: 0,1e-4,1e-3.")
@click.option("--starts", default=None, help="Override the start widths: 250,500,1000.")
@click.option("--start-lambdas", default=None, help="Override the start-width lambdas.")
@click.option("--seeds", default=None, help="Override: a count (3) or a list (0,4,7).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override.")
@click.option("--no-static", is_flag=True, help="Skip the static reference networks.")
@device_option
@store_option
@quiet_option
def cli(dataset: str, profile: str, experiment: str, lambdas: str | None, starts: str | None,
        start_lambdas: str | None, seeds: str | None, epochs: int | None, no_static: bool,
        device: str, store: Path, quiet: bool) -> None:
    """Sparsifier networks: per-neuron gates under an L1 penalty, dead neurons removed after
    each epoch. Lambda sweep at start width 500, the start-width question, static networks of
    the final widths. Resumes interrupted runs, reuses finished ones; prints the run ids.
    """
    from widthlab.report.console import print_frame

    exps = EXPERIMENTS if experiment == "all" else (experiment,)
    start_list = _floats(starts, "starts")
    if start_list and any(w != int(w) or w < 1 for w in start_list):
        raise UsageError(f"starts must be positive whole widths, got {starts!r}")
    for name in datasets_for(dataset):
        ids = run(name, profile, store=store, experiments=exps,
                  lambdas=_floats(lambdas, "lambdas"),
                  starts=[int(s) for s in start_list] if start_list else None,
                  start_lambdas=_floats(start_lambdas, "start lambdas"),
                  seeds=parse_seeds(seeds) if seeds else None, epochs=epochs,
                  static=False, device=device, progress=not quiet)
        static_id = None if no_static else run_static(store, list(ids.values()),
                                                      device=device, progress=not quiet)
        for exp in exps:
            if not quiet:
                table = per_lambda(summarize(store, ids[exp])).round(4)
                print_frame(table, list(table.columns),
                            title=f"{display_name(name)} {exp}: {ids[exp]}")
            click.echo(ids[exp])
        if static_id:
            click.echo(static_id)


__all__ = ["EXPERIMENTS", "PROFILES", "STATIC", "STUDY", "Profile", "cli",
           "config_for", "curves", "fashion_keeps_more", "final_widths", "per_lambda",
           "report_sections", "run", "run_static", "sparsifier_vs_static",
           "start_width_matters", "static_accuracy", "static_runs", "summarize"]
