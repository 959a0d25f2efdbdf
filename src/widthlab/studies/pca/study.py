"""The PCA study (journal: "Investigate PCA based metrics for layer size", and its conjecture):
how many dimensions does a hidden layer really use?

It reads the variance study's trained width sweep (``requires``: ``widthlab study pca`` and
``widthlab reproduce`` run the variance study first). The profiles are in
:mod:`~widthlab.studies.pca.config`, the conjecture's noise task in
:mod:`~widthlab.studies.pca.teacher`, the stored analysis in
:mod:`~widthlab.studies.pca.analysis`, the tables in :mod:`~widthlab.studies.pca.tables`, the
claims in :mod:`~widthlab.studies.pca.verdicts` and the drawings in
:mod:`~widthlab.studies.pca.figures`; this module ties them into the study contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch

from widthlab.metrics.variance import accuracy_plateau
from widthlab.store import Store
from widthlab.studies.base import (
    Derived,
    Figure,
    Section,
    StoredAnalysis,
    Study,
    Tables,
    Verdicts,
    display_name,
    ordered_datasets,
)
from widthlab.studies.pca import analysis as an
from widthlab.studies.pca import figures as fp
from widthlab.studies.pca import tables as tb
from widthlab.studies.pca import verdicts as vd
from widthlab.studies.pca.config import NAME, PROFILES, SOURCE_STUDY, PCAProfile
from widthlab.studies.pca.teacher import conjecture_experiment, teacher_and_task
from widthlab.studies.tables import StudyTables, table, value

ANALYSIS = "analysis"
PAIR = "mnist-vs-fashion"


def analysis_run(by_experiment: Mapping[str, str]) -> str | None:
    """The analysis run among one dataset's runs: a RunSet names it ``analysis``; the report
    (:func:`~widthlab.studies.base.newest`) keys it by its label ``pca`` (``""``). None for
    the conjecture's own "dataset" (its noise task), which has no analysis."""
    return by_experiment.get(ANALYSIS) or by_experiment.get("")


def conjecture_tables(st: Store, d: dict) -> dict | None:
    """The conjecture's numbers for a loaded analysis: the noise sweep's accuracy per width,
    the teacher's width and its accuracy on its own task (recomputed, not assumed)."""
    conj = d["conjecture_run"]
    if not conj or st.get_run(conj) is None:
        return None
    teacher, task = teacher_and_task(st, d["source"], PCAProfile(**d["info"]["config"]
                                                                 ["profile"]))
    with torch.no_grad():
        teacher_acc = float((teacher(task.test.x).argmax(1) == task.test.y).double().mean())
    return {"run": conj, "noise": tb.conjecture_accuracy(st, conj),
            "teacher_width": int(teacher.sizes[1]), "teacher_acc": teacher_acc}


@dataclass(frozen=True, kw_only=True)
class PCATables(StudyTables):
    """One dataset's tables of the PCA study."""

    run: str = value("the analysis run")
    d: dict = value("the loaded analysis (tables.load): info, source, curves, spectra...")
    per_width: pd.DataFrame = table("width", "n90", "n95", "n99", "participation_ratio",
                                    "k_recon", "test_acc", doc="one row per trained width")
    plateau: int = value("the accuracy plateau's width of the source sweep")
    conjecture: dict | None = value("the conjecture's noise sweep (None: not run)",
                                    optional=True)
    runs: list = value("the analysis, its source run and the conjecture's run")


