"""The variance study (journal sections 1-3 and FashionMNIST): is the distribution of per-neuron
activation std a proxy for the right layer width?

One engine run per dataset trains every width x seed on one minibatch stream and streams the
per-neuron statistics over the training split after the last epoch. Everything after training
reads the store only: :func:`collect` gathers per-width arrays, :func:`summarize` turns them into
one row per width (see :func:`widthlab.metrics.variance.width_summary`).

Example::

    from widthlab.studies import variance

    run_id = variance.run("mnist", profile="quick", store="widthlab-runs")
    table = variance.summarize("widthlab-runs", run_id)   # pandas, one row per width
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
from widthlab.metrics.variance import width_summary
from widthlab.nn import ModelSpec
from widthlab.nn.widths import sqrt2_widths
from widthlab.store import Store
from widthlab.studies._common import (
    DATASET_NAMES,
    dataset_option,
    datasets_for,
    device_option,
    parse_seeds,
    profile_option,
    quiet_option,
    store_option,
    sweep_specs,
)

STUDY = "variance"
JOURNAL = ("The distribution of the variance of activation seems to be a good proxy for network "
           "size; dead neurons show when a network is oversized; the Shapiro normality test "
           "peaks near the accuracy plateau but on average overestimates the optimal size. "
           "On FashionMNIST: the variance of activation does not seem to be a good candidate "
           "to estimate the size of a network in the general case.")
SPLITS = ("train", "val", "test")
MIN_FIT = 20  # alive neurons a width needs (over all seeds) for the mixture fits


@dataclass(frozen=True)
class Profile:
    """Widths, seeds and epochs of a study profile."""

    widths: tuple[int, ...]
    seeds: int
    epochs: int


PROFILES = {
    # a few minutes for both datasets on a 2-core CPU: the journal's grid up to 1448, 3 seeds
    "quick": Profile(tuple(sqrt2_widths(16, 1448)), seeds=3, epochs=2),
    # the journal: int(2**(i/2)) for i = 8..27, 11 replicates, 30 epochs
    "full": Profile(tuple(sqrt2_widths(16, 11585)), seeds=11, epochs=30),
}


def specs_for(widths: Sequence[int], seeds: int | Sequence[int]) -> list[ModelSpec]:
    """One ModelSpec per width x seed (``seeds`` a count, 3 = seeds 0, 1, 2, or a list)."""
    return sweep_specs(widths, seeds, "variance")


def config_for(dataset: str, profile: str = "quick", *, widths: Sequence[int] | None = None,
               seeds: int | Sequence[int] | None = None, epochs: int | None = None,
               **train_options) -> tuple[list[ModelSpec], TrainConfig]:
    """The engine's models and config for a profile, with optional overrides."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose {' or '.join(PROFILES)}")
    p = PROFILES[profile]
    specs = specs_for(widths if widths is not None else p.widths,
                      seeds if seeds is not None else p.seeds)
    cfg = TrainConfig(dataset=dataset, epochs=epochs if epochs is not None else p.epochs,
                      stats_epochs="last", stats_split="train", eval_splits=("val", "test"),
                      study=STUDY, **train_options)
    return specs, cfg


def run(dataset: str, profile: str = "quick", *, store: Store | str = "widthlab-runs",
        widths: Sequence[int] | None = None, seeds: int | Sequence[int] | None = None,
        epochs: int | None = None, progress: bool = True, data=None, **train_options) -> str:
    """Train (or resume, or find done) the study's run on ``dataset``; returns the run id.

    ``train_options`` go to :class:`~widthlab.engine.TrainConfig` (``device``, ``precision``,
    ``lr``, ``batch_size``, ``train_size``, ...); ``data`` replaces the dataset's splits
    (a :class:`~widthlab.data.tensors.DatasetSplits`, e.g. in tests).
    """
    specs, cfg = config_for(dataset, profile, widths=widths, seeds=seeds, epochs=epochs,
                            **train_options)
    return train(specs, cfg, store, progress=progress, data=data)


