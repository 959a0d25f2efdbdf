"""Progress bars with ETA for long work; silent when stderr is not a terminal or when quiet."""

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


@contextlib.contextmanager
def step_progress(total: int, description: str, *, quiet: bool = False
                  ) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws a bar with ETA on an interactive stderr unless ``quiet``."""
    if quiet or not sys.stderr.isatty() or total <= 0:
        yield lambda n=1: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
