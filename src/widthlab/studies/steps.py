"""The steps of a study: what it trains (:class:`Experiment` for a bank of MLPs,
:class:`ModuleExperiment` for a user's ``nn.Module``), what it configures from earlier runs
(:class:`Derived`) and what it computes from stored runs (:class:`StoredAnalysis`); the
:class:`RunContext` they see and the :class:`RunSet` a study's run returns. Every step is
trained or stored by the one run lifecycle (:mod:`widthlab.engine.lifecycle`); no step writes
to the store itself. Re-exported by :mod:`widthlab.studies.base`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F

from widthlab.data.tensors import DatasetSplits
from widthlab.engine import TrainConfig
from widthlab.engine.events import ProgressCallback
from widthlab.engine.identity import ENGINE_MODULES
from widthlab.engine.lifecycle import Result
from widthlab.engine.module_run import ModuleRun
from widthlab.engine.modules import ModuleConfig
from widthlab.nn import ModelSpec
from widthlab.store import Store

if TYPE_CHECKING:
    from widthlab.studies.base import Profile


@dataclass(frozen=True)
class Experiment:
    """One engine run of a study.

    Attributes
    ----------
    name : str
        The experiment's name (``"lambda-sweep"``); the run is labelled ``study:name``
        (or ``label`` when given: helper runs that the report does not show on their own).
    specs : sequence of ModelSpec
    config : TrainConfig
        Its ``study`` label and ``device`` are set by :meth:`Study.run`.
    modifiers : sequence of callables
        Factories of fresh :class:`~widthlab.nn.modifiers.Modifier` objects.
    hooks : sequence of callables
        Epoch hooks ``hook(ctx: EpochContext) -> rows``.
    label : str or None
        The stored run label; default ``"<study>:<name>"``.
    data : DatasetSplits or None
        The splits this experiment trains on (a task the study builds, e.g. a teacher-labelled
        noise task); default: the dataset's (or the splits passed to :meth:`Study.run`).
    """

    name: str
    specs: Sequence[ModelSpec]
    config: TrainConfig
    modifiers: Sequence[Callable[[], Any]] = ()
    hooks: Sequence[Callable] = ()
    label: str | None = None
    data: DatasetSplits | None = None


@dataclass(frozen=True)
class ModuleExperiment:
    """One run of a user's ``nn.Module`` with a loss, through the same lifecycle as every
    engine run (:class:`~widthlab.engine.module_run.ModuleRun`: stored per epoch,
    checkpointed, resumed, divergence flagged).

    Attributes
    ----------
    name : str
    model : callable
        Returns the freshly built (seeded) model.
    config : ModuleConfig
    describe : dict or None
        The model's identity and stored config keys (default: its class, structure and
        initial parameters).
    model_record : dict or None
        The store's model row (``name``, ``arch``, ``seed``, ``variant``, ``options``).
    loss_fn, hooks, label, data
        As :class:`~widthlab.engine.module_run.ModuleRun` and :class:`Experiment`.
    trainable : type
        :class:`ModuleRun` or a subclass (a run with its own extra epoch).
    teacher : Tensor or callable or None
        The distillation teacher, passed to the trainable only when set (``ModuleRun``'s
        ``teacher``, with ``config.distill > 0``).
    """

    name: str
    model: Callable[[], Any]
    config: ModuleConfig
    describe: dict | None = None
    model_record: dict | None = None
    loss_fn: Callable = F.cross_entropy
    hooks: Sequence[Callable] = ()
    label: str | None = None
    data: DatasetSplits | None = None
    trainable: type = ModuleRun
    teacher: Any = None


@dataclass
class RunContext:
    """What a :class:`Derived` experiment or a :class:`StoredAnalysis` sees.

    ``runs`` holds this study's runs so far (experiment -> run id), ``upstream`` the runs of
    the studies it requires (study -> RunSet).
    """

    store: Store
    dataset: str
    profile: Profile
    runs: dict[str, str]
    upstream: Mapping[str, RunSet]
    device: str = "auto"
    progress: ProgressCallback | None = None
    data: DatasetSplits | None = None
    code: str = ""   # the study's code hash (engine + declared modules)
    what: str = ""   # the run id a stored analysis is computing (its progress events)


@dataclass(frozen=True)
class Derived:
    """An experiment that can be configured only once earlier runs are done (e.g. static
    networks of the widths a sparsifier learned). ``build(ctx)`` returns the
    :class:`Experiment` (or :class:`ModuleExperiment`), or None to skip it."""

    name: str
    build: Callable[[RunContext], Experiment | ModuleExperiment | None]


@dataclass(frozen=True)
class StoredAnalysis:
    """Numbers computed from stored runs and stored as a run of their own.

    ``compute(ctx)`` returns the numbers as a :class:`~widthlab.engine.lifecycle.Result`; the
    base class stores them (:func:`~widthlab.engine.lifecycle.store_result`) as a finished run
    whose id is the key of its :class:`~widthlab.engine.spec.RunSpec` (kind ``"analysis"``):
    ``config(ctx)`` and the import closure of ``config`` and ``compute``, so editing the
    analysis, or anything it imports, recomputes it. A
    ``compute`` may report progress to ``ctx.progress`` under ``ctx.what`` (the run id).
    """

    name: str
    config: Callable[[RunContext], dict]
    compute: Callable[[RunContext], Result]
    label: str | None = None  # the stored run label; default: the study's name


Step = Experiment | ModuleExperiment | Derived | StoredAnalysis


@dataclass(frozen=True)
class RunSet:
    """The runs one study made on one dataset: experiment -> run id (helper runs included)."""

    study: str
    dataset: str
    profile: str
    runs: Mapping[str, str]

    def __getitem__(self, experiment: str) -> str:
        return self.runs[experiment]

    def __contains__(self, experiment: object) -> bool:
        return experiment in self.runs

    def ids(self) -> list[str]:
        return list(dict.fromkeys(self.runs.values()))


def step_code(step: Step) -> list:
    """Where the code of ``step`` starts (for :func:`~widthlab.engine.identity.closure`): the
    engine or the module trainer and the model, modifiers, hooks and loss it is given; a
    derived step's ``build``; an analysis' ``config`` and ``compute``."""
    if isinstance(step, Experiment):
        return [*ENGINE_MODULES, *step.modifiers, *step.hooks]
    if isinstance(step, ModuleExperiment):
        return [step.model, step.trainable, step.loss_fn, *step.hooks]
    if isinstance(step, Derived):
        return [step.build]
    return [step.config, step.compute]


__all__ = ["Derived", "Experiment", "ModuleExperiment", "RunContext", "RunSet", "Step",
           "StoredAnalysis", "step_code"]
