"""The optimizer study (journal: "Check if Adam is messing up with the training at very low
loss", planned there but never run): do loss spikes appear late in training with Adam, does
AdaMax reduce them, and does the flexible layer's x0 learning rate matter?

Runs: :mod:`~widthlab.studies.optimizer.config`; tables (per-epoch loss envelopes and spike
counts, :mod:`widthlab.metrics.spikes`: a batch above 3x the running median of the 50 before
it): :mod:`~widthlab.studies.optimizer.analysis`; claims:
:mod:`~widthlab.studies.optimizer.verdicts`; drawings: :mod:`~widthlab.studies.optimizer.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from widthlab.metrics.spikes import FACTOR, WINDOW
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
from widthlab.studies.optimizer import analysis as an
from widthlab.studies.optimizer import figures as fo
from widthlab.studies.optimizer.config import NAME, PROFILES, OptimizerProfile, experiments
from widthlab.studies.optimizer.verdicts import verdicts
from widthlab.studies.tables import StudyTables, table, value

KEYS = ("dataset", "optimizer", "variant")


@dataclass(frozen=True, kw_only=True)
class OptimizerTables(StudyTables):
    """One dataset's tables of the optimizer study."""

    runs: list = value("the dataset's runs")
    envelopes: pd.DataFrame = table(*KEYS, "epoch", "loss_min", "loss_median", "loss_max",
                                    "median_lo", "median_hi",
                                    doc="batch-loss envelope per run, variant and epoch")
    spikes: pd.DataFrame = table(*KEYS, "epoch", "spikes", "batches",
                                 doc="spikes summed over replicates per variant and epoch")
    rates: pd.DataFrame = table(*KEYS, "early_rate", "late_rate", "spikes",
                                doc="spikes per 1,000 batches, first and last third")

INTRO = ("Static and flexible networks trained long with Adam, AdaMax and SGD with momentum; "
         "every minibatch loss recorded. The journal planned this check but never ran it.")


class OptimizerStudy(Study):
    """Loss spikes at low loss: Adam, AdaMax and SGD+momentum on static and flexible
    networks, every batch loss recorded."""

    name = NAME
    title = "Optimizer study"
    journal_sections = ("Check if Adam is messing up with the training at very low loss",)
    journal = ("Planned, never run: after a large number of epochs the loss becomes very noisy; "
               "plot the min and max loss of multiple models during training and compare with "
               "AdaMax to see if that solves the problem.")
    profiles = PROFILES
    journal_budget = ("planned, never run; the noise it asks about showed after 30 epochs, "
                      "averaged over 30 models, all 60,000 training images")

    def experiments(self, profile: OptimizerProfile, dataset: str) -> list:
        return experiments(profile)

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> Tables:
        out: Tables = {}
        for dataset, by_exp in runs.items():
            ids = list(by_exp.values())
            spikes = an.spike_table(store, ids)
            out[dataset] = OptimizerTables(runs=ids, envelopes=an.envelope_table(store, ids),
                                           spikes=spikes, rates=an.spike_rates(spikes))
        return out

    def verdicts(self, tables: Tables) -> Verdicts:
        return {d: verdicts(t["rates"], d) for d, t in tables.items()}

    def sections(self, tables: Tables, verdicts: Verdicts) -> list[Section]:
        out = []
        for dataset in ordered_datasets(list(tables)):
            t, name = tables[dataset], display_name(dataset)
            figs = [Figure(f"{dataset}-envelopes", f"{name}: batch-loss envelopes per epoch "
                           "(min / median / max over each epoch's batches, replicate median; "
                           "band: spread of the replicates' medians)",
                           lambda t=t, name=name: fo.envelopes(t["envelopes"],
                                                               f"{name}: loss envelopes")),
                    Figure(f"{dataset}-spikes", f"{name}: spikes per epoch (batch loss above "
                           f"{FACTOR:g}x the median of the previous {WINDOW} batches), summed "
                           "over replicates",
                           lambda t=t, name=name: fo.spike_counts(t["spikes"],
                                                                  f"{name}: loss spikes"))]
            out.append(Section(title=f"Optimizer study: {name}", intro=INTRO,
                               verdicts=verdicts.get(dataset, []), figures=figs,
                               tables=[(f"{name}: spike rates", t["rates"].round(3))],
                               run_ids=list(t["runs"])))
        return out

    def summary(self, tables: Tables) -> dict[str, pd.DataFrame]:
        cols = ["optimizer", "variant", "early_rate", "late_rate", "spikes"]
        return {f"optimizer-{d}-spike-rates": t["rates"][cols].round(3)
                for d, t in tables.items()}


STUDY = OptimizerStudy()
