"""The frontier study (the journal's open question, answered on its own sweep): how many
neurons does each trained layer of the variance study's width sweep need?

For every trained width, :func:`widthlab.frontier.width_frontier` removes the hidden neurons
one at a time with compensation of the output layer (no retraining) and records the test
accuracy at every kept width; the recommended width is the smallest within ``tol`` of the full
layer. The verdicts ask whether the frontier of an oversized network finds the width the sweep
itself needed (its accuracy plateau), whether the recommendation stays put as the trained
network gets wider, and whether FashionMNIST needs more neurons than MNIST.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from widthlab.store import Store
from widthlab.studies.base import (
    Figure,
    Section,
    StoredAnalysis,
    Study,
    Tables,
    Verdicts,
    display_name,
    ordered_datasets,
)
from widthlab.studies.frontier import analysis as an
from widthlab.studies.frontier import figures as ff
from widthlab.studies.frontier import verdicts as vd
from widthlab.studies.frontier.config import NAME, PROFILES, FrontierProfile
from widthlab.studies.tables import StudyTables, table, value

PAIR = "mnist-vs-fashion"
INTRO = ("Each trained network of the variance sweep is cut neuron by neuron: the output layer "
         "is refitted by least squares after every removal (greedy optimal-brain-surgeon "
         "elimination, float64), with no retraining. The recommended width is the smallest "
         "whose test accuracy is within the tolerance of the full layer; the sweep's own "
         "answer is its accuracy plateau (the narrowest trained width within the tolerance "
         "of the best).")


@dataclass(frozen=True, kw_only=True)
class FrontierTables(StudyTables):
    """One dataset's tables of the frontier study."""

    models: pd.DataFrame = table("model", "width", "seed", "full_acc",
                                 doc="one row per cut model; recommended_<method> columns")
    plateau: int = value("the width the sweep itself needed (its accuracy plateau)")
    sweep: pd.DataFrame = table("width", "test_acc", doc="the sweep's test accuracy per width")
    methods: tuple = value("the profile's elimination methods, the first one reported")
    curves: dict = value("trained width -> (k, test accuracy) of the first method")
    runs: list = value("the analysis run and its source run")


class FrontierStudy(Study):
    """How many neurons each trained layer of the width sweep needs: the exact width frontier
    (removal with compensation) against the sweep's own accuracy plateau."""

    name = NAME
    title = "How many neurons does this trained layer need?"
    journal_sections = ("Order neurons by importance", "Variance of the activations")
    journal = ("Planned: order the neurons by importance so that a cut drops the least "
               "important ones; the journal never found a metric that tells the right size.")
    requires = ("variance",)
    profiles = PROFILES
    journal_budget = ("never run; it cuts the variance sweep's models (journal: 20 widths x 11 "
                      "seeds, 30 epochs, all 60,000 training images)")
    print_columns = ("width", "seed", "full_acc", "recommended_obs")

    def experiments(self, profile: FrontierProfile, dataset: str) -> list:
        return [StoredAnalysis("frontiers", an.config, an.compute)]

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> Tables:
        out: Tables = {}
        for dataset, by_exp in runs.items():
            run_id = by_exp.get("frontiers") or next(iter(by_exp.values()))
            info = store.get_run(run_id)
            prof = FrontierProfile(**info["config"]["profile"])
            source = info["config"]["source_run"]
            plateau, sweep = an.sweep_plateau(store, source, prof.tol)
            out[dataset] = FrontierTables(
                models=an.model_table(store, run_id), plateau=plateau, sweep=sweep,
                methods=prof.methods, curves=an.curves(store, run_id, prof.methods[0]),
                runs=[run_id, source])
        return out

    def verdicts(self, tables: Tables) -> Verdicts:
        out: Verdicts = {}
        for d, t in tables.items():
            m = t["methods"][0]
            out[d] = [vd.finds_sweep_width(t["models"], t["plateau"], m),
                      vd.independent_of_size(t["models"], t["plateau"], m)]
        if {"mnist", "fashion-mnist"} <= set(tables):
            mn, fa = tables["mnist"], tables["fashion-mnist"]
            out[PAIR] = [vd.fashion_needs_more((mn["models"], mn["plateau"]),
                                               (fa["models"], fa["plateau"]), mn["methods"][0])]
        return out

    def sections(self, tables: Tables, verdicts: Verdicts) -> list[Section]:
        out = []
        for d in ordered_datasets(list(tables)):
            t, name = tables[d], display_name(d)
            out.append(Section(
                title=f"How many neurons does this trained layer need? {name}", intro=INTRO,
                verdicts=verdicts.get(d, []), run_ids=list(t["runs"]),
                figures=[Figure(f"{d}-recommended", f"{name}: recommended width per trained "
                                "width, and the sweep's plateau",
                                lambda t=t, name=name: ff.recommended(
                                    t["models"], t["plateau"], t["methods"], name)),
                         Figure(f"{d}-curves", f"{name}: test accuracy versus kept width "
                                "(cut, no retraining) and of networks trained at that width",
                                lambda t=t, name=name: ff.curves(t["curves"], t["sweep"],
                                                                 name))],
                tables=[(f"{name}: per trained model", t["models"].round(4))]))
        if PAIR in verdicts:
            out.append(Section(title="How many neurons: MNIST versus FashionMNIST",
                               verdicts=verdicts[PAIR]))
        return out

    def summary(self, tables: Tables) -> dict[str, pd.DataFrame]:
        return {f"frontier-{d}": t["models"].round(4) for d, t in tables.items()}


STUDY = FrontierStudy()
