"""The ordering-stability study (journal: "Evaluate the stability of these orderings at
training time"): how much does each neuron ordering move while a model trains, and is any of
them steady enough to drive a sorted cut-off layer?

Steps: the stability run (:func:`~widthlab.studies.ordering.config.stability_experiment`:
the importance hook with ``record="all"`` stores every ordering's scores after every epoch)
and one run per sorted-layer variant (the sorted flexible layer such an ordering would drive,
against the plain flexible layer and the sparsifier at matched width). Reading the records
(:mod:`~widthlab.studies.ordering.analysis`), judging them
(:mod:`~widthlab.studies.ordering.verdicts`) and drawing them
(:mod:`~widthlab.studies.ordering.figures`) happen apart; :class:`OrderingStudy` wires the
steps, tables, verdicts and report sections together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from widthlab.store import Store
from widthlab.studies import base
from widthlab.studies.base import Figure, Section, Study, display_name, ordered_datasets
from widthlab.studies.ordering import analysis as an
from widthlab.studies.ordering import figures as fg
from widthlab.studies.ordering import verdicts as vd
from widthlab.studies.ordering.config import (
    NAME,
    PROFILES,
    STABILITY,
    VARIANT_PREFIX,
    VARIANTS,
    OrderingProfile,
    stability_experiment,
    variant_experiment,
)
from widthlab.studies.tables import StudyTables, table, value

STABILITY_INTRO = ("Every ordering (exact importance on the validation split, and each proxy) "
                   "recorded after every epoch; consecutive records compared.")
SORTED_INTRO = ("The journal's first remedy: the flexible cut-off applied to each neuron's rank "
                "in an importance ordering (re-sorted every few steps), against the plain "
                "cut-off over the neuron index and the sparsifier's gates, all starting at the "
                "same width with the same price per neuron.")
SORTED = ":sorted"  # verdict key suffix of a dataset's sorted-layer comparison


def _variant_runs(by_exp: Mapping[str, str]) -> list[str]:
    """The variant runs among one dataset's runs, in :data:`VARIANTS` order."""
    order = {VARIANT_PREFIX + v: i for i, v in enumerate(VARIANTS)}
    names = [e for e in by_exp if e.startswith(VARIANT_PREFIX)]
    return [by_exp[e] for e in sorted(names, key=lambda e: (order.get(e, len(order)), e))]


@dataclass(frozen=True, kw_only=True)
class OrderingTables(StudyTables):
    """One dataset's tables of the ordering study; the stability tables are None without the
    stability run, the sorted ones without variant runs."""

    stability_run: str | None = value("the stability run", optional=True)
    series: pd.DataFrame = table("model", "width", "seed", "ordering", "step", "kendall_tau",
                                 "topk_churn", optional=True,
                                 doc="per model x ordering x consecutive pair of epochs")
    fidelity: pd.DataFrame = table("model", "width", "proxy", "epoch", "kendall",
                                   optional=True, doc="per model x proxy x epoch")
    summary: pd.DataFrame = table("ordering", "kendall_tau", "topk_churn", "tau_with_exact",
                                  "stable", "faithful", optional=True, doc="per ordering")
    sorted_runs: list | None = value("the variant runs", optional=True)
    sorted: pd.DataFrame = table("variant", "penalty", "seed", "start", "width", "test_acc",
                                 "run_id", optional=True, doc="per model of the variant runs")


class OrderingStudy(Study):
    """Stability of neuron orderings during training: every ordering recorded each epoch,
    consecutive records compared (Kendall tau, swaps, displacement, top-k churn); and the
    sorted flexible layer those orderings would drive (--experiment stability skips it)."""

    name = NAME
    command = "ordering-stability"
    title = "Ordering stability"
    journal_sections = ("Evaluate the stability of these orderings at training time",)
    profiles = PROFILES
    journal_budget = "planned, never run"

    def experiments(self, profile: OrderingProfile, dataset: str) -> list:
        return [stability_experiment(profile),
                *(variant_experiment(v, profile) for v in profile.variants)]

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> base.Tables:
        out: base.Tables = {}
        for dataset, by_exp in runs.items():
            t: dict = {}
            if STABILITY in by_exp:
                run_id = by_exp[STABILITY]
                t["stability_run"] = run_id
                t["series"] = an.stability_table(store, run_id)
                t["fidelity"] = an.fidelity_table(store, run_id)
                t["summary"] = an.stability_summary(t["series"], t["fidelity"])
            variants = _variant_runs(by_exp)
            if variants:
                t["sorted_runs"] = variants
                t["sorted"] = an.sorted_table(store, variants)
            if t:
                out[dataset] = OrderingTables(**t)
        return out

    def verdicts(self, tables: base.Tables) -> base.Verdicts:
        out: base.Verdicts = {}
        for dataset, t in tables.items():
            if "summary" in t:
                out[dataset] = [vd.sorted_layer_verdict(t["summary"]),
                                vd.exact_stability_verdict(t["summary"])]
            if "sorted" in t:
                out[dataset + SORTED] = [vd.sorted_verdict(t["sorted"])]
        return out

    def sections(self, tables: base.Tables, verdicts: base.Verdicts) -> list[Section]:
        datasets = ordered_datasets(list(tables))
        return [*(self._stability_section(d, tables[d], verdicts.get(d, []))
                  for d in datasets if "summary" in tables[d]),
                *(self._sorted_section(d, tables[d], verdicts.get(d + SORTED, []))
                  for d in datasets if "sorted" in tables[d])]

    def _stability_section(self, dataset: str, t: OrderingTables, verdicts: list) -> Section:
        name = display_name(dataset)
        figs = [Figure(f"{dataset}-stability", f"{name}: stability of each ordering between "
                       "consecutive epochs (mean over models)",
                       lambda: fg.stability_curves(t["series"], f"{name}: ordering stability")),
                Figure(f"{dataset}-fidelity", f"{name}: agreement of each proxy with the exact "
                       "order during training",
                       lambda: fg.fidelity_curves(t["fidelity"], f"{name}: proxies vs exact "
                                                                 "while training"))]
        return Section(title=f"Ordering stability: {name}", intro=STABILITY_INTRO,
                       verdicts=verdicts, figures=figs,
                       tables=[(f"{name}: second half of training, mean over models",
                                t["summary"])],
                       run_ids=[t["stability_run"]])

    def _sorted_section(self, dataset: str, t: OrderingTables, verdicts: list) -> Section:
        name = display_name(dataset)
        table = t["sorted"]
        fig = Figure(f"{dataset}-sorted", f"{name}: test accuracy against effective width, one "
                     "point per model",
                     lambda: fg.sorted_tradeoff(table, f"{name}: sorted vs plain flexible vs "
                                                       "sparsifier"))
        return Section(title=f"Sorted flexible layer: {name}", intro=SORTED_INTRO,
                       verdicts=verdicts, figures=[fig],
                       tables=[(f"{name}: every model at its last epoch",
                                table.drop(columns="run_id"))],
                       run_ids=list(t["sorted_runs"]))

    def summary(self, tables: base.Tables) -> dict[str, pd.DataFrame]:
        out = {}
        for dataset, t in tables.items():
            if "summary" in t:
                out[f"ordering-{dataset}-stability"] = t["summary"].round(4)
            if "sorted" in t:
                out[f"ordering-{dataset}-sorted"] = t["sorted"].drop(columns="run_id").round(4)
        return out


STUDY = OrderingStudy()
