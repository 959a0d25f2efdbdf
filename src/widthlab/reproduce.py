"""``widthlab reproduce``: every study of the journal, both datasets, one report.

    widthlab reproduce --profile quick                        # this machine, minutes
    widthlab reproduce --profile full --executor ray --address auto

Each study on each dataset is one :class:`~widthlab.executors.Job`, run in the journal's order
by the chosen executor through :func:`run_study_job`; jobs already finished with the same
config and code are skipped (their manifests in ``<store>/jobs/``), an interrupted job resumes
from its runs' checkpoints. The report then draws every study from the store; it is rewritten
only when its runs or the code that draws it changed.

Example::

    from widthlab.reproduce import reproduce

    path = reproduce("quick", ["mnist", "fashion-mnist"], store="widthlab-runs")
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from widthlab._io import atomic_path
from widthlab.data import load_data
from widthlab.data.tensors import DatasetSplits
from widthlab.engine.events import progress_callback
from widthlab.engine.identity import code_hash, package_modules
from widthlab.errors import UsageError
from widthlab.executors import Job, make_executor
from widthlab.report import build_report
from widthlab.store import Store
from widthlab.studies import ORDER, available, get_study, load
from widthlab.studies.base import DATASETS, RunSet


def jobs_for(profile: str = "quick", datasets: Sequence[str] = DATASETS,
             studies: Sequence[str] | None = None, device: str = "auto",
             data: DatasetSplits | None = None, data_file: tuple[str, str | None] | None = None
             ) -> list[Job]:
    """The jobs of a reproduction, in the journal's order (study-major).

    With a user's ``data`` (loaded from ``data_file = (path, target)``), every job runs on it:
    its name is the dataset, and its content id is part of each job's key (a changed file
    reruns, an unchanged one is found done).
    """
    if data is not None:
        datasets = [data.name]
    present = [s.name for s in available()]
    names = present if studies is None else list(studies)
    unknown = [n for n in names if load(n) is None]
    if unknown:
        raise UsageError(f"unknown study {unknown}; available: {', '.join(present)}")
    bad = [d for d in datasets if d not in DATASETS and data is None]
    if bad or not datasets:
        raise UsageError(f"unknown dataset(s) {bad}; choose from {', '.join(DATASETS)}")
    jobs = []
    for name in sorted(names, key=ORDER.index):
        study = get_study(name)
        if profile not in study.profiles:
            raise UsageError(f"unknown profile {profile!r} for the {name} study; choose "
                             f"{', '.join(study.profiles)}")
        needs = tuple(n for n in study.requires if n in names)
        opts: tuple = (("device", device),)
        if data is not None and data_file is not None:
            opts += (("data_file", data_file), ("data_id", data.content_id))
        own = study.datasets != DATASETS  # a study of its own corpus runs once, on it
        if own and data is not None:
            continue  # a user's table is not its corpus (widthlab study NAME --data FILE)
        jobs += [Job(name, d, profile, options=opts, needs=needs, code=study.code_hash(profile, d))
                 for d in (study.datasets if own else datasets)]
    return jobs


def run_study_job(job: Job, store: Store, progress: object,
                  needs: Mapping[str, RunSet]) -> RunSet:
    """Run one job's study (the callable every executor is handed)."""
    study = get_study(job.study)
    opts = dict(job.options)
    device = str(opts.pop("device", "auto"))
    data_file, _ = opts.pop("data_file", None), opts.pop("data_id", None)
    data = None if data_file is None else load_data(data_file[0], data_file[1])
    return study.run(job.dataset, job.profile, store=store, device=device,
                     progress=progress_callback(progress), upstream=dict(needs), data=data,
                     **opts)


def reproduce(profile: str = "quick", datasets: Sequence[str] = DATASETS, *,
              store="widthlab-runs", out: str | os.PathLike = "report.html",
              studies: Sequence[str] | None = None, executor: str = "local",
              workers: int = 1, address: str | None = None, device: str = "auto",
              progress: object = None,
              log: Callable[[str], None] | None = None,
              data_file: tuple[str, str | None] | None = None) -> Path:
    """Run (or skip) every job, then write the report; returns the report's path.

    ``log(line)`` receives one line per finished job (default: stderr); ``progress`` is the
    engine's progress callback (:func:`widthlab.ui.engine_progress`); ``workers``: processes
    of the local executor running independent jobs side by side (1: this process).
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    data = None if data_file is None else load_data(data_file[0], data_file[1])
    jobs = jobs_for(profile, datasets, studies, device, data,
                    None if data_file is None else (str(Path(data_file[0]).resolve()),
                                                    data_file[1]))
    ex = make_executor(run_study_job, executor, address,
                       **({"workers": workers} if executor == "local" else {}))
    timings: list[dict] = []
    t0 = time.perf_counter()

    def done(job: Job, result: RunSet, seconds: float, skipped: bool) -> None:
        timings.append({"study": job.study, "dataset": job.dataset, "profile": job.profile,
                        "seconds": round(seconds, 1), "skipped": skipped,
                        "runs": len(result.ids())})
        what = "already stored" if skipped else f"{seconds:.1f}s"
        log(f"widthlab: [{len(timings)}/{len(jobs)}] {job.name}: {what} "
            f"({len(result.ids())} runs)")

    st = Store.open(store)
    results = ex.run(jobs, st, progress=progress, on_done=done)
    run_ids = list(dict.fromkeys(r for res in results.values() for r in res.ids()))
    t1 = time.perf_counter()
    stamp = _stamp(st, run_ids)
    stamp_path = Path(out).with_suffix(Path(out).suffix + ".stamp")
    if Path(out).is_file() and stamp_path.is_file() and stamp_path.read_text() == stamp:
        log(f"widthlab: report {out} is up to date (same runs and report code); total "
            f"{time.perf_counter() - t0:.1f}s")
        return Path(out)
    reported = [r for r in run_ids if _reportable(st, r)]
    path = build_report(st, reported, out, studies=available(), timings=timings, log=log)
    with atomic_path(stamp_path) as tmp:
        tmp.write_text(stamp)
    log(f"widthlab: report {path} ({time.perf_counter() - t1:.1f}s); "
        f"total {time.perf_counter() - t0:.1f}s")
    return path


def _reportable(st: Store, run_id: str) -> bool:
    """Runs labelled with a study's name (helper runs such as ``sparsifier-static`` are read
    by their study's tables, not reported on their own)."""
    return load(st.get_run(run_id)["study_name"]) is not None


def report_code_hash() -> str:
    """Hash of every module that draws the report (the studies' and the report's)."""
    return code_hash(package_modules("widthlab.studies"), package_modules("widthlab.report"))


def _stamp(st: Store, run_ids: list[str]) -> str:
    """What the report was drawn from: each run and when it finished, and the report code."""
    rows = [f"{r} {st.get_run(r)['finished_at']}" for r in sorted(run_ids)]
    return "\n".join([f"report code {report_code_hash()}", *rows]) + "\n"
