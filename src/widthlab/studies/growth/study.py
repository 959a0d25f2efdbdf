"""The growth study (journal: "Try to break the plateau", "Sparsifier Network" and its open
questions, "how to know when to add new neurons" and "what size to start with"): a layer that
adds neurons while they pay for themselves and removes them when they do not, under one price
per neuron, from starts 8 to 2048. The plain sparsifier (``init="none"``) trains in the same
fused run; static networks of every final width are the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
from widthlab.studies.growth import analysis as an
from widthlab.studies.growth import figures as fg
from widthlab.studies.growth import verdicts as vd
from widthlab.studies.growth.config import NAME, PROFILES, GrowthProfile, experiment
from widthlab.studies.growth.references import static_experiment
from widthlab.studies.tables import StudyTables, table, value

PAIR = "mnist-vs-fashion"
INTRO = ("Every model starts at its width; every few steps it measures the exact removal cost "
         "of each of its mature units on recent batches and compares the median with the price "
         "price per unit (the benefit rule): above it the model adds units (GradMax-style or "
         "random incoming weights, zero outgoing ones), below it removes its cheapest; the plain "
         "sparsifier (init none: gates relu(g) charged price * sum(relu(g)), no growth) trains "
         "alongside. All starts, prices and initialisations train in one fused run; static "
         "networks of each final width are the reference.")
CSV_COLUMNS = ["start_width", "price", "seed", "init", "final_width", "test_acc", "train_flops"]


@dataclass(frozen=True)
class GrowthTables(StudyTables):
    """One dataset's tables of the growth study."""

    models: pd.DataFrame = table(*CSV_COLUMNS, "model", "status", "static_acc",
                                 doc="one row per model, its static reference's accuracy")
    spreads: pd.DataFrame = table(*an.SPREAD_COLUMNS, doc="per initialisation and price")
    curves: pd.DataFrame = table("model", "epoch", "width", "init", "price", "start_width",
                                 doc="width per epoch of every model")
    runs: list = value("the growth run and its static reference run")
    gate_kind: str = field(default="l1", metadata={
        "doc": "the gate kind of the growth run (l1, hard_concrete)"})


class GrowthStudy(Study):
    """A layer that grows and shrinks to the same width from any start, under one price."""

    name = NAME
    title = "Growing and shrinking to one width"
    journal_sections = ("Try to break the plateau", "Implement the first version of a "
                        "Sparsifier Network")
    journal = ("Open questions: how to know when to add new neurons, and does the starting size "
               "influence the size after convergence?")
    profiles = PROFILES
    journal_budget = ("never run (open questions); the sparsifier it extends: start 500, 60 "
                      "epochs, all 60,000 training images")
    print_columns = ("init", "price", "mean_width", "spread", "test_acc", "static_acc")

    def experiments(self, profile: GrowthProfile, dataset: str) -> list:
        return [experiment(profile), Derived("static", static_experiment)]

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> Tables:
        out: Tables = {}
        for dataset, by_exp in runs.items():
            run_id = by_exp.get("grow") or next(iter(by_exp.values()))
            static = an.static_runs(store, run_id)[:1]
            models = an.models_table(store, run_id, static[0] if static else None)
            out[dataset] = GrowthTables(models=models, spreads=an.spreads(models),
                                        curves=an.width_curves(store, run_id),
                                        runs=[run_id, *static],
                                        gate_kind=an.gate_kind(store, run_id))
        return out

    def verdicts(self, tables: Tables) -> Verdicts:
        out: Verdicts = {d: [vd.same_width_from_any_start(t.spreads),
                             vd.as_good_as_static(t.models),
                             vd.growing_is_cheaper(t.models)] for d, t in tables.items()}
        if {"mnist", "fashion-mnist"} <= set(tables):
            kinds = (tables["mnist"].gate_kind, tables["fashion-mnist"].gate_kind)
            out[PAIR] = [vd.fashion_ends_wider(tables["mnist"].spreads,
                                               tables["fashion-mnist"].spreads, kinds=kinds)]
        return out

    def sections(self, tables: Tables, verdicts: Verdicts) -> list[Section]:
        out = []
        for d in ordered_datasets(list(tables)):
            t, name = tables[d], display_name(d)
            out.append(Section(
                title=f"Growing and shrinking to one width: {name}", intro=INTRO,
                verdicts=verdicts.get(d, []), run_ids=list(t.runs),
                figures=[Figure(f"{d}-widths", f"{name}: width per epoch from every start",
                                lambda t=t, name=name: fg.width_per_epoch(t.curves, name)),
                         Figure(f"{d}-final", f"{name}: final width against the start",
                                lambda t=t, name=name: fg.final_widths(t.models, name))],
                tables=[(f"{name}: per initialisation and price", t.spreads.round(4))]))
        if PAIR in verdicts:
            out.append(Section(title="Growing and shrinking: MNIST versus FashionMNIST",
                               verdicts=verdicts[PAIR]))
        return out

    def summary(self, tables: Tables) -> dict[str, pd.DataFrame]:
        """``growth-<dataset>``: one row per model (``--csv DIR`` writes
        ``DIR/growth-<dataset>.csv``), and the per-price spreads."""
        out = {}
        for d, t in tables.items():
            out[f"growth-{d}"] = t.models[CSV_COLUMNS]
            out[f"growth-{d}-spreads"] = t.spreads.round(4)
        return out


STUDY = GrowthStudy()
