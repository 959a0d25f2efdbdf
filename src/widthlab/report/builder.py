"""``widthlab report``: which runs go in, and which study draws each of them.

The builder receives the studies (the registry, :func:`widthlab.studies.available`) from its
caller instead of importing them. For every study with finished runs in the store it computes
the study's tables and verdicts, asks for its sections, draws and saves their figures, and
states each section's training budget. A study whose section cannot be drawn (too few runs for
a fit, a missing array) gets a section saying why, a line on ``log`` naming its runs, and the
rest of the report is written.

Example::

    from widthlab.report import build_report
    from widthlab.studies import available

    build_report("widthlab-runs", None, "report.html", studies=available())
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from widthlab.errors import UsageError, WidthlabError
from widthlab.report.figures import formats, save
from widthlab.report.html import Rendered, write_report
from widthlab.store import Store
from widthlab.studies.base import Figure, Section, Study, newest

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def choose_runs(st: Store, run_ids: Sequence[str] | None, studies: Sequence[Study],
                log: Log = _stderr) -> dict[str, list[str]]:
    """Study name -> the finished runs to report. Named runs must be finished runs of a
    reportable study; without names every finished run is taken (others skipped, noted)."""
    names = {s.name for s in studies}
    chosen: dict[str, list[str]] = {}
    if run_ids:
        for r in (st.resolve(r) for r in run_ids):
            info = st.get_run(r)
            if info["status"] != "done":
                raise UsageError(f"run {r} is {info['status']}, not done; finish it first "
                                 "(rerun its command) or leave it out")
            if info["study_name"] not in names:
                raise UsageError(f"run {r} belongs to study {info['study']!r}, which has no "
                                 f"report section; reportable studies: {', '.join(names)}")
            chosen.setdefault(info["study_name"], []).append(r)
        return chosen
    for row in st.runs().itertuples():
        if row.status != "done" or row.study_name not in names:
            log(f"widthlab: skipping run {row.run_id} ({row.study}, {row.status})")
            continue
        chosen.setdefault(row.study_name, []).append(row.run_id)
    if not chosen:
        raise UsageError(f"no finished runs of a reportable study in {st.root}; run e.g. "
                         "`widthlab study variance --profile quick` first")
    return chosen


def _checked(st: Store, chosen: dict[str, list[str]], log: Log,
             left_out: list[tuple[str, str]] | None = None) -> dict[str, list[str]]:
    """``chosen`` without the runs that fail :meth:`Store.check` (each named on ``log`` and,
    with its reason, appended to ``left_out``)."""
    problems = st.check([r for runs in chosen.values() for r in runs])
    for p in problems:
        log(f"widthlab: warning: {p.message}; left out of the report (rerun the command that "
            "made the run, or `widthlab runs check --repair`)")
    bad = {p.run_id for p in problems}
    if None in bad:  # the database itself failed its integrity check
        raise WidthlabError(next(p.message for p in problems if p.run_id is None) +
                            "; restore the store from a copy, or move it away and rerun")
    if left_out is not None:
        left_out += [(p.run_id, p.message) for p in problems]
    return {s: [r for r in runs if r not in bad] for s, runs in chosen.items()
            if any(r not in bad for r in runs)}


def left_out_section(left_out: list[tuple[str, str]]) -> Rendered:
    """The runs that failed ``widthlab runs check``, named in the report with the fix."""
    import pandas as pd

    table = pd.DataFrame(left_out, columns=["run", "problem"]).drop_duplicates()
    return Rendered(Section(
        title="Runs left out of this report",
        intro=f"{table['run'].nunique()} run(s) failed `widthlab runs check` and are not "
              "drawn: rerun the command that made each run, or run `widthlab runs check "
              "--repair` and then the command, and write the report again.",
        tables=[("left out", table)], run_ids=list(dict.fromkeys(table["run"]))))


def budget(st: Store, run_ids: Sequence[str]) -> str:
    """The training budget of ``run_ids``: epochs, models and seeds, training samples (runs
    with the same budget on the same dataset are named together)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in dict.fromkeys(run_ids):
        info = st.get_run(r)
        if info is None:
            continue
        cfg = info["config"]
        if "epochs" not in cfg:  # a stored analysis: it trains nothing
            continue
        models = st.models(r)
        n = cfg.get("train_size") or "all"
        what = (f"{cfg['epochs']} epochs, {len(models)} models ({models['seed'].nunique()} "
                f"seeds), {n} training samples")
        groups.setdefault((info["dataset"], what), []).append(info["study"])
    return "; ".join(f"{', '.join(dict.fromkeys(labels))} ({dataset}): {what}"
                     for (dataset, what), labels in groups.items())


