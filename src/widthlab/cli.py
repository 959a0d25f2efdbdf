"""The ``widthlab`` command line.

    widthlab data fetch all          # obtain and verify MNIST and FashionMNIST
    widthlab data verify all         # re-hash every cached file
    widthlab data info               # where each dataset comes from
    widthlab train --widths 16:1448 --seeds 3 --epochs 1   # a width sweep, resumable
    widthlab study variance --profile quick                 # the journal's variance study
    widthlab report -o report.html   # figures and recomputed claims of every finished run
    widthlab runs list               # the runs in the results store (./widthlab-runs)
    widthlab runs show ID            # one run: fields, config, models
    widthlab runs export ID --format parquet --out results/
    widthlab runs check [ID...]      # every epoch stored, checkpoints intact (--repair)

Errors a user can cause print one line, ``widthlab: error: ...``; misuse exits 2, other
failures exit 1, and no traceback is shown. Command groups stay thin: each calls the Python API
of the module it drives.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import warnings
from pathlib import Path

import click

from widthlab import __version__
from widthlab._io import ensure_writable
from widthlab.cli_data import data_group
from widthlab.cli_frontier import frontier_cmd
from widthlab.cli_options import CONTEXT, data_option, store_option, target_option, user_data
from widthlab.cli_study import StudyGroup
from widthlab.cli_train import train_cmd
from widthlab.cli_units import units_cmd
from widthlab.errors import UsageError, WidthlabError
from widthlab.report import build_report
from widthlab.reproduce import reproduce
from widthlab.store import Store
from widthlab.store._db import storage_error
from widthlab.studies import available
from widthlab.ui import engine_progress
from widthlab.ui.console import print_frame, print_run


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="widthlab")
def app() -> None:
    """widthlab: how many neurons does this layer need?

    Width sweeps, layers that learn their width, neuron importance, and a report that
    recomputes the claims of the 2017 journal, on MNIST and FashionMNIST.
    """


app.add_command(data_group)  # widthlab data: fetch, verify, describe the datasets


# ----------------------------------------------------------------------------------- runs
run_id_argument = click.argument("run_id", metavar="ID")


@app.group("runs", context_settings=CONTEXT)
def runs_group() -> None:
    """List, show and export the runs in a results store.

    ID may be any unique prefix of a run id.
    """


@runs_group.command("list")
@store_option
def runs_list(store: Path) -> None:
    """One line per run: study, dataset, status, models, epochs, times."""

    runs = Store(store).runs()
    if runs.empty:
        click.echo(f"no runs in {store}")
        return
    runs = runs.rename(columns={"n_models": "models", "n_failed": "failed",
                                "epochs_done": "epochs"})
    print_frame(runs, ["run_id", "study", "dataset", "status", "models", "failed", "epochs",
                       "device", "created_at", "finished_at"], title=f"runs in {store}")


@runs_group.command("show")
@run_id_argument
@store_option
def runs_show(run_id: str, store: Path) -> None:
    """A run's fields and config, and its models with status and last val/test accuracy."""

    st = Store(store)
    run_id = st.resolve(run_id)
    models = st.models(run_id)
    models["failed_epoch"] = [None if e is None or e != e else str(int(e))  # not 3.0
                              for e in models["failed_epoch"]]
    print_run(st.get_run(run_id), models, st.metrics(run_id, wide=True))


@runs_group.command("gc")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@store_option
def runs_gc(dry_run: bool, store: Path) -> None:
    """Remove what no stored run needs: unrecorded checkpoint files, temporary files of dead
    writers, job manifests of runs that are gone. Prints each path and the space freed."""

    removed = Store.open(store).gc(dry_run=dry_run)
    for path, size in removed:
        click.echo(f"{path}\t{size}")
    total = sum(size for _, size in removed) / 2 ** 20
    click.echo(f"{'would free' if dry_run else 'freed'} {total:.1f} MiB in {len(removed)} "
               "files", err=True)


@runs_group.command("export")
@run_id_argument
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv",
              show_default=True, help="File format.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Folder to write the files into (created if needed).")
@store_option
def runs_export(run_id: str, fmt: str, out: Path, store: Path) -> None:
    """Write ID-models, ID-metrics (one column per metric) and ID-neurons files; print paths."""

    st = Store(store)
    for path in st.export(st.resolve(run_id), out, fmt):
        click.echo(str(path))


@runs_group.command("check")
@click.argument("run_ids", nargs=-1, metavar="[ID...]")
@click.option("--repair", is_flag=True,
              help="Mark the damaged runs for retraining: the command that made each one then "
                   "resumes it.")
@store_option
def runs_check(run_ids: tuple[str, ...], repair: bool, store: Path) -> None:
    """Check finished runs (default: all): every epoch's rows, checkpoint hashes, and the
    database's integrity. Exit 1 when a problem is found (and not repaired)."""

    st = Store(store)
    problems = st.check(list(run_ids) or None)
    for p in problems:
        click.echo(p.message)
    if not problems:
        click.echo(f"ok: {store} passes every check")
        return
    if not repair:
        raise WidthlabError(f"{len(problems)} problem(s) in {store}; run `widthlab runs check "
                            f"--repair --store {store}` to let the same command retrain them")
    fixed = st.repair(problems)
    for run_id, epoch in fixed.items():
        click.echo(f"{run_id}: rolled back to epoch {epoch}; rerun the command that made it")
    if len(fixed) < len({p.run_id for p in problems}):
        raise WidthlabError(f"the database {st.db_path} itself is damaged; restore it from a "
                            "backup or move it away to start a new store")