def collect(store: Store | str, run_id: str) -> dict:
    """Per-width inputs of :func:`width_summary` from a finished run, read from the store.

    Returns ``{"stds": {w: [array per seed]}, "dead": {...}, "accuracy": {split: {w: [acc]}},
    "failed": [model indices]}``; failed models are left out (their arrays were never stored).
    """
    st = store if isinstance(store, Store) else Store(store)
    info = st.get_run(run_id)
    if info is None:
        raise UsageError(f"no run {run_id!r} in {st.root}")
    models = st.models(run_id)
    if (models["arch"].map(len) != 1).any():
        raise UsageError(f"run {run_id!r} has multi-layer models; the variance study needs "
                         "one hidden layer")
    stds_by_model = st.arrays(run_id, "act_std")
    dead_by_model = st.arrays(run_id, "dead")
    last = int(info["epochs_done"])
    m = st.metrics(run_id)
    m = m[(m.name == "acc") & (m.epoch == last)]
    acc = {(int(r.model), r.split): float(r.value) for r in m.itertuples()}
    stds: dict[int, list] = {}
    dead: dict[int, list] = {}
    accuracy: dict[str, dict[int, list]] = {s: {} for s in SPLITS}
    failed = []
    for row in models.itertuples():
        w = int(row.width)
        if row.status != "ok" or row.model not in stds_by_model:
            failed.append(int(row.model))
            continue
        stds.setdefault(w, []).append(stds_by_model[row.model])
        dead.setdefault(w, []).append(dead_by_model[row.model].astype(bool))
        for split in SPLITS:
            key = (int(row.model), "train" if split == "train" else split)
            if key in acc:
                accuracy[split].setdefault(w, []).append(acc[key])
    accuracy = {s: v for s, v in accuracy.items() if v}
    if not stds:
        raise UsageError(f"run {run_id!r} stored no neuron statistics (did it finish? "
                         "see `widthlab runs show`)")
    return {"stds": stds, "dead": dead, "accuracy": accuracy, "failed": failed}