def _prepared(study: Study, sec: Section, st: Store, study_runs: Sequence[str]) -> Section:
    """``sec`` with its budget from its runs (a section drawn from no run of its own, e.g.
    MNIST versus FashionMNIST, states the budget of all the study's runs) and the journal's
    budget beside it."""
    if not sec.journal:
        sec.journal = study.journal
    if not sec.budget:
        sec.budget = budget(st, sec.run_ids or study_runs)
    if not sec.journal_budget:
        sec.journal_budget = study.journal_budget
    return sec


def _error_section(study: Study, st: Store, run_ids: Sequence[str], exc: BaseException | str,
                   log: Log) -> Rendered:
    why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    shown = ", ".join(run_ids)
    log(f"widthlab: warning: the {study.name} section could not be drawn from runs "
        f"{shown} ({why}); the rest of the report is written")
    sec = Section(title=f"{study.title or study.name}: not drawn", journal=study.journal,
                  error=f"{why} (runs: {shown}). Train more of the study (e.g. its quick "
                        "profile) or leave these runs out of the report.",
                  run_ids=list(run_ids))
    return Rendered(sec, [], [r for r in (st.get_run(i) for i in run_ids) if r])


# The figures being saved by the workers of :func:`save_figures`: forked workers inherit
# this list (a figure's ``draw`` is a closure over its study's tables: not picklable) and
# receive indices only.
_JOBS: list[tuple[Figure, Path, str]] = []


def _save_job(i: int) -> Path | str:
    fig, out_dir, name = _JOBS[i]
    try:
        return save(fig.draw(), out_dir, name)[0]
    except Exception as exc:  # noqa: BLE001 - reported per figure, its study gets a note
        return f"{type(exc).__name__}: {exc} (figure {fig.key})"


def report_workers() -> int:
    """Processes that save the report's figures: the CPUs this process may use, at most 4
    (``WIDTHLAB_REPORT_WORKERS`` overrides; 1 saves them in this process)."""
    env = os.environ.get("WIDTHLAB_REPORT_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise UsageError("WIDTHLAB_REPORT_WORKERS must be a whole number, got "
                             f"{env!r}") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cpus or 1))


def save_figures(jobs: Sequence[tuple[Figure, Path, str]],
                 workers: int | None = None) -> list[Path | str]:
    """Draw and save every ``(figure, folder, name)`` of ``jobs``: the PNG's path per job, or
    the error (a string) where drawing or saving failed. Matplotlib spends most of a report's
    time laying out text; the figures are independent, so ``workers`` forked processes
    (:func:`report_workers`) save them side by side where the platform can fork; in this
    process otherwise. The result does not depend on ``workers``."""
    global _JOBS
    workers = report_workers() if workers is None else workers
    workers = min(workers, len(jobs))
    _JOBS = list(jobs)
    try:
        if workers <= 1 or "fork" not in mp.get_all_start_methods():
            return [_save_job(i) for i in range(len(jobs))]
        # largest figures first would need their sizes; interleaved order balances well
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            return list(pool.map(_save_job, range(len(jobs)), chunksize=1))
    finally:
        _JOBS = []


def study_sections(study: Study, st: Store, run_ids: Sequence[str], fig_dir: Path,
                   log: Log = _stderr) -> list[Rendered]:
    """The rendered sections of ``study`` from ``run_ids`` (figures saved in this process);
    one explaining section (and a ``log`` line naming the runs) when they cannot be drawn."""
    return render_studies([(study, run_ids)], st, fig_dir, log, workers=1)