app.add_command(train_cmd)  # widthlab train: a width sweep, options from TrainProfile


# ---------------------------------------------------------------------------------- study
@app.group("study", cls=StudyGroup, context_settings=CONTEXT)
def study_group() -> None:
    """Run one of the journal's studies through the engine and summarise it from the store.

    Every study resumes an interrupted run and reuses finished ones (same config, same code).
    """


# --------------------------------------------------------------------------------- report
@app.command("report", context_settings=CONTEXT)
@click.argument("run_ids", nargs=-1, metavar="[ID...]")
@store_option
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("report.html"), show_default=True, help="The HTML page to write.")
def report_cmd(run_ids: tuple[str, ...], store: Path, out: Path) -> None:
    """Write one self-contained HTML report of finished runs (default: every run in the store).

    Figures (PNG and SVG) are drawn from stored results only, into OUT's folder
    ``<name>-figures/``, and embedded in the page; claims are recomputed as verdicts.
    """

    ensure_writable(out.parent, "the report's folder", "choose another -o/--out path")
    path = build_report(store, list(run_ids) or None, out, studies=available())
    click.echo(str(path))


# ------------------------------------------------------------------------------ reproduce
@app.command("reproduce", context_settings=CONTEXT)
@click.option("--profile", type=click.Choice(["quick", "standard", "full"]), default="quick",
              show_default=True, help="quick: minutes on a laptop CPU; standard: 42 min "
                                      "on 2 cores (the journal's epochs where a verdict "
                                      "depends on training length); full: the journal's "
                                      "settings (hours; use a GPU or Ray).")
@click.option("--datasets", default="mnist,fashion-mnist", show_default=True,
              help="Comma-separated datasets.")
@data_option
@target_option
@click.option("--studies", default=None,
              help="Comma-separated subset (default: every study, in the journal's order).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="local: this machine (--workers processes); ray: one "
                                      "job per study x dataset on a Ray cluster (pip install "
                                      "'widthlab[ray]').")
@click.option("--workers", default="auto", show_default=True,
              help="local executor: processes running jobs side by side, each on an equal "
                   "share of the torch threads (auto: one per CPU, 1: this process only).")
@click.option("--address", default=None,
              help="Ray cluster address (auto, ray://host:10001); omitted: a local Ray instance.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto",
              show_default=True)
@store_option
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("report.html"), show_default=True, help="The HTML report to write.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def reproduce_cmd(profile: str, datasets: str, data_path: Path | None, target: str | None,
                  studies: str | None, executor: str, workers: str,
                  address: str | None, device: str, store: Path, out: Path,
                  quiet: bool) -> None:
    """Rerun the whole journal: every study on every dataset, then one report.

    Work already stored with the same config and code version is skipped; an interrupted
    reproduction resumes where it stopped. Prints the report's path.
    """

    user_data(data_path, target)  # a bad file stops here, before any job
    n_workers = _workers(workers)

    def split(text):
        return [t.strip() for t in text.split(",") if t.strip()]

    with engine_progress(quiet) as progress:
        path = reproduce(profile, split(datasets), store=store, out=out,
                         studies=split(studies) if studies else None, executor=executor,
                         workers=n_workers, address=address, device=device,
                         progress=progress,
                         log=(lambda line: None) if quiet else None,
                         data_file=None if data_path is None else (str(data_path), target))
    click.echo(str(path))


def _workers(text: str) -> int:
    """``--workers``: a count >= 1, or auto (the CPUs this process may use)."""
    if text.strip().lower() == "auto":
        cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count())
        return max(1, cpus or 1)
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"expected a whole number >= 1 or auto, got {text!r}",
                                 param_hint="--workers")
    return n


# ------------------------------------------------------------------------------- frontier
app.add_command(frontier_cmd)  # widthlab frontier: how many neurons a trained layer needs
app.add_command(units_cmd)  # widthlab units: what can be sized in a model


# ----------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning known errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _plain_warning
        return _run(args)


def _plain_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one plain line (recovery notices, not Python's source-line format)."""
    click.echo(f"widthlab: warning: {message}", err=True)


def _run(args: list[str]) -> int:
    try:
        rv = app.main(args=args, prog_name="widthlab", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, EOFError) and not isinstance(exc.__cause__,
                                                                  KeyboardInterrupt):
            # click turns any EOFError into Abort: a truncated file is not a Ctrl-C
            click.echo(f"widthlab: error: unexpected end of a file ({exc.__cause__}); check "
                       "that the file is complete", err=True)
            return 1
        click.echo("widthlab: aborted", err=True)
        return 130
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"widthlab: error: {exc.format_message()}{hint}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"widthlab: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except UsageError as exc:
        click.echo(f"widthlab: error: {exc}", err=True)
        return 2
    except WidthlabError as exc:
        click.echo(f"widthlab: error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("widthlab: interrupted; rerun the same command to resume", err=True)
        return 130
    except (OSError, RuntimeError, sqlite3.Error) as exc:  # storage failures: one line

        err = storage_error(exc, Path(getattr(exc, "filename", None) or "."))
        if err is None and not isinstance(exc, OSError):
            raise
        click.echo(f"widthlab: error: {err or _os_error_line(exc)}", err=True)
        return 1


def _os_error_line(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot access{where} ({exc.strerror or exc}); check the path and rerun"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
