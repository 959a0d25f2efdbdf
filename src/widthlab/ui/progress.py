"""Progress of long work: a bar with ETA on a terminal, plain lines otherwise, nothing when quiet.

:func:`engine_progress` yields the callback the engine (``train``, a study's ``run``) takes as
``progress``. On an interactive stderr it draws one transient bar per run; when stderr is not a
terminal (a log file, CI) it prints one line per epoch of a run, with elapsed time and ETA, so
a long job is never silent.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from widthlab.engine.events import ProgressEvent


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def epoch_line(ev: ProgressEvent) -> str:
    """``widthlab: <run>: epoch 3/10 (412/1380 steps), 1m02s elapsed, eta 2m05s`` (no count
    in brackets where the run counts epochs only)."""
    count = "" if ev.unit == "epochs" else f" ({ev.done}/{ev.total} {ev.unit})"
    return (f"widthlab: {ev.what}: epoch {ev.epoch}/{ev.epochs}{count}, "
            f"{_clock(ev.elapsed)} elapsed, eta {_clock(ev.eta)}")


def job_line(name: str, index: int, total: int, status: str) -> str:
    """``widthlab: [2/14] variance/mnist/quick: 31.2s (6 runs)``: one line per job."""
    return f"widthlab: [{index}/{total}] {name}: {status}"


class _Bars:
    """One transient rich bar per run, driven by engine events."""

    def __init__(self, bar: Progress):
        self.bar, self.tasks = bar, {}

    def __call__(self, ev: ProgressEvent) -> None:
        if ev.kind == "start":
            self.tasks[ev.what] = self.bar.add_task(ev.what, total=max(ev.total, 1))
        elif ev.what in self.tasks:
            self.bar.update(self.tasks[ev.what], completed=ev.done)
            if ev.kind == "done":
                self.bar.remove_task(self.tasks.pop(ev.what))


def _lines(write: Callable[[str], None]) -> Callable[[ProgressEvent], None]:
    def show(ev: ProgressEvent) -> None:
        if ev.kind == "epoch":
            write(epoch_line(ev))
    return show


@contextlib.contextmanager
def engine_progress(quiet: bool = False, *, tty: bool | None = None
                    ) -> Iterator[Callable[[ProgressEvent], None] | None]:
    """Yield the engine's ``progress`` callback: None when ``quiet``; a bar on a terminal;
    one plain line per epoch on stderr otherwise (``tty`` overrides the detection)."""
    if quiet:
        yield None
        return
    if not (sys.stderr.isatty() if tty is None else tty):
        yield _lines(lambda line: print(line, file=sys.stderr, flush=True))
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        yield _Bars(bar)


__all__ = ["engine_progress", "epoch_line", "job_line"]
