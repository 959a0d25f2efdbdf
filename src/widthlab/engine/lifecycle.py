"""The one run lifecycle: whatever trains, a run is stored, checkpointed and resumed the same way.

A :class:`Trainable` is what a model (an :class:`~widthlab.nn.bank.MLPBank` of many fused
models through :class:`~widthlab.engine.trainer.Engine`, or any ``nn.Module`` with a loss
through :class:`~widthlab.engine.module_run.ModuleRun`) offers to be trained: its run id and
stored record, one epoch of training and evaluation (rows and diverged models), its state for
a checkpoint, a restore from one, its timings and its sized unit groups. :func:`run_trainable`
owns everything else, identically for every kind of run:

1. a finished run is reused (rolled back and completed when its epochs or checkpoint were
   lost); a new one is created with its one stored config; an interrupted one resumes from
   its newest intact checkpoint (checked against its SHA-256) and forgets later rows;
2. per epoch: train and evaluate, write the checkpoint atomically (temporary file, rename),
   then commit the epoch's metrics, arrays, diverged models, timings and checkpoint row in
   one SQLite transaction;
3. progress events (:class:`~widthlab.engine.events.Reporter`) throughout, and the run marked
   done after its last epoch.

Numbers computed in one go from stored runs (a stored analysis: PCA spectra, frontiers) are
stored with :func:`store_result`: the analysis returns a :class:`Result`, the lifecycle writes
it (one transaction for its rows, then done).

Example::

    from widthlab.engine.lifecycle import run_trainable
    run_id = run_trainable(ModuleRun(...), store, progress=print)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from widthlab.engine.events import Reporter
from widthlab.engine.spec import RunSpec
from widthlab.errors import WidthlabError
from widthlab.store import ArrayRow, MetricRow, Store
from widthlab.store.claims import check_claim, claimed


@dataclass(frozen=True)
class RunRecord:
    """What the store keeps about a run when it is created (``Store.create_run``'s fields)."""

    run_id: str
    study: str          # the run label, "study:experiment"
    dataset: str
    config: dict
    models: list[dict]
    seed: int
    device: str
    precision: str
    code_version: str
    model: str | None = None  # the kind of model trained (filled in by :func:`model_kind`)


def model_kind(t: object) -> str | None:
    """The ``model`` column of a run: the class name of what ``t`` trains (its ``model``, an
    ``nn.Module``, or its ``bank``, an ``MLPBank``); None when it has neither. Read here,
    outside the trainers, so that storing it changes no run identity."""
    for attr in ("model", "bank"):
        obj = getattr(t, attr, None)
        if obj is not None:
            return type(obj).__name__
    return None


@dataclass
class EpochRows:
    """What one epoch produced: rows to store and the models that diverged in it
    (``(model, epoch, reason)``)."""

    metrics: list[MetricRow] = field(default_factory=list)
    arrays: list[ArrayRow] = field(default_factory=list)
    failures: list[tuple[int, int, str]] = field(default_factory=list)


@runtime_checkable
class Trainable(Protocol):
    """What a model (or a bank of models) offers to be trained by :func:`run_trainable`.

    Attributes
    ----------
    run_id : str
        Identity: a hash of everything that changes the numbers and of the code computing them
        (the ``run_id()`` of its spec, below).
    epochs : int
        The run's last epoch.
    epoch : int
        Epochs done by this object (0 when new; set by :meth:`restore`).
    unit : str
        What progress counts: ``"steps"`` (minibatches) or ``"epochs"``.
    """

    run_id: str
    epochs: int
    epoch: int
    unit: str

    # Optional (not part of the protocol, so older trainables still qualify): ``spec``, the
    # run's RunSpec (widthlab.engine.spec). When a trainable has one, run_trainable checks that
    # ``run_id == spec.run_id()`` before anything is stored (:func:`check_spec`).

    def record(self) -> RunRecord:
        """The run's stored record (config, models, seed, device, code version)."""

    def steps_per_epoch(self) -> int:
        """Progress units of one epoch."""

    def train_epoch(self, epoch: int, advance: Callable[[int], None]) -> EpochRows:
        """Train epoch ``epoch`` (calling ``advance(n)`` as work gets done), check for
        divergence, evaluate; set :attr:`epoch` to ``epoch`` and return the epoch's rows."""

    def checkpoint(self, final: bool) -> dict:
        """Everything needed to resume bitwise (``final``: the run ends here; weights may
        suffice)."""

    def restore(self, state: dict) -> None:
        """Load a :meth:`checkpoint`."""

    def timings(self) -> dict:
        """Seconds spent so far (``train_s``, ``eval_s``...), merged into the stored run."""

    def unit_groups(self) -> list[dict[str, int]]:
        """Per model: the current width of each of its sized unit groups."""

    def running(self) -> contextlib.AbstractContextManager:
        """A context held while epochs train (e.g. flushing CPU denormals)."""


def run_trainable(t: Trainable, store: Store | str, progress: Callable | None = None, *,
                  until: int | None = None, in_memory: bool = False) -> str:
    """Train ``t`` through the one lifecycle (module docstring); returns its run id.

    ``until``: stop after this epoch without finishing the run. ``in_memory``: ``t`` already
    holds the stored epochs (a later call on the same object continues without reloading).
    While another live process trains the same run in the same store, this waits for it and
    then reuses or resumes its work (:mod:`widthlab.store.claims`).
    """
    check_spec(t)
    st = Store.open(store)
    with claimed(st, t.run_id):
        return _run(t, st, progress, until, in_memory)


def check_spec(t: object) -> RunSpec | None:
    """``t``'s :class:`~widthlab.engine.spec.RunSpec` (None when it has none), after checking
    that its ``run_id`` is the spec's: an id computed elsewhere would go stale."""
    spec = getattr(t, "spec", None)
    if spec is None:
        return None
    if not isinstance(spec, RunSpec):
        raise TypeError(f"{type(t).__name__}.spec must be a RunSpec, got {type(spec).__name__}")
    if spec.run_id() != t.run_id:
        raise WidthlabError(f"{type(t).__name__}.run_id {t.run_id!r} is not its spec's "
                            f"{spec.run_id()!r}; set run_id = spec.run_id() after the spec "
                            "is final")
    return spec


def _run(t: Trainable, st: Store, progress: Callable | None, until: int | None,
         in_memory: bool) -> str:
    info = st.get_run(t.run_id)
    if info is not None and info["status"] == "done":
        # a finished run whose epochs or checkpoint were lost is rolled back and completed
        problems = st.check([t.run_id], integrity=False)
        if not problems:
            return t.run_id
        st.repair(problems)
        info = st.get_run(t.run_id)
    if info is None:
        record = asdict(t.record())
        st.create_run(**{**record, "model": record["model"] or model_kind(t)})
    elif not (in_memory and info["epochs_done"] == t.epoch):
        _resume(t, st)
    last = t.epochs if until is None else max(0, min(until, t.epochs))
    report = Reporter(progress, t.run_id, (last - t.epoch) * t.steps_per_epoch(), t.epochs,
                      unit=t.unit)
    with t.running():
        while t.epoch < last:
            epoch = t.epoch + 1
            rows = t.train_epoch(epoch, report.step)
            check_claim(st, t.run_id)  # stalled past the lease and taken over: stop here
            path = st.save_checkpoint(t.run_id, epoch, t.checkpoint(final=epoch >= t.epochs))
            st.commit_epoch(t.run_id, epoch, metrics=rows.metrics, arrays=rows.arrays,
                            checkpoint=path, failures=rows.failures, timings=t.timings())
            report.epoch(epoch)
    report.done(t.epoch)
    if t.epoch >= t.epochs:
        st.finish_run(t.run_id, "done", timings=t.timings())
    return t.run_id


def _resume(t: Trainable, st: Store) -> None:
    """Restore the newest intact checkpoint and forget the rows after it (none: restart)."""
    found = st.latest_checkpoint(t.run_id)
    if found is None:
        st.rollback(t.run_id, 0)
        return
    epoch, state = found
    t.restore(state)
    st.rollback(t.run_id, epoch)


@dataclass
class Result:
    """Numbers an analysis computed in one go, for :func:`store_result`.

    ``models``: one store model record per analysed model (``name``, ``arch``...); ``config``
    is stored as the run's config; ``epoch``: the epoch the rows carry (0: no rows, the run is
    only its config).
    """

    dataset: str
    models: list[dict] = field(default_factory=list)
    metrics: list[MetricRow] = field(default_factory=list)
    arrays: list[ArrayRow] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp64"
    seed: int = 0
    timings: dict = field(default_factory=dict)
    epoch: int = 1


def store_result(store: Store | str, run_id: str, label: str, result: Result,
                 code_version: str) -> str:
    """Store ``result`` as the finished run ``run_id`` (a run left unfinished by a killed
    process is replaced); returns the run id."""
    st = Store.open(store)
    if st.get_run(run_id) is not None:
        st.delete_run(run_id)
    st.create_run(run_id, study=label, dataset=result.dataset, config=result.config,
                  models=result.models, seed=result.seed, device=result.device,
                  precision=result.precision, code_version=code_version)
    if result.epoch > 0:
        st.commit_epoch(run_id, result.epoch, metrics=result.metrics, arrays=result.arrays,
                        timings=result.timings or None)
    st.finish_run(run_id, "done")
    return run_id


__all__ = ["EpochRows", "Result", "RunRecord", "Trainable", "check_spec", "model_kind",
           "run_trainable", "store_result"]
