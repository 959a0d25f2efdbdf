"""The flexible-layer study (journal: "Implement a metric-less resizing" to "Try to get rid of
the local minima", and "Try training only the size on a thoroughly trained network").

One hidden layer of ``N`` neurons scaled by ``sigmoid(k (x0 - i))`` learns its width ``x0``
(:class:`~widthlab.nn.flexible.FlexibleCutoff`, lr 1, slope 1), with a size penalty
``lambda * integral of the scaler``. The steps are in :mod:`~widthlab.studies.flexible.config`,
the epoch hooks in :mod:`~widthlab.studies.flexible.hooks`, the tables in
:mod:`~widthlab.studies.flexible.analysis`, the claims in
:mod:`~widthlab.studies.flexible.verdicts`, the drawings in
:mod:`~widthlab.studies.flexible.figures` and the sections in
:mod:`~widthlab.studies.flexible.sections`; this module ties them into the study contract.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from widthlab.data.tensors import DatasetSplits
from widthlab.engine.events import ProgressCallback
from widthlab.metrics.variance import Verdict
from widthlab.store import Store
from widthlab.studies import base
from widthlab.studies.base import Profile, RunSet, Study
from widthlab.studies.flexible import analysis as an
from widthlab.studies.flexible import sections as sc
from widthlab.studies.flexible import verdicts as vd
from widthlab.studies.flexible.config import NAME, PROFILES, RUNS, FlexibleProfile, selected, steps
from widthlab.studies.tables import StudyTables, table, value


@dataclass(frozen=True, kw_only=True)
class FlexibleTables(StudyTables):
    """One dataset's tables of the flexible study; an experiment's tables are None when it was
    not run (``"frontier" in t`` says whether it was)."""

    runs: dict = value("experiment -> run id, of the experiments run")
    models: dict = value("experiment -> its per-model table (an.model_table)")
    chain: list = value("the static pretraining chain of the pretrained run")
    static: str | None = value("the frontier's static reference run", optional=True)
    convergence: pd.DataFrame = table("arm", "start", "seed", "final_width", "test_acc",
                                      optional=True, doc="one row per model")
    frontier: pd.DataFrame = table("arm", "penalty", "seed", "final_width", "test_acc",
                                   optional=True, doc="one row per model")
    frontier_summary: pd.DataFrame = table("arm", "penalty", "final_width", "test_acc",
                                           "replicates", optional=True,
                                           doc="medians per arm and penalty")
    best_static: pd.DataFrame = table("arm", "test_acc", "replicates", optional=True)
    plateau: pd.DataFrame = table("arm", "penalty", "i", "scaler", "out_abs", "zone",
                                  optional=True, doc="per neuron of every frontier model")
    n: int | None = value("the frontier's layer width", optional=True)
    minima: pd.DataFrame = table("model", "epoch", "x0", "test_acc", optional=True,
                                 doc="per model and epoch")
    pretrained: pd.DataFrame = table("model", "epoch", "x0", "test_acc", "pretrain",
                                     optional=True, doc="per model and epoch")
    size_only: pd.DataFrame = table("model", "epoch", "x0", "size_grad", optional=True,
                                    doc="per model and epoch")
    size_only_start: pd.Series | None = value("x0 per model at the start of size-only",
                                              optional=True)


def dataset_tables(store: Store, by_exp: Mapping[str, str]) -> FlexibleTables:
    """The tables of one dataset's runs (``by_exp``: experiment -> run id; other keys such as
    ``frontier-static`` name helper runs)."""
    runs = {e: by_exp[e] for e in RUNS if e in by_exp}
    t: dict = {"runs": runs, "models": {e: an.model_table(store, r) for e, r in runs.items()},
               "chain": []}
    if "convergence" in runs:
        t["convergence"] = an.convergence_table(store, runs["convergence"])
    if "frontier" in runs:
        fid = runs["frontier"]
        static = by_exp.get("frontier-static") or an.find_static(store, fid)
        t["static"] = static
        t["frontier"] = an.frontier_table(store, fid, static)
        t["frontier_summary"] = an.frontier_summary(t["frontier"])
        t["best_static"] = an.best_static(store, fid, static)
        t["plateau"] = an.plateau_table(store, fid)
        t["n"] = int(store.models(fid)["width"].iloc[0])
    for exp in ("minima", "pretrained", "size-only"):
        if exp in runs:
            t[exp.replace("-", "_")] = an.epoch_table(store, runs[exp])
    if "pretrained" in runs:
        t["chain"] = an.pretrain_chain(store, runs["pretrained"])
    if "size-only" in runs:
        t["size_only_start"] = an.start_x0(store, runs["size-only"])
    return FlexibleTables(**t)


class FlexibleStudy(Study):
    """Flexible layers that learn their width with a sigmoid cut-off: convergence from any
    start, the penalty frontier (with/without L2) against static networks and its plateau,
    random slope / random activation / pretraining against local minima, and training the size
    alone.

    --experiment takes step names: convergence, frontier (with its static references,
    frontier-static), minima, pretrained (with its static pretraining chain, pretrain-<epochs>)
    and size-only (with the minima run it starts from). Finished runs are reused, interrupted
    ones resume.
    """

    name = NAME
    title = "Flexible layers"
    journal_sections = ("Implement a metric-less resizing", "Improve numerical stability",
                        "Investigate the origin of the network size plateau and try to get rid "
                        "of it", "Analyse the behavior of flexible netowkrs without L2 "
                        "regularization", "Try to get rid of the local minima",
                        "Try training only the size on a thoroughly trained network")
    journal = sc.JOURNAL
    journal_budget = ("N = 500, 15 epochs (convergence, frontier) to 30 epochs of 30 models "
                      "(local minima, pretrained), all 60,000 training images")
    profiles = PROFILES

    def experiments(self, profile: FlexibleProfile, dataset: str) -> list:
        return steps(profile)

    def run(self, dataset: str, profile: str | Profile = "quick", *,
            store: Store | str = "widthlab-runs", device: str = "auto",
            progress: ProgressCallback | None = None, data: DatasetSplits | None = None,
            upstream: Mapping[str, RunSet] | None = None, only: Sequence[str] | None = None,
            **overrides: Any) -> RunSet:
        """:meth:`Study.run`, where ``only`` (step names) also runs what those steps need
        (an unknown name is a :class:`~widthlab.errors.UsageError`)."""
        if only is not None:
            only = selected(self.profile(profile, **overrides), only)
        return super().run(dataset, profile, store=store, device=device, progress=progress,
                           data=data, upstream=upstream, only=only, **overrides)

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> base.Tables:
        st = Store.open(store)
        return {d: dataset_tables(st, by_exp) for d, by_exp in runs.items()}

    def verdicts(self, tables: base.Tables) -> base.Verdicts:
        out: base.Verdicts = {}
        widths = {}
        for d in base.ordered_datasets(list(tables)):
            t, name = tables[d], base.display_name(d)
            for exp in t["runs"]:
                out.setdefault(exp, []).extend(
                    dataclasses.replace(v, text=f"{name}: {v.text}")
                    for v in vd.experiment_verdicts(exp, t))
            if "frontier" in t:
                none = t["frontier_summary"][t["frontier_summary"].arm == "none"]
                if len(none):
                    widths[name] = float(none.loc[none.penalty.idxmin(), "final_width"])
        if {"MNIST", "FashionMNIST"} <= set(widths):
            out["frontier"].append(vd.width_order_verdict(widths))
        return out

    def sections(self, tables: base.Tables, verdicts: base.Verdicts) -> list[base.Section]:
        return sc.sections(tables, verdicts)

    def summary(self, tables: base.Tables) -> dict[str, pd.DataFrame]:
        """The verdicts (one row each), the frontier medians and the last-epoch summaries."""
        out = {"flexible-verdicts": verdict_frame(self.verdicts(tables))}
        for d, t in tables.items():
            if "frontier_summary" in t:
                out[f"flexible-{d}-frontier"] = t["frontier_summary"].round(4)
            for exp, by in (("minima", "slope"), ("pretrained", "pretrain")):
                if exp in t:
                    out[f"flexible-{d}-{exp}"] = an.last_epoch_summary(t[exp], by).round(4)
        return out


def verdict_frame(verdicts: Mapping[str, Sequence[Verdict]]) -> pd.DataFrame:
    """One row per verdict: experiment, whether it holds, the claim and the text."""
    rows = [{"experiment": exp, "holds": "holds" if v.holds else "does not hold",
             "claim": v.claim, "text": v.text} for exp, vs in verdicts.items() for v in vs]
    return pd.DataFrame(rows, columns=["experiment", "holds", "claim", "text"])


STUDY = FlexibleStudy()
