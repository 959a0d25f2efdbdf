"""What the engine tells the outside while it works: progress events and the hook context.

The engine never draws anything. Long work (an engine run, a stored analysis) reports
:class:`ProgressEvent` objects to a callback the caller hands in; :mod:`widthlab.ui` turns them
into a progress bar on a terminal, or one plain line per epoch otherwise. Epoch hooks receive
an :class:`EpochContext`: the bank, the epoch, the run's config and data, never the engine.

Example::

    def show(ev: ProgressEvent) -> None:
        if ev.kind == "epoch":
            print(f"{ev.what}: epoch {ev.epoch}/{ev.epochs}, {ev.elapsed:.0f}s")

    train(specs, cfg, store, progress=show)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # only for annotations: keeps this module free of heavy imports
    import torch

    from widthlab.data.tensors import DatasetSplits
    from widthlab.engine.trainer import TrainConfig
    from widthlab.nn.bank import MLPBank


@dataclass(frozen=True)
class ProgressEvent:
    """One step of long work.

    Attributes
    ----------
    kind : {"start", "step", "epoch", "done"}
        ``start`` once (``total`` known), ``step`` after every unit of work (a minibatch),
        ``epoch`` after every epoch of a run, ``done`` once at the end.
    what : str
        What is running (a run id).
    done, total : int
        Units of work done so far and in all (for this call; a resumed run counts what is
        left).
    epoch, epochs : int
        The epoch just finished (0 before the first) and the run's last epoch.
    elapsed : float
        Seconds since ``start``.
    unit : str
        What ``done`` and ``total`` count (``"steps"``: minibatches; ``"epochs"`` where a
        run reports whole epochs only).
    """

    kind: Literal["start", "step", "epoch", "done"]
    what: str
    done: int
    total: int
    epoch: int = 0
    epochs: int = 0
    elapsed: float = 0.0
    unit: str = "steps"

    @property
    def eta(self) -> float | None:
        """Estimated seconds left (None before any work is done)."""
        if self.done <= 0 or self.total <= 0:
            return None
        return self.elapsed * (self.total - self.done) / self.done


ProgressCallback = Callable[[ProgressEvent], None]


def progress_callback(progress: object) -> ProgressCallback | None:
    """A callable ``progress`` itself; ``True``/``False``/``None`` (the older boolean flag)
    mean no callback: only the caller's UI layer knows how to draw."""
    return progress if callable(progress) else None


class Reporter:
    """Sends :class:`ProgressEvent` objects for one piece of long work (nothing without a
    callback): ``start`` on creation, then :meth:`step`, :meth:`epoch` and :meth:`done`.
    The engine and stored analyses (PCA) use it; ``total`` counts the units of work."""

    def __init__(self, callback, what: str, total: int, epochs: int, unit: str = "steps"):
        self.callback, self.what, self.total, self.epochs = callback, what, total, epochs
        self.unit = unit
        self.count, self.t0 = 0, time.perf_counter()
        self._send("start", 0)

    def _send(self, kind: str, epoch: int) -> None:
        if self.callback is not None:
            self.callback(ProgressEvent(kind, self.what, self.count, self.total, epoch,
                                        self.epochs, time.perf_counter() - self.t0,
                                        self.unit))

    def step(self, n: int = 1) -> None:
        self.count += n
        if self.callback is not None:
            self._send("step", 0)

    def epoch(self, epoch: int) -> None:
        self._send("epoch", epoch)

    def done(self, epoch: int) -> None:
        self._send("done", epoch)


@dataclass(frozen=True)
class EpochContext:
    """What an epoch hook sees after an epoch's evaluation.

    Attributes
    ----------
    epoch : int
        The epoch just trained (1-based).
    bank : MLPBank
        The models, as trained so far (read them; do not change their parameters).
    cfg : TrainConfig
        The run's config (``cfg.epochs`` is the last epoch).
    data : DatasetSplits
        The run's splits, on the bank's device.
    alive : tuple of bool
        Per model: False once it diverged (its rows are dropped anyway).
    """

    epoch: int
    bank: MLPBank
    cfg: TrainConfig
    data: DatasetSplits
    alive: tuple[bool, ...]

    @property
    def device(self) -> torch.device:
        return self.bank.device

    @property
    def last(self) -> bool:
        """Whether this is the run's last epoch."""
        return self.epoch == self.cfg.epochs


__all__ = ["EpochContext", "ProgressCallback", "ProgressEvent", "Reporter", "progress_callback"]