def render_studies(chosen: Sequence[tuple[Study, Sequence[str]]], st: Store, fig_dir: Path,
                   log: Log = _stderr, workers: int | None = None) -> list[Rendered]:
    """The rendered sections of every ``(study, run_ids)``, in order: tables, verdicts and
    sections computed here, every figure saved by :func:`save_figures`. A study whose tables,
    sections or any figure fail gets one explaining section instead (one must not block the
    whole report)."""
    prepared: list[tuple[Study, Sequence[str], list[Section] | BaseException]] = []
    jobs: list[tuple[Figure, Path, str]] = []
    for study, run_ids in chosen:
        try:
            runs = newest(st, run_ids)
            tables = study.tables(st, runs)
            sections = [_prepared(study, sec, st, run_ids)
                        for sec in study.sections(tables, study.verdicts(tables))]
            jobs += [(f, fig_dir, f"{study.name}-{f.key}") for sec in sections
                     for f in sec.figures]
            prepared.append((study, run_ids, sections))
        except Exception as exc:  # noqa: BLE001 - one study must not block the whole report
            prepared.append((study, run_ids, exc))
    saved = iter(save_figures(jobs, workers))
    out: list[Rendered] = []
    for study, run_ids, sections in prepared:
        if isinstance(sections, BaseException):
            out.append(_error_section(study, st, run_ids, sections, log))
            continue
        figures = [[(f.caption, next(saved)) for f in sec.figures] for sec in sections]
        failed = [p for figs in figures for _, p in figs if isinstance(p, str)]
        if failed:
            out.append(_error_section(study, st, run_ids, failed[0], log))
            continue
        out += [Rendered(sec, figs, [r for r in (st.get_run(i) for i in dict.fromkeys(
                    sec.run_ids)) if r is not None]) for sec, figs in zip(sections, figures,
                                                                        strict=True)]
    return out


def environment_section(store: Store, timings: list[dict] | None = None) -> Rendered:
    """The machine and software the report was made with, and per-job wall times."""
    import platform

    import numpy as np
    import pandas as pd
    import torch

    from widthlab import __version__

    env = pd.DataFrame([
        ("widthlab", __version__), ("python", platform.python_version()),
        ("torch", torch.__version__), ("numpy", np.__version__),
        ("platform", platform.platform()), ("processor", platform.processor() or "-"),
        ("cpu capability", torch.backends.cpu.get_cpu_capability()),
        ("cpu count", str(os.cpu_count())), ("torch threads", str(torch.get_num_threads())),
        ("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
        ("store", str(store.root)),
    ], columns=["item", "value"])
    tables = [("environment", env)]
    if timings:
        tables.append(("wall time per job (seconds; 0 = already stored, skipped)",
                       pd.DataFrame(timings)))
    return Rendered(Section(title="Timings and environment",
                            intro="Each run's own config, code version and timings are in its "
                                  "section's run details.", tables=tables))


def build_report(store: Store | str | os.PathLike, run_ids: Sequence[str] | None,
                 out: str | os.PathLike, *, studies: Sequence[Study],
                 timings: list[dict] | None = None, log: Log = _stderr) -> Path:
    """Write the HTML report of ``run_ids`` (None: every finished run in the store) to ``out``.

    ``studies``: the studies that may draw sections, in report order (the registry). Unfinished
    runs named explicitly are an error; unfinished runs found by "every run" are skipped with
    a note on ``log``, as are runs of studies that have no report section. Runs that fail
    ``widthlab runs check`` are left out, named on ``log`` and in a section of the report;
    when that leaves no run, the page is still written and :class:`WidthlabError` raised.
    """
    formats()  # a bad WIDTHLAB_FIGURE_FORMATS fails here, before anything is drawn
    st = Store.open(store)
    left_out: list[tuple[str, str]] = []
    chosen = _checked(st, choose_runs(st, run_ids, studies, log), log, left_out)
    out = Path(out)
    fig_dir = out.parent / f"{out.stem}-figures"
    rendered = render_studies([(study, chosen[study.name]) for study in studies  # report order
                               if study.name in chosen], st, fig_dir, log)
    if left_out:
        rendered.insert(0, left_out_section(left_out))
    rendered.append(environment_section(st, timings))
    path = write_report(rendered, out)
    if not chosen:
        runs = ", ".join(dict.fromkeys(r for r, _ in left_out))
        raise WidthlabError(f"every run was left out of the report (failed `widthlab runs "
                            f"check`: {runs}); {path} names them; repair with `widthlab runs "
                            "check --repair`, rerun their commands, then report again")
    return path