def summarize(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per width: Shapiro W/p of the pooled stds, total std, dead neurons and accuracy
    per split, each per-replicate mean with a 95% interval; plus ``dataset`` and ``run_id``."""
    st = store if isinstance(store, Store) else Store(store)
    c = collect(st, run_id)
    table = width_summary(c["stds"], c["dead"], c["accuracy"])
    table.insert(0, "dataset", st.get_run(run_id)["dataset"])
    table.insert(0, "run_id", run_id)
    return table


# ------------------------------------------------------------------------------ mixtures
def mixture_summary(c: dict) -> pd.DataFrame:
    """Per width, the share of *useless* neurons by two mixtures fitted to the pooled stds.

    ``c`` is :func:`collect`'s result. For each width the per-neuron stds of all replicates are
    pooled (as the journal did) and fitted with a two-gamma and an exponential+normal mixture
    (:mod:`widthlab.fit`, one batched EM per family). Dead neurons (std exactly 0) are
    excluded from the fits and counted as useless: ``useless = (dead + w0 * alive) / all``
    where ``w0`` is the weight of the near-zero component.
    """
    import warnings

    from widthlab.fit import ConvergenceWarning, ExponentialNormalMixture, GammaMixture, fit_many

    widths = sorted(c["stds"])
    pooled = [np.concatenate([np.asarray(a, dtype=np.float64) for a in c["stds"][w]])
              for w in widths]
    out = pd.DataFrame({"width": widths})
    # a width with fewer than MIN_FIT alive neurons in all (tiny test sweeps) gets NaN
    ok = [int((p > 0).sum()) >= MIN_FIT and np.ptp(p[p > 0]) > 0 for p in pooled]
    fit_arrays = [p for p, good in zip(pooled, ok, strict=True) if good]
    for col, model in (("gamma_useless", GammaMixture()),
                       ("expnormal_useless", ExponentialNormalMixture())):
        useless = np.full(len(widths), np.nan)
        converged = np.zeros(len(widths), dtype=bool)
        if fit_arrays:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                fits = fit_many(model, fit_arrays, as_frame=True)
            alive, zeros = fits["n"].to_numpy(float), fits["n_zeros"].to_numpy(float)
            useless[ok] = (zeros + fits["weight_0"].to_numpy() * alive) / (alive + zeros)
            converged[ok] = fits["converged"].to_numpy()
        out[col] = useless
        out[f"{col.split('_')[0]}_converged"] = converged
    return out


def turning_points(summary: pd.DataFrame, mixtures: pd.DataFrame) -> dict[str, float | None]:
    """The width at which each metric says "oversized from here".

    - gamma / exp+normal mixtures: the useless share first reaches one half (more useless than
      useful neurons), interpolated in log width;
    - Shapiro W: the width of its maximum (the most normal distribution);
    - dead neurons: the first width where the mean dead count is above zero (the journal notes
      any other threshold would be arbitrary).
    """
    from widthlab.metrics import first_crossing, most_normal_width

    dead = summary["dead"].to_numpy(float)
    return {
        "two-gamma mixture": first_crossing(mixtures["width"], mixtures["gamma_useless"], 0.5),
        "exp+normal mixture": first_crossing(mixtures["width"],
                                             mixtures["expnormal_useless"], 0.5),
        "Shapiro W": float(most_normal_width(summary)["width"]),
        "dead neurons": first_crossing(summary["width"], (dead > 0).astype(float), 1.0),
    }


# ------------------------------------------------------------------------------ report


def verdicts(summary: pd.DataFrame) -> list:
    """The journal's claims about one dataset, recomputed (see :mod:`widthlab.metrics`)."""
    from widthlab.metrics import (
        accuracy_saturates,
        dead_grows_with_width,
        shapiro_argmax_vs_plateau,
        total_std_grows_logarithmically,
    )

    return [dead_grows_with_width(summary), accuracy_saturates(summary),
            total_std_grows_logarithmically(summary), shapiro_argmax_vs_plateau(summary)]


def turning_verdict(summary: pd.DataFrame, c: dict):
    """Which metric's turning point is closest to the test-accuracy plateau."""
    from widthlab.metrics import accuracy_plateau, closest_turning_point

    plateau = accuracy_plateau(summary["width"], summary["test_acc"])
    return closest_turning_point(turning_points(summary, mixture_summary(c)), plateau)


def figures(store: Store | str, run_id: str, out_dir) -> list[tuple[str, object]]:
    """Draw every per-dataset figure of a run from the store; ``[(caption, png path)]``."""
    from widthlab.report import figures as fg

    c = collect(store, run_id)
    summary = summarize(store, run_id)
    name = DATASET_NAMES.get(summary["dataset"].iloc[0], summary["dataset"].iloc[0])
    widths = fg.pick_widths(list(c["stds"]))
    mix = mixture_summary(c)
    drawn = [
        ("std distributions for selected widths (KDE, pooled over seeds)",
         fg.std_distributions(c["stds"], widths, f"{name}: neuron activation std")),
        ("the most normal width and its two neighbours",
         fg.most_normal_neighbours(c["stds"], summary, f"{name}: most normal width")),
        ("Shapiro-Wilk W versus width", fg.shapiro_vs_width(summary, f"{name}: Shapiro W")),
        ("total std versus width with a logarithmic fit",
         fg.total_std_vs_width(summary, f"{name}: total std")),
        ("dead neurons versus width", fg.dead_vs_width(summary, f"{name}: dead neurons")),
        ("test accuracy versus width (95% CI over seeds)",
         fg.accuracy_vs_width(summary, "test", f"{name}: test accuracy")),
        ("Shapiro W and test accuracy", fg.shapiro_and_accuracy(summary, "test", name)),
        ("metrics versus width: useless share by both mixtures, Shapiro W, accuracy and dead "
         "neurons (min-max normalised), turning points marked",
         fg.metrics_vs_width(summary, mix, turning_points(summary, mix), f"{name}: metrics")),
    ]
    keys = ["std_kde", "most_normal", "shapiro", "total_std", "dead", "accuracy",
            "shapiro_accuracy", "metrics"]
    return [(f"{name}: {cap}", fg.save(fig, out_dir, f"{run_id}-{key}")[0])
            for key, (cap, fig) in zip(keys, drawn, strict=True)]


def report_sections(store: Store | str, run_ids: list[str], out_dir) -> list:
    """Report sections: one per dataset, plus the side-by-side comparison when there are two."""
    from widthlab.metrics import plateau_shift
    from widthlab.report import figures as fg
    from widthlab.report.html import Section

    st = store if isinstance(store, Store) else Store(store)
    sections, summaries, stds = [], {}, {}
    for run_id in run_ids:
        summary = summarize(st, run_id)
        name = DATASET_NAMES.get(summary["dataset"].iloc[0], summary["dataset"].iloc[0])
        summaries[name], stds[name] = summary, collect(st, run_id)["stds"]
        cols = [c for c in ("width", "replicates", "shapiro_w", "shapiro_p", "total_std",
                            "dead", "dead_frac", "train_acc", "val_acc", "test_acc",
                            "test_acc_lo", "test_acc_hi") if c in summary.columns]
        sections.append(Section(
            title=f"Variance study: {name}",
            intro="One-hidden-layer ReLU MLPs of every width and seed trained together; "
                  "per-neuron activation std over the training set after the last epoch.",
            verdicts=[*verdicts(summary), turning_verdict(summary, collect(st, run_id))],
            figures=figures(st, run_id, out_dir),
            tables=[(f"{name}: per width", summary[cols])], runs=[st.get_run(run_id)]))
    if {"MNIST", "FashionMNIST"} <= set(summaries):
        pair = {k: summaries[k] for k in ("MNIST", "FashionMNIST")}
        fig = fg.datasets_side_by_side(pair, {k: stds[k] for k in pair})
        path = fg.save(fig, out_dir, "variance-mnist-vs-fashion")[0]
        sections.append(Section(
            title="Variance study: MNIST versus FashionMNIST",
            verdicts=[plateau_shift(pair["MNIST"], pair["FashionMNIST"], "MNIST",
                                    "FashionMNIST")],
            figures=[("accuracy plateaus and the std distribution at a common width", path)]))
    return sections


# ------------------------------------------------------------------------------ CLI
@click.command("variance")
@dataset_option
@profile_option("quick: widths 16..1448, 3 seeds, 2 epochs (minutes); full: the journal's "
                "16..11585, 11 seeds, 30 epochs.")
@click.option("--widths", default=None, help="Override: LO:HI (sqrt(2) steps) or a list.")
@click.option("--seeds", default=None, help="Override: a count (3) or a list (0,4,7).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override.")
@device_option
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True)
@click.option("--csv", "csv_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Also write each dataset's per-width table to DIR/ID.csv.")
@store_option
@quiet_option
def cli(dataset: str, profile: str, widths: str | None, seeds: str | None, epochs: int | None,
        device: str, precision: str, csv_dir: Path | None, store: Path, quiet: bool) -> None:
    """Width sweep with per-neuron statistics: Shapiro W of the activation stds, total std,
    dead neurons and accuracy per width (mean and 95% interval over seeds).

    Resumes an interrupted run and reuses a finished one. Prints one run id per dataset.
    """
    from widthlab.nn.widths import parse_widths
    from widthlab.report.console import print_frame

    for name in datasets_for(dataset):
        run_id = run(name, profile, store=store, widths=parse_widths(widths) if widths else None,
                     seeds=parse_seeds(seeds) if seeds else None, epochs=epochs,
                     device=device, precision=precision, progress=not quiet)
        table = summarize(store, run_id)
        if csv_dir is not None:
            from widthlab.store import write_frame
            write_frame(table, Path(csv_dir) / f"{run_id}.csv")
        if not quiet:
            cols = [c for c in ("width", "replicates", "shapiro_w", "total_std", "dead",
                                "test_acc") if c in table.columns]
            print_frame(table.round(4), cols, title=f"{name}: {run_id}")
        click.echo(run_id)
