"""Terminal output: tables, run details and download bars (bars only on a terminal)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

# Wide when piped, so logs keep whole lines (checksums, paths).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def interactive(quiet: bool = False) -> bool:
    """True when progress bars should be drawn."""
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def download_progress(quiet: bool = False) -> Iterator:
    """Yield a ``callback(url, done_bytes, total_bytes)`` drawing one bar per URL."""
    if not interactive(quiet):
        yield None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def callback(url: str, done: int, total: int) -> None:
            if url not in tasks:
                tasks[url] = bar.add_task(url.rsplit("/", 1)[-1], total=total or None)
            bar.update(tasks[url], completed=done)

        yield callback


def print_file_table(rows: Sequence, title: str) -> None:
    """One line per dataset file: dataset, split, kind, number of items, checksum status."""
    table = Table(title=f"widthlab data {title}", show_lines=False)
    for col in ("dataset", "split", "kind", "items", "checksum", "path / origin"):
        table.add_column(col)
    for r in rows:
        status = {"ok": "ok", "fetched": "ok (fetched)"}.get(r.status, r.status.upper())
        table.add_row(r.dataset, r.split, r.kind, "-" if r.count is None else str(r.count),
                      status, r.origin or str(r.path))
    console.print(table)


def print_records(records: Sequence[dict], columns: Sequence[str]) -> None:
    """A table of dict records restricted to ``columns``."""
    table = Table()
    for c in columns:
        table.add_column(c)
    for rec in records:
        table.add_row(*(str(rec.get(c, "")) for c in columns))
    console.print(table)


def print_frame(frame, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """A table of a pandas DataFrame (restricted to ``columns``); missing values print as '-'."""
    columns = list(frame.columns if columns is None else columns)
    table = Table(title=title)
    for c in columns:
        table.add_column(str(c))
    for row in frame[columns].itertuples(index=False):
        table.add_row(*("-" if _missing(v) else str(v) for v in row))
    console.print(table)


def print_run(run: dict, models, metrics) -> None:
    """``widthlab runs show``: the run's fields, its config, and one line per model.

    ``models`` and ``metrics`` are the frames of ``Store.models`` and ``Store.metrics(wide=True)``;
    the models table gains the val/test accuracy of each model's last epoch when stored.
    """
    import json

    for key, value in run.items():
        if key != "config":
            console.print(f"{key}: {json.dumps(value) if key == 'timings' else value}",
                          highlight=False)
    console.print("config:", highlight=False)
    console.print(json.dumps(run["config"], indent=2, sort_keys=True), highlight=False)
    models = models.copy()
    columns = ["model", "name", "arch", "width", "seed", "variant", "status", "failed_epoch",
               "failure"]
    for name in ("accuracy", "acc"):
        if name not in metrics.columns:
            continue
        for split in ("val", "test"):
            rows = metrics[(metrics["split"] == split) & metrics[name].notna()]
            last = rows.sort_values("epoch").groupby("model").tail(1).set_index("model")
            if not last.empty:
                col = f"{split} {name} (epoch)"
                models[col] = [
                    f"{last.at[m, name]:.4f} ({last.at[m, 'epoch']})" if m in last.index else None
                    for m in models["model"]
                ]
                columns.append(col)
    print_frame(models, columns, title=f"models of {run['run_id']}")


def _missing(value) -> bool:
    try:
        return value is None or bool(value != value)  # None or NaN
    except (TypeError, ValueError):  # arrays, lists
        return False