class PCAStudy(Study):
    """PCA of the hidden pre-activations of the variance study's width sweep: spectra,
    components for 90/95/99%, participation ratio, reconstruction distance and accuracy versus
    k, and the journal's conjecture (a width sweep on a noise task labelled by one undersized
    model). quick: seed 0 of the quick sweep, covariance over 10,000 training images, a small
    conjecture sweep; full: every seed of the full sweep over the whole training split.
    """

    name = NAME
    title = "PCA of pre-activations"
    journal_sections = ("Investigate PCA based metrics for layer size",)
    journal = ("It really looks like there is nothing we can extract from all these metrics "
               "based on the PCA of the activations. Conjecture: there is no metric that takes "
               "information about a layer and determines if it is oversized, undersized or "
               "properly sized.")
    requires = (SOURCE_STUDY,)
    profiles = PROFILES
    journal_budget = ("the variance sweep's models (20 widths x 11 seeds, 30 epochs, all 60,000 "
                      "training images); the conjecture was argued, never trained")

    def experiments(self, profile: PCAProfile, dataset: str) -> list:
        return [Derived("conjecture", conjecture_experiment),
                StoredAnalysis(ANALYSIS, an.config, an.analyse)]

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> Tables:
        out: Tables = {}
        for dataset, by_exp in runs.items():
            run_id = analysis_run(by_exp)
            if run_id is None:
                continue
            d = tb.load(store, run_id)
            conj = conjecture_tables(store, d)
            out[dataset] = PCATables(
                run=run_id, d=d, per_width=tb.per_width(d),
                plateau=accuracy_plateau(d["source_accuracy"].width,
                                         d["source_accuracy"].test_acc),
                conjecture=conj, runs=[run_id, d["source"], *([conj["run"]] if conj else [])])
        return out

    def verdicts(self, tables: Tables) -> Verdicts:
        out: Verdicts = {}
        for dataset, t in tables.items():
            out[dataset] = [vd.monotone_verdict(t["d"]["curves"])]
            if t["conjecture"]:
                c = t["conjecture"]
                out[dataset].append(vd.conjecture_verdict(
                    t["d"]["source_accuracy"], c["noise"], c["teacher_width"], c["teacher_acc"]))
        if {"mnist", "fashion-mnist"} <= set(tables):
            out[PAIR] = [vd.separation_verdict(tables["mnist"]["per_width"],
                                               tables["fashion-mnist"]["per_width"])]
        return out

    def sections(self, tables: Tables, verdicts: Verdicts) -> list[Section]:
        sections = [self._dataset_section(d, tables[d], verdicts.get(d, []))
                    for d in ordered_datasets(list(tables))]
        if PAIR in verdicts:  # its runs are shown in the two sections above
            sections.append(Section(title="PCA: MNIST versus FashionMNIST",
                                    verdicts=verdicts[PAIR]))
        return sections

    def _dataset_section(self, dataset: str, t: dict, verdicts: list) -> Section:
        name, d, summ, conj = display_name(dataset), t["d"], t["per_width"], t["conjecture"]
        drawn = [
            ("spectra", "explained variance per component, selected widths",
             lambda: fp.spectra(d, f"{name}: PCA spectra")),
            ("distance", "reconstruction distance versus k",
             lambda: fp.recon_curves(d, "recon_dist", "mean ||z - proj_k z||",
                                     f"{name}: reconstruction distance")),
            ("recon_acc", "reconstruction accuracy versus k (test set)",
             lambda: fp.recon_curves(d, "recon_acc", "test accuracy",
                                     f"{name}: reconstruction accuracy")),
            ("effective_dim", "effective dimension versus width, accuracy plateau marked",
             lambda: fp.effective_dimension(summ, t["plateau"], f"{name}: effective dimension")),
        ]
        if conj:
            drawn.append(("conjecture", "the conjecture: accuracy versus width on the image "
                          "task and on the noise task labelled by the teacher",
                          lambda: fp.conjecture(d["source_accuracy"], conj["noise"],
                                                conj["teacher_width"], f"{name}: conjecture")))
        return Section(
            title=f"PCA of pre-activations: {name}",
            intro="Covariance of the hidden pre-activations streamed in float64 over training "
                  f"images ({d['info']['config']['cov_samples']}), eigendecomposed per model; "
                  "reconstruction on the test set. Journal conclusion: nothing in these "
                  "PCA metrics explains the size difference between the datasets.",
            verdicts=verdicts, tables=[(f"{name}: per width", summ.round(4))],
            figures=[Figure(f"{dataset}-{key}", f"{name}: {cap}", draw)
                     for key, cap, draw in drawn],
            run_ids=t["runs"])

    def summary(self, tables: Tables) -> dict[str, pd.DataFrame]:
        """Each dataset's per-width table, named by its analysis run id."""
        return {t["run"]: t["per_width"] for t in tables.values()}


STUDY = PCAStudy()
