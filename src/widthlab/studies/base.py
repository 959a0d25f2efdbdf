"""The study contract: one base class every study of the journal fills in.

A study is four declarative pieces over one engine (see ``docs/adding-a-study.md``):

1. **profiles**: a frozen :class:`Profile` dataclass per study (typed fields with their
   defaults and CLI help), a ``quick``/``standard``/``full`` instance each; overrides are
   checked against the fields (:meth:`Study.profile`);
2. **experiments** (:meth:`Study.experiments`): what to train, as typed
   :class:`Experiment` objects (model specs, a ``TrainConfig``, modifier factories, epoch
   hooks), :class:`Derived` experiments that need earlier runs (static references of learned
   widths) and :class:`StoredAnalysis` steps that compute numbers from stored checkpoints and
   store them as a run of their own (PCA spectra). The base class runs them through the engine
   (:meth:`Study.run`): a finished run is reused, an interrupted one resumes;
3. **tables and verdicts** (:meth:`Study.tables`, :meth:`Study.verdicts`): pure pandas/numpy
   on stored numbers, recomputed for every report, never stored;
4. **sections** (:meth:`Study.sections`): report :class:`Section` objects with lazily drawn
   :class:`Figure` objects (matplotlib); the report layer saves and embeds them.

A study module never imports another study, the report, the executors, the CLI or the UI; the
command line builds ``widthlab study <name>`` from the profile's fields.

Example::

    from widthlab.studies import get_study

    study = get_study("sparsifier")
    runs = study.run("mnist", "quick", prices=(0.0, 1e-3))   # a RunSet: experiment -> run id
    tables = study.tables(store, {"mnist": runs.runs})
    for v in study.verdicts(tables)["mnist"]:
        print(v.text)
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from widthlab import __version__
from widthlab.data.tensors import DatasetSplits, load_splits
from widthlab.engine import train
from widthlab.engine.events import ProgressCallback
from widthlab.engine.identity import PRESENTATION, closure_hash
from widthlab.engine.lifecycle import run_trainable, store_result
from widthlab.engine.spec import RunSpec
from widthlab.errors import UsageError
from widthlab.metrics.variance import Verdict
from widthlab.nn import ModelSpec
from widthlab.store import Store
from widthlab.studies.steps import (
    Derived,
    Experiment,
    ModuleExperiment,
    RunContext,
    RunSet,
    Step,
    StoredAnalysis,
    step_code,
)

DATASETS = ("mnist", "fashion-mnist")
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def display_name(dataset: str) -> str:
    """``"fashion-mnist"`` -> ``"FashionMNIST"`` (a user's dataset keeps its name)."""
    return DATASET_NAMES.get(dataset, dataset)


# ------------------------------------------------------------------------------ profiles
@dataclass(frozen=True, kw_only=True)
class Profile:
    """Base of every study's profile: a frozen dataclass of typed, documented settings.

    Subclasses are ``@dataclass(frozen=True, kw_only=True)`` and declare fields with
    ``field(default=..., metadata={"help": "..."})``; the ``help`` text becomes the
    ``--name`` option of ``widthlab study <name>``. Override :meth:`validate` to check values
    (raise :class:`~widthlab.errors.UsageError`).
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # JSON and the CLI give lists: store tuples
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Check the values; the base accepts everything."""

    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        """The fields a user may override (every field)."""
        return list(dataclasses.fields(cls))

    def replace(self, **overrides: Any) -> Profile:
        """A copy with ``overrides`` (field names, checked against the fields; a field's
        old spellings, its metadata ``aliases`` such as ``lambdas`` for ``prices``, are
        still accepted)."""
        fields = dataclasses.fields(self)
        old = {a: f.name for f in fields for a in f.metadata.get("aliases", ())}
        overrides = {old.get(k, k): v for k, v in overrides.items()}
        names = {f.name for f in fields}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise UsageError(f"unknown setting(s) {', '.join(unknown)} for "
                             f"{type(self).__qualname__}; choose from {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def field_type(cls: type, name: str) -> Any:
    """The resolved annotation of field ``name`` of dataclass ``cls``."""
    return typing.get_type_hints(cls)[name]


# ------------------------------------------------------------------------------ report parts
@dataclass
class Figure:
    """A figure drawn on demand: ``draw()`` returns a matplotlib Figure; ``key`` names its
    files (``<study>-<key>.png``)."""

    key: str
    caption: str
    draw: Callable[[], Any]


@dataclass
class Section:
    """A titled part of the report.

    ``run_ids`` name the runs it was drawn from (their config and code version are shown);
    ``budget`` states the training budget next to the verdicts (filled in from the runs when
    empty) and ``journal_budget`` the journal's own for the same experiment (filled in from the
    study's :attr:`Study.journal_budget` when empty).
    """

    title: str
    intro: str = ""
    verdicts: list[Verdict] = field(default_factory=list)
    journal: str = ""   # the journal's own conclusion, shown beside the verdicts
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    budget: str = ""
    journal_budget: str = ""
    error: str = ""     # why the section could not be drawn (the rest of the report is)


Tables = dict[str, Any]
Verdicts = dict[str, list[Verdict]]


# ------------------------------------------------------------------------------ the base
class Study:
    """Base class of a study; see the module docstring. Subclasses set the class attributes
    and implement :meth:`experiments`, :meth:`tables`, :meth:`verdicts` and
    :meth:`sections`."""

    name: ClassVar[str]                       # run label prefix, registry key
    command: ClassVar[str] = ""               # ``widthlab study <command>`` (default: name)
    title: ClassVar[str] = ""
    journal_sections: ClassVar[tuple[str, ...]] = ()
    journal: ClassVar[str] = ""               # the journal's own conclusion
    #: the journal's training budget for this study (epochs, seeds, training samples), shown
    #: in every section beside the budget of the stored runs; "not run in the journal" says so
    journal_budget: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()  # studies whose runs this one reads
    profiles: ClassVar[Mapping[str, Profile]]
    #: columns of the summary tables printed by ``widthlab study`` (all of them when empty;
    #: ``--csv`` always writes every column)
    print_columns: ClassVar[tuple[str, ...]] = ()
    #: the datasets ``widthlab reproduce`` and ``widthlab study`` run it on (a study of its
    #: own corpus, e.g. ``("shakespeare",)``, runs once on it)
    datasets: ClassVar[tuple[str, ...]] = DATASETS

    # -------------------------------------------------------------- configuration
    def profile(self, profile: str | Profile = "quick", **overrides: Any) -> Profile:
        """The named profile (or ``profile`` itself) with ``overrides`` checked and applied."""
        if isinstance(profile, Profile):
            base = profile
        elif profile in self.profiles:
            base = self.profiles[profile]
        else:
            raise UsageError(f"unknown profile {profile!r} for the {self.name} study; choose "
                             f"{', '.join(self.profiles)}")
        return base.replace(**overrides) if overrides else base

    def own_data(self, path: str) -> Any:
        """The data of ``--data PATH`` when this study reads its own kind of file (a text
        corpus); None: the usual tabular loader."""
        return None

    def experiments(self, profile: Profile, dataset: str) -> Sequence[Step]:
        """The steps to run on ``dataset``, in order."""
        raise NotImplementedError

    def code_hash(self, profile: str | Profile = "quick", dataset: str = "mnist") -> str:
        """The job key's code: the import closure (:func:`~widthlab.engine.identity.closure`)
        of what the steps of ``profile`` on ``dataset`` call (the engine, models, modifiers,
        hooks, derived builds, analyses), never followed into figures, verdicts or
        sections. Each run and analysis id hashes its own part of it."""
        steps = self.experiments(self.profile(profile), dataset)
        return closure_hash([r for s in steps for r in step_code(s)], skip=PRESENTATION)

    def label(self, experiment: str | None = None) -> str:
        return self.name if experiment is None else f"{self.name}:{experiment}"

    # -------------------------------------------------------------- running
    def run(self, dataset: str, profile: str | Profile = "quick", *,
            store: Store | str = "widthlab-runs", device: str = "auto",
            progress: ProgressCallback | None = None, data: DatasetSplits | None = None,
            upstream: Mapping[str, RunSet] | None = None, only: Sequence[str] | None = None,
            **overrides: Any) -> RunSet:
        """Train (or resume, or find done) every step on ``dataset``; returns the RunSet.

        ``overrides`` are profile fields; ``data`` replaces the dataset's splits (a user's
        own data, tests); ``upstream`` holds the runs of the studies in :attr:`requires`;
        ``only`` restricts the steps to these names (and whatever they need is the caller's
        business).
        """
        prof = self.profile(profile, **overrides)
        missing = [s for s in self.requires if not upstream or s not in upstream]
        if missing:
            raise UsageError(f"the {self.name} study reads the runs of {', '.join(missing)}; "
                             "run it through `widthlab study` or `widthlab reproduce`, or pass "
                             "upstream=")
        steps = list(self.experiments(prof, dataset))
        ctx = RunContext(Store.open(store), dataset, prof, {}, dict(upstream or {}), device,
                         progress, data, closure_hash([r for s in steps for r in step_code(s)],
                                                      skip=PRESENTATION))
        unknown = sorted(set(only or ()) - {s.name for s in steps})
        if unknown:
            raise UsageError(f"unknown experiment(s) {', '.join(unknown)} of the {self.name} "
                             f"study; choose from {', '.join(s.name for s in steps)}")
        for step in steps:
            if only is not None and step.name not in only:
                continue
            if isinstance(step, StoredAnalysis):
                ctx.runs[step.name] = self._analyse(step, ctx)
                continue
            exp = step.build(ctx) if isinstance(step, Derived) else step
            if exp is not None:
                ctx.runs[step.name] = self._train(exp, ctx)
        name = profile if isinstance(profile, str) else "custom"
        return RunSet(self.name, dataset, name, dict(ctx.runs))

    def _train(self, exp: Experiment | ModuleExperiment, ctx: RunContext) -> str:
        data = exp.data if exp.data is not None else ctx.data
        dataset = data.name if data is not None else ctx.dataset
        if isinstance(exp, ModuleExperiment):
            run = exp.trainable(exp.model, data if data is not None else load_splits(dataset),
                                exp.config, label=exp.label or self.label(exp.name),
                                describe=exp.describe, model_record=exp.model_record,
                                loss_fn=exp.loss_fn, hooks=list(exp.hooks), device=ctx.device,
                                **({} if exp.teacher is None else {"teacher": exp.teacher}))
            return run_trainable(run, ctx.store, ctx.progress)
        cfg = dataclasses.replace(exp.config, study=exp.label or self.label(exp.name),
                                  device=ctx.device, dataset=dataset)
        return train(list(exp.specs), cfg, ctx.store, modifiers=list(exp.modifiers),
                     hooks=list(exp.hooks), data=data, progress=ctx.progress)

    def _analyse(self, step: StoredAnalysis, ctx: RunContext) -> str:
        code = closure_hash(step.compute, step.config)  # what the analysis runs
        spec = RunSpec("analysis", label=step.label or self.name,
                       prefix=f"{self.name}.{step.name}", dataset=ctx.dataset,
                       data=ctx.dataset, train=step.config(ctx), code=code)
        run_id = spec.run_id()
        done = ctx.store.get_run(run_id)
        if done is not None and done["status"] == "done":
            return run_id
        # interrupted before it was stored: store_result replaces it
        ctx.what = run_id
        result = step.compute(ctx)
        return store_result(ctx.store, run_id, spec.label, result,
                            code_version=f"widthlab {__version__} {self.name} {code[:12]}")

    # -------------------------------------------------------------- analysis and report
    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> Tables:
        """Pure tables from stored numbers; ``runs``: dataset -> experiment -> run id."""
        raise NotImplementedError

    def verdicts(self, tables: Tables) -> Verdicts:
        """The journal's claims recomputed from ``tables``: section key -> verdicts."""
        raise NotImplementedError

    def sections(self, tables: Tables, verdicts: Verdicts) -> list[Section]:
        """The report sections (figures drawn lazily)."""
        raise NotImplementedError

    def summary(self, tables: Tables) -> dict[str, pd.DataFrame]:
        """Tables to print after ``widthlab study`` and to write with ``--csv`` (name ->
        frame). Default: none."""
        return {}


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """A count (3 = seeds 0, 1, 2) or an explicit list of seeds."""
    return list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]


def sweep_specs(widths: Sequence[int], seeds: int | Sequence[int], study: str,
                **spec_kw: Any) -> list[ModelSpec]:
    """One one-hidden-layer ModelSpec per width x seed; ``study`` names the caller in the
    error."""
    seeds_ = seed_list(seeds)
    if not widths or not seeds_:
        raise UsageError(f"the {study} study needs at least one width and one seed; pass "
                         "--widths and --seeds")
    return [ModelSpec((int(w),), seed=int(s), **spec_kw) for w in widths for s in seeds_]


def newest(store: Store, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """Among ``run_ids``, the most recently finished run per dataset and experiment:
    ``{dataset: {experiment: run id}}`` (experiment None -> ``""``)."""
    best: dict[tuple[str, str], tuple[str, str]] = {}
    for r in run_ids:
        info = store.get_run(r)
        key = (info["dataset"], info["experiment"] or "")
        stamp = info.get("finished_at") or info.get("updated_at") or ""
        if key not in best or stamp >= best[key][0]:
            best[key] = (stamp, r)
    out: dict[str, dict[str, str]] = {}
    for (dataset, exp), (_, r) in best.items():
        out.setdefault(dataset, {})[exp] = r
    return out


def ordered_datasets(datasets: Sequence[str]) -> list[str]:
    """MNIST first, then FashionMNIST, then users' datasets by name."""
    return sorted(datasets, key=lambda d: (d not in DATASETS, DATASETS.index(d)
                                           if d in DATASETS else 0, d))


__all__ = ["DATASETS", "DATASET_NAMES", "Derived", "Experiment", "Figure", "ModuleExperiment",
           "Profile",
           "RunContext", "RunSet", "Section", "StoredAnalysis", "Study", "Tables", "Verdict",
           "Verdicts", "display_name", "field_type", "newest", "ordered_datasets", "seed_list",
           "sweep_specs"]
