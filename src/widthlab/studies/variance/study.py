"""The variance study (journal sections 1-3 and FashionMNIST): is the distribution of
per-neuron activation std a proxy for the right layer width? This module ties its parts into
the study contract:

- ``config``: the profiles and the one experiment (the width sweep);
- ``analysis``: per-width tables, mixture fits and turning points, from the store;
- ``verdicts``: the journal's claims; ``figures``: the drawings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from widthlab.store import Store
from widthlab.studies._plot import pick_widths
from widthlab.studies.base import (
    Figure,
    Section,
    Study,
    Tables,
    Verdicts,
    display_name,
    ordered_datasets,
)
from widthlab.studies.tables import StudyTables, table, value
from widthlab.studies.variance import analysis as an
from widthlab.studies.variance import figures as fg
from widthlab.studies.variance import verdicts as vd
from widthlab.studies.variance.config import EXPERIMENT, NAME, PROFILES, VarianceProfile, sweep

INTRO = ("One-hidden-layer ReLU MLPs of every width and seed trained together; per-neuron "
         "activation std over the training set after the last epoch.")
PAIR = "mnist-vs-fashion"
TABLE_COLUMNS = ("width", "replicates", "shapiro_w", "shapiro_p", "total_std", "dead",
                 "dead_frac", "train_acc", "val_acc", "test_acc", "test_acc_lo", "test_acc_hi")


@dataclass(frozen=True)
class VarianceTables(StudyTables):
    """One dataset's tables of the variance study."""

    run: str = value("the sweep's run id")
    stds: dict = value("width -> per-seed arrays of per-neuron activation std")
    summary: pd.DataFrame = table("width", "replicates", "shapiro_w", "total_std", "dead",
                                  "test_acc", doc="one row per width (means over seeds)")
    mixtures: pd.DataFrame = table("width", "gamma_useless", "expnormal_useless",
                                   doc="per width, the useless share by two mixtures")
    turning: dict = value("metric -> the width where it says oversized (None: never)")


def sweep_run(by_experiment: Mapping[str, str]) -> str:
    """The sweep's run id among one dataset's runs: a RunSet names it ``sweep``; the report
    (:func:`~widthlab.studies.base.newest`) keys it by its label ``variance``, which has no
    experiment part (``""``)."""
    return by_experiment[EXPERIMENT] if EXPERIMENT in by_experiment else by_experiment[""]


class VarianceStudy(Study):
    """Width sweep with per-neuron statistics: Shapiro W of the activation stds, total std,
    dead neurons and accuracy per width (mean and 95% interval over seeds), mixture fits and
    turning points. quick: widths 16..1448, 3 seeds, 2 epochs (minutes); full: the journal's
    16..11585, 11 seeds, 30 epochs. Resumes an interrupted run and reuses a finished one.
    """

    name = NAME
    title = "Variance study"
    journal_sections = ("Variance of activations as a proxy metric for network size",
                        "Find relationship between the distribution of activations and the "
                        "accuracy", "Run Multiple trainings to confirm results",
                        "Investigate mixture models",
                        "See if observations extrapolate on the Zalando MNIST dataset")
    journal = ("The distribution of the variance of activation seems to be a good proxy for "
               "network size; dead neurons show when a network is oversized; the Shapiro "
               "normality test peaks near the accuracy plateau but on average overestimates "
               "the optimal size. On FashionMNIST: the variance of activation does not seem to "
               "be a good candidate to estimate the size of a network in the general case.")
    profiles = PROFILES
    journal_budget = ("20 widths 16..11585 x 11 seeds, 30 epochs (15 in the first MNIST runs), "
                      "all 60,000 training images")
    print_columns = ("width", "replicates", "shapiro_w", "total_std", "dead", "test_acc")

    def experiments(self, profile: VarianceProfile, dataset: str) -> list:
        return [sweep(profile)]

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> Tables:
        out: Tables = {}
        for dataset, by_exp in runs.items():
            run_id = sweep_run(by_exp)
            c = an.collect(store, run_id)
            summary = an.summarize(store, run_id, c)
            mixtures = an.mixture_summary(c)
            out[dataset] = VarianceTables(run=run_id, stds=c["stds"], summary=summary,
                                          mixtures=mixtures,
                                          turning=an.turning_points(summary, mixtures))
        return out

    def verdicts(self, tables: Tables) -> Verdicts:
        out: Verdicts = {d: [*vd.dataset_verdicts(t.summary),
                             vd.turning_verdict(t.summary, t.turning)]
                         for d, t in tables.items()}
        if {"mnist", "fashion-mnist"} <= set(tables):
            out[PAIR] = [vd.datasets_verdict(tables["mnist"].summary,
                                             tables["fashion-mnist"].summary)]
        return out

    def sections(self, tables: Tables, verdicts: Verdicts) -> list[Section]:
        sections = [self._dataset_section(d, tables[d], verdicts.get(d, []))
                    for d in ordered_datasets(list(tables))]
        if PAIR in verdicts:  # its runs are shown in the two sections above
            pair = {display_name(d): tables[d] for d in ("mnist", "fashion-mnist")}
            sections.append(Section(
                title="Variance study: MNIST versus FashionMNIST", verdicts=verdicts[PAIR],
                figures=[Figure(PAIR, "accuracy plateaus and the std distribution at a common "
                                "width", lambda: fg.datasets_side_by_side(
                                    {k: t.summary for k, t in pair.items()},
                                    {k: t.stds for k, t in pair.items()}))]))
        return sections

    def _dataset_section(self, dataset: str, t: VarianceTables, verdicts: list) -> Section:
        name = display_name(dataset)
        s, stds = t.summary, t.stds
        drawn = [
            ("std_kde", "std distributions for selected widths (KDE, pooled over seeds)",
             lambda: fg.std_distributions(stds, pick_widths(list(stds)),
                                          f"{name}: neuron activation std")),
            ("most_normal", "the most normal width and its two neighbours",
             lambda: fg.most_normal_neighbours(stds, s, f"{name}: most normal width")),
            ("shapiro", "Shapiro-Wilk W versus width",
             lambda: fg.shapiro_vs_width(s, f"{name}: Shapiro W")),
            ("total_std", "total std versus width with a logarithmic fit",
             lambda: fg.total_std_vs_width(s, f"{name}: total std")),
            ("dead", "dead neurons versus width",
             lambda: fg.dead_vs_width(s, f"{name}: dead neurons")),
            ("accuracy", "test accuracy versus width (95% CI over seeds)",
             lambda: fg.accuracy_vs_width(s, "test", f"{name}: test accuracy")),
            ("shapiro_accuracy", "Shapiro W and test accuracy",
             lambda: fg.shapiro_and_accuracy(s, "test", name)),
            ("metrics", "metrics versus width: useless share by both mixtures, Shapiro W, "
             "accuracy and dead neurons (min-max normalised), turning points marked",
             lambda: fg.metrics_vs_width(s, t.mixtures, t.turning, f"{name}: metrics")),
        ]
        cols = [c for c in TABLE_COLUMNS if c in s.columns]
        return Section(title=f"Variance study: {name}", intro=INTRO, verdicts=verdicts,
                       figures=[Figure(f"{dataset}-{key}", f"{name}: {cap}", draw)
                                for key, cap, draw in drawn],
                       tables=[(f"{name}: per width", s[cols])], run_ids=[t.run])

    def summary(self, tables: Tables) -> dict[str, pd.DataFrame]:
        """Each dataset's per-width table, named by its run id (``--csv DIR`` writes
        ``DIR/<run id>.csv``)."""
        return {t.run: t.summary for t in tables.values()}


STUDY = VarianceStudy()
