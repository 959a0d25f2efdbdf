"""``widthlab reproduce``: every study of the journal, both datasets, one report.

    widthlab reproduce --profile quick                        # this machine, minutes
    widthlab reproduce --profile full --executor ray --address auto

Each study on each dataset is one :class:`~widthlab.engine.executor.Job`, run in the journal's
order by the chosen executor; jobs already finished with the same config and code version are
skipped (their manifests in ``<store>/jobs/``), an interrupted job resumes from its runs'
checkpoints. The report then draws every study from the store.

Example::

    from widthlab.reproduce import reproduce

    path = reproduce("quick", ["mnist", "fashion-mnist"], store="widthlab-runs")
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from widthlab.engine.executor import Job, make_executor
from widthlab.errors import UsageError
from widthlab.studies import ORDER, load
from widthlab.studies._common import DATASETS


def jobs_for(profile: str = "quick", datasets: Sequence[str] = DATASETS,
             studies: Sequence[str] | None = None, device: str = "auto") -> list[Job]:
    """The jobs of a reproduction, in the journal's order (study-major)."""
    if profile not in ("quick", "full"):
        raise UsageError(f"unknown profile {profile!r}; choose quick or full")
    bad = [d for d in datasets if d not in DATASETS]
    if bad or not datasets:
        raise UsageError(f"unknown dataset(s) {bad}; choose from {', '.join(DATASETS)}")
    names = [n for n in ORDER if load(n) is not None] if studies is None else list(studies)
    unknown = [n for n in names if n not in ORDER or load(n) is None]
    if unknown:
        raise UsageError(f"unknown study {unknown}; available: "
                         f"{', '.join(n for n in ORDER if load(n) is not None)}")
    jobs = []
    for name in names:
        needs = tuple(n for n in getattr(load(name), "REQUIRES", ()) if n in names)
        jobs += [Job(name, d, profile, options=(("device", device),), needs=needs)
                 for d in datasets]
    return jobs


def reproduce(profile: str = "quick", datasets: Sequence[str] = DATASETS, *,
              store="widthlab-runs", out: str | os.PathLike = "report.html",
              studies: Sequence[str] | None = None, executor: str = "local",
              address: str | None = None, device: str = "auto", progress: bool = True,
              log=None) -> Path:
    """Run (or skip) every job, then write the report; returns the report's path.

    ``log(line)`` receives one line per finished job (default: stderr).
    """
    from widthlab.report import build_report
    from widthlab.store import Store

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    jobs = jobs_for(profile, datasets, studies, device)
    ex = make_executor(executor, address)
    timings = []
    t0 = time.perf_counter()

    def done(job: Job, runs: list[str], seconds: float, skipped: bool) -> None:
        timings.append({"study": job.study, "dataset": job.dataset, "profile": job.profile,
                        "seconds": round(seconds, 1), "skipped": skipped, "runs": len(runs)})
        what = "already stored" if skipped else f"{seconds:.1f}s"
        log(f"widthlab: {job.name}: {what} ({len(runs)} runs)")

    st = Store(store)
    results = ex.run(jobs, st, progress=progress, on_done=done)
    run_ids = list(dict.fromkeys(r for runs in results.values() for r in runs))
    t1 = time.perf_counter()
    stamp = _stamp(st, run_ids)
    stamp_path = Path(out).with_suffix(Path(out).suffix + ".stamp")
    if Path(out).is_file() and stamp_path.is_file() and stamp_path.read_text() == stamp:
        log(f"widthlab: report {out} is up to date (same runs); total "
            f"{time.perf_counter() - t0:.1f}s")
        return Path(out)
    path = build_report(st, run_ids, out, timings=timings)
    from widthlab._io import atomic_path

    with atomic_path(stamp_path) as tmp:
        tmp.write_text(stamp)
    log(f"widthlab: report {path} ({time.perf_counter() - t1:.1f}s); "
        f"total {time.perf_counter() - t0:.1f}s")
    return path


def _stamp(st, run_ids: list[str]) -> str:
    """What the report was drawn from: each run and when it finished, and the code version."""
    from widthlab import __version__

    rows = [f"{r} {st.get_run(r)['finished_at']}" for r in sorted(run_ids)]
    return "\n".join([f"widthlab {__version__}", *rows]) + "\n"
