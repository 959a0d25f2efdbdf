"""The lenet study (journal: "Implement the first version of a Sparsifier Network", taken to
deeper networks; issue 17): the sparsifier's gates on LeNet-300-100 and LeNet-5-Caffe, written
as plain ``nn.Module`` s, against the published learned-width rows and against pruning after
training.

Each network is gated as the papers count widths (:func:`widthlab.nn.lenet.build_lenet`),
trained at every price of the profile as an ordinary
:class:`~widthlab.studies.base.ModuleExperiment` (the one trainer and run lifecycle) and shrunk
after every epoch; a row is the widths after the last epoch and the **final-epoch** test error.
The same network trained without gates and cut by :func:`widthlab.frontier.cut_layers` (then
one epoch of fine-tuning) is the comparison. The steps are in
:mod:`~widthlab.studies.lenet.compute`; the tables, verdicts and figures read the store only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from widthlab.store import Store
from widthlab.studies.base import (
    Figure,
    Section,
    Study,
    Tables,
    Verdicts,
    display_name,
    ordered_datasets,
)
from widthlab.studies.lenet import analysis as an
from widthlab.studies.lenet import figures as fg
from widthlab.studies.lenet import verdicts as vd
from widthlab.studies.lenet.compute import MANIFEST, steps
from widthlab.studies.lenet.config import HC, L1, NAME, PROFILES, LenetProfile
from widthlab.studies.lenet.references import published_frame
from widthlab.studies.tables import StudyTables, table, value

PUBLISHED_ON = "mnist"  # the published rows are MNIST's
INTRO = ("LeNet-300-100 (gates on the input features of its three Linears: the 784 pixels, "
         "the 300 and the 100 units) and LeNet-5-Caffe (gates on both convs' channels and both "
         "Linears' input features), written as plain nn.Modules, are trained under an L1 price "
         "on the gates relu(g); dead units are removed from the layer, every consumer and the "
         "optimizer state after each epoch, and the price is off for the last third of the "
         "epochs. A row is the widths after the last epoch and the final-epoch test error; "
         "weights are computed from the widths the same way for every row (conv in*out*25, "
         "Linear in*out, no biases). The comparison: the same network trained without gates, "
         "then cut by width_frontier layer by layer (every Linear with one consumer Linear) "
         "and fine-tuned for one epoch.")
INTRO_HC = (" Beside them, the same networks with hard-concrete gates (Louizos et al. 2018, "
            "the L0 row's method): per unit log_alpha, a seeded sample z = clamp(sigmoid((log u "
            "- log(1 - u) + log_alpha) / (2/3)) * 1.2 - 0.1, 0, 1) per minibatch in training, "
            "clamp(sigmoid(log_alpha) * 1.2 - 0.1, 0, 1) in evaluation, priced by the expected "
            "L0 norm sigmoid(log_alpha - (2/3) log(0.1 / 1.1)) (per weight the unit gates), a "
            "unit removed when its evaluation gate is exactly 0. The published rows report "
            "their best epoch, widthlab's the final epoch.")


def gate_kinds(rows: pd.DataFrame) -> list[str]:
    """The gate kinds with rows: always ``"l1"`` (its verdicts say when it has none), then
    ``"hard_concrete"`` when stored."""
    hc = "gate_kind" in rows and bool((rows.gate_kind == HC).any())
    return [L1, HC] if hc else [L1]


@dataclass(frozen=True, kw_only=True)
class LenetTables(StudyTables):
    """One dataset's tables of the LeNet study (``rows`` and ``curves`` have no rows, nor
    columns, when no network could be trained on the dataset)."""

    rows: pd.DataFrame = table(doc="one row per result (network x method x price)")
    curves: pd.DataFrame = table(doc="per run and epoch")
    notes: list = value("networks not trained, and why")
    budget: str = value("what was trained")
    runs: list = value("the manifest and the unit runs")
    # last: from here on the class body's name ``table`` is this field, not the function
    table: pd.DataFrame = table(*an.ROW_COLUMNS, doc="the published rows, then widthlab's")


class LenetStudy(Study):
    """Learned widths of LeNet-300-100 and LeNet-5-Caffe, against the published rows and
    against pruning after training."""

    name = NAME
    title = "Learned widths of deeper networks: LeNet-300-100 and LeNet-5-Caffe"
    journal_sections = ("Implement the first version of a Sparsifier Network",)
    journal_budget = ("never run (the journal's sparsifier: one hidden layer, start 500, 60 "
                      "epochs, all 60,000 training images); the published rows train the "
                      "whole 60,000 images for far more epochs (their papers' settings)")
    profiles = PROFILES
    print_columns = ("network", "method", "widths", "weights", "error")

    def experiments(self, profile: LenetProfile, dataset: str) -> list:
        return steps(profile)

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> Tables:
        out: Tables = {}
        for dataset, by_exp in runs.items():
            units = an.unit_runs(store, by_exp)
            read = an.read_runs(store, units)
            listed = [by_exp[MANIFEST]] if MANIFEST in by_exp else []
            out[dataset] = LenetTables(**read, table=an.rows_table(read["rows"],
                                                                    dataset == PUBLISHED_ON),
                                       budget=an.budget(store, units),
                                       runs=[*listed, *units.values()])
        return out

    def verdicts(self, tables: Tables) -> Verdicts:
        out: Verdicts = {}
        for d, t in tables.items():
            rows = t["rows"]
            kinds = gate_kinds(rows) if d == PUBLISHED_ON else []
            mine = [v for k in kinds
                    for v in (vd.lenet300_target(rows, k), vd.lenet5_target(rows, k))]
            out[d] = [*mine, vd.shrinking_is_cheaper(rows), vd.gates_beat_the_cut(rows),
                      *(vd.published_reached(rows, k) for k in kinds)]
        return out

    def sections(self, tables: Tables, verdicts: Verdicts) -> list[Section]:
        out = []
        for d in ordered_datasets(list(tables)):
            t, name = tables[d], display_name(d)
            pub = published_frame() if d == PUBLISHED_ON else None
            notes = " ".join(f"Not trained: {n}." for n in t["notes"])
            where = ("" if pub is not None else " The published rows are MNIST's; here the "
                     "curve alone.")
            hc = INTRO_HC if HC in gate_kinds(t["rows"]) else ""
            out.append(Section(
                title=f"Learned widths of LeNet-300-100 and LeNet-5-Caffe: {name}",
                intro=INTRO + hc + where + (f" {notes}" if notes else ""),
                verdicts=verdicts.get(d, []), run_ids=list(t["runs"]), budget=t["budget"],
                figures=[Figure(f"{d}-error-width", f"{name}: final-epoch test error against "
                                "total width" + (", with the published rows" if pub is not None
                                                 else ""),
                                lambda t=t, pub=pub, name=name: fg.error_vs_width(
                                    t["rows"], pub, name)),
                         Figure(f"{d}-epochs", f"{name}: total width and training seconds "
                                "per epoch", lambda t=t, name=name: fg.per_epoch(
                                    t["curves"], name))],
                tables=[(f"{name}: learned widths" + (" against the published rows"
                                                      if pub is not None else ""),
                         t["table"].round(3)),
                        (f"{name}: training seconds of the first and the last epoch, "
                         "parameters after each", an.runs_table(t["rows"])
                         .round(3))]))
        return out

    def summary(self, tables: Tables) -> dict[str, pd.DataFrame]:
        """``lenet-<dataset>``: the rows (published ones on MNIST) with their weights."""
        return {f"lenet-{d}": t["table"].round(3) for d, t in tables.items()}


STUDY = LenetStudy()
