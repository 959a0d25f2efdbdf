"""The sparsifier study (journal: "Try to break the plateau" and "Implement the first version of
a Sparsifier Network"): let gradient descent decide which neurons live.

Every hidden neuron gets a gate ``relu(g)`` (``g`` starts at 1) and the loss gets
``price * sum(relu(g))`` (:class:`widthlab.nn.gated.SparsifierGate`); a neuron whose gate
reaches 0 is dead, and the engine removes it for real after every epoch. The experiments are in
:mod:`~widthlab.studies.sparsifier.config`, the tables in
:mod:`~widthlab.studies.sparsifier.analysis`, the claims in
:mod:`~widthlab.studies.sparsifier.verdicts` and the drawings in
:mod:`~widthlab.studies.sparsifier.figures`; this module ties them into the study contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from widthlab.store import Store
from widthlab.studies.base import (
    Derived,
    Figure,
    Section,
    Study,
    Tables,
    Verdicts,
    display_name,
    ordered_datasets,
)
from widthlab.studies.sparsifier import analysis as an
from widthlab.studies.sparsifier import figures as fs
from widthlab.studies.sparsifier import verdicts as vd
from widthlab.studies.sparsifier.config import (
    EXPERIMENTS,
    NAME,
    PROFILES,
    SparsifierProfile,
    experiment,
)
from widthlab.studies.sparsifier.references import static_experiment
from widthlab.studies.tables import StudyTables, table, value

SUMMARY = ("dataset", "experiment", "model", "price", "start", "seed", "width", "train_acc",
           "test_acc", "static_test_acc")
CURVES = ("model", "epoch", "price", "start", "seed", "alive_width", "test_acc")


@dataclass(frozen=True, kw_only=True)
class SparsifierTables(StudyTables):
    """One dataset's tables of the sparsifier study (an experiment not run: None)."""

    runs: list = value("the sparsifier runs and their static reference run")
    sweep: pd.DataFrame = table(*SUMMARY, optional=True, doc="price sweep, one row per model")
    sweep_curves: pd.DataFrame = table(*CURVES, optional=True, doc="per model and epoch")
    start: pd.DataFrame = table(*SUMMARY, optional=True, doc="start widths, one row per model")
    start_curves: pd.DataFrame = table(*CURVES, optional=True, doc="per model and epoch")
    gate_kind: str = value("the gate kind of the runs (l1, hard_concrete)", optional=True)

INTRO = ("Every hidden neuron is multiplied by a learned gate relu(g), g starting at 1, under "
         "the penalty price * sum(relu(g)); neurons whose gate reaches 0 are removed from the "
         "network after each epoch. Static references: plain networks of each final width, "
         "trained the same way.")
PAIR = "mnist-vs-fashion"


class SparsifierStudy(Study):
    """Per-neuron gates under an L1 penalty, dead neurons removed after each epoch."""

    name = NAME
    title = "Sparsifier networks"
    journal_sections = ("Try to break the plateau", "Implement the first version of a "
                        "Sparsifier Network")
    profiles = PROFILES
    journal_budget = ("start width 500, one model per L1 factor, 60 epochs, all 60,000 training "
                      "images; seeds not stated; the starting-size question never run")

    def experiments(self, profile: SparsifierProfile, dataset: str) -> list:
        return [*(experiment(e, profile) for e in EXPERIMENTS),
                Derived("static", static_experiment)]

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> Tables:
        out: Tables = {}
        for dataset, by_exp in runs.items():
            t: dict = {"runs": []}
            for exp, key in (("lambda-sweep", "sweep"), ("start-width", "start")):
                if exp in by_exp:
                    t[key] = an.summarize(store, by_exp[exp])
                    t[f"{key}_curves"] = an.curves(store, by_exp[exp])
                    t["runs"].append(by_exp[exp])
            first = by_exp.get("lambda-sweep") or by_exp.get("start-width")
            t["gate_kind"] = an.gate_kind(store, first) if first else "l1"
            if first:
                t["runs"] += an.static_runs(store, first)[:1]
            out[dataset] = SparsifierTables(**t)
        return out

    def verdicts(self, tables: Tables) -> Verdicts:
        out: Verdicts = {}
        for dataset, t in tables.items():
            out[dataset] = ([vd.sparsifier_vs_static(t["sweep"])] if "sweep" in t else []) + \
                ([vd.start_width_matters(t["start"])] if "start" in t else [])
        if all("sweep" in tables.get(d, {}) for d in ("mnist", "fashion-mnist")):
            kinds = (tables["mnist"].get("gate_kind", "l1"),
                     tables["fashion-mnist"].get("gate_kind", "l1"))
            out[PAIR] = [vd.fashion_keeps_more(tables["mnist"]["sweep"],
                                               tables["fashion-mnist"]["sweep"], kinds=kinds)]
        return out

    def sections(self, tables: Tables, verdicts: Verdicts) -> list[Section]:
        sections = [self._dataset_section(d, tables[d], verdicts.get(d, []))
                    for d in ordered_datasets(list(tables))]
        if PAIR in verdicts:
            pair = {"MNIST": tables["mnist"]["sweep"],
                    "FashionMNIST": tables["fashion-mnist"]["sweep"]}
            sections.append(Section(
                title="Sparsifier networks: MNIST versus FashionMNIST", verdicts=verdicts[PAIR],
                figures=[Figure("mnist-vs-fashion", "final alive width per price on both "
                                "datasets", lambda: fs.datasets_widths(pair))],
                run_ids=tables["mnist"]["runs"][:1] + tables["fashion-mnist"]["runs"][:1]))
        return sections

    def _dataset_section(self, dataset: str, t: dict, verdicts: list) -> Section:
        name = display_name(dataset)
        figs, frames = [], []
        if "sweep" in t:
            figs += [Figure(f"{dataset}-sweep", f"{name}: final alive width and accuracy per "
                            "price, against a static network of the same width",
                            lambda: fs.lambda_sweep(t["sweep"], f"{name}: price sweep")),
                     Figure(f"{dataset}-curves", f"{name}: training curves per price: test "
                            "accuracy and alive width per epoch",
                            lambda: fs.training_curves(t["sweep_curves"], f"{name}: training"))]
            frames.append((f"{name}: per price (mean over seeds)",
                           an.per_price(t["sweep"]).round(4)))
        if "start" in t:
            figs.append(Figure(f"{dataset}-start", f"{name}: final alive width against "
                               "starting width, and alive width per epoch",
                               lambda: fs.start_width(t["start"], t["start_curves"],
                                                      f"{name}: starting width")))
            frames.append((f"{name}: per starting width and price",
                           an.per_price(t["start"]).round(4)))
        return Section(title=f"Sparsifier networks: {name}", intro=INTRO, verdicts=verdicts,
                       figures=figs, tables=frames, run_ids=list(t["runs"]))

    def summary(self, tables: Tables) -> dict[str, pd.DataFrame]:
        out = {}
        for dataset, t in tables.items():
            for key, exp in (("sweep", "lambda-sweep"), ("start", "start-width")):
                if key in t:
                    out[f"sparsifier-{dataset}-{exp}"] = an.per_price(t[key]).round(4)
        return out


STUDY = SparsifierStudy()
