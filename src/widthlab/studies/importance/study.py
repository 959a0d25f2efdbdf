"""The importance study (journal: "Evaluate Inference time influence of multiple neurons
orderings"): how close are cheap proxies to the exact importance of a neuron, and what does each
ordering cost at inference when only its top k neurons are kept?

One engine run per dataset trains one-hidden-layer MLPs of a few widths and seeds
(:mod:`~widthlab.studies.importance.config`). After the last epoch an engine hook
(:class:`~widthlab.metrics.importance_hook.ImportanceHook`) scores every neuron of every model
on the validation split, exactly (:func:`widthlab.metrics.importance.exact_importance`, the loss
increase when the neuron alone is zeroed) and by each proxy, then keeps the top k neurons of
each ordering (and of a random one) and measures test accuracy versus k, with the forward
latency of the cut dense MLP. Everything is stored with the run; the tables
(:mod:`~widthlab.studies.importance.analysis`), verdicts
(:mod:`~widthlab.studies.importance.verdicts`) and figures
(:mod:`~widthlab.studies.importance.figures`) are recomputed from the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from widthlab.store import Store
from widthlab.studies import base
from widthlab.studies.base import Figure, Section, Study, display_name, ordered_datasets
from widthlab.studies.importance import analysis as an
from widthlab.studies.importance import figures as fg
from widthlab.studies.importance import verdicts as vd
from widthlab.studies.importance.config import (
    EXPERIMENT,
    NAME,
    PROFILES,
    ImportanceProfile,
    experiment,
)
from widthlab.studies.tables import StudyTables, table, value

INTRO = ("Exact importance is the increase of the validation loss when one neuron is zeroed, "
         "computed for all neurons at once from rank-one corrections of the logits; proxies "
         "are cheap scores; top-k cuts keep the k best neurons of an ordering as a smaller "
         "dense layer, evaluated on the test set.")


@dataclass(frozen=True, kw_only=True)
class ImportanceTables(StudyTables):
    """One dataset's tables of the importance study."""

    run: str = value("the importance run")
    agree: pd.DataFrame = table("model", "width", "seed", "proxy", "kendall",
                                doc="one row per model x proxy: rank agreement with exact")
    topk: pd.DataFrame = table("model", "width", "seed", "ordering", "k", "acc", "loss", "ms",
                               doc="one row per model x ordering x k")
    widest: int = value("the widest model (lowest index among equals)")
    widest_scores: dict = value("its scores: ordering -> per-neuron array")


class ImportanceStudy(Study):
    """Exact neuron importance versus proxies, and top-k cuts per ordering (accuracy and
    latency versus kept neurons)."""

    name = NAME
    title = "Neuron importance"
    journal_sections = ("Evaluate Inference time influence of multiple neurons orderings",)
    profiles = PROFILES
    journal_budget = ("planned, never run (exact importance: an epoch of the validation set per "
                      "neuron)")

    def experiments(self, profile: ImportanceProfile, dataset: str) -> list:
        return [experiment(profile)]

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> base.Tables:
        out: base.Tables = {}
        for dataset, by_exp in runs.items():
            if EXPERIMENT not in by_exp:
                continue
            run_id = by_exp[EXPERIMENT]
            scores = an.score_arrays(store, run_id)
            widest = max(scores, key=lambda m: (scores[m]["exact"].size, -m))
            out[dataset] = ImportanceTables(
                run=run_id, agree=an.agreement_table(store, run_id),
                topk=an.topk_table(store, run_id), widest=widest,
                widest_scores=scores[widest])
        return out

    def verdicts(self, tables: base.Tables) -> base.Verdicts:
        return {d: [vd.closest_proxy(t["agree"]), vd.best_cut(t["topk"]),
                    vd.inference_gain(t["topk"])] for d, t in tables.items()}

    def sections(self, tables: base.Tables, verdicts: base.Verdicts) -> list[Section]:
        return [self._dataset_section(d, tables[d], verdicts.get(d, []))
                for d in ordered_datasets(list(tables))]

    def _dataset_section(self, dataset: str, t: ImportanceTables, verdicts: list) -> Section:
        name = display_name(dataset)
        agree, topk, scores = t["agree"], t["topk"], t["widest_scores"]
        figs = [
            Figure(f"{dataset}-scatter", f"{name}: rank by each proxy against rank by exact "
                   "importance (widest model, seed 0)",
                   lambda: fg.rank_scatter(scores, f"{name}: proxies vs exact, width "
                                                   f"{scores['exact'].size}")),
            Figure(f"{dataset}-agreement", f"{name}: rank agreement with the exact importance "
                   "versus width (mean over seeds)",
                   lambda: fg.agreement_vs_width(agree, f"{name}: proxy agreement")),
            Figure(f"{dataset}-topk", f"{name}: test accuracy keeping the top k neurons of each "
                   "ordering, and the cut model's forward latency on the test set",
                   lambda: fg.topk_curves(topk[topk.model == t["widest"]],
                                          f"{name}: top-k cuts")),
        ]
        return Section(
            title=f"Neuron importance: {name}", intro=INTRO, verdicts=verdicts, figures=figs,
            tables=[(f"{name}: mean agreement with the exact importance",
                     an.proxy_summary(agree)),
                    (f"{name}: neurons kept to stay within {100 * an.ACC_TOLERANCE:.0f} point "
                     "of the full accuracy (mean over seeds)", an.cut_means(topk))],
            run_ids=[t["run"]])

    def summary(self, tables: base.Tables) -> dict[str, pd.DataFrame]:
        return {f"importance-{d}-agreement": an.proxy_summary(t["agree"]).round(3)
                for d, t in tables.items()}


STUDY = ImportanceStudy()
