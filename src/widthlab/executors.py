"""Executors: where the studies' jobs run (this process, or a Ray cluster).

A :class:`Job` is one study on one dataset with one profile (``variance`` on ``mnist``,
``quick``). An executor knows nothing of studies: it runs each job through the ``run_job``
callable its caller hands it (:func:`widthlab.reproduce.run_study_job`), passing the results
of the jobs it needs, and each job returns a :class:`~widthlab.studies.base.RunSet`-like value
with ``ids()``. Inside a job the engine trains every model of a run fused in one bank (that is the
engine's speed: replicates are never split into separate processes); jobs are independent
except for declared ``needs`` (the PCA study analyses the variance study's runs).

- :class:`LocalExecutor` runs the jobs on this machine, into the store: one after the other
  in this process, or side by side in ``workers`` processes.
- :class:`RayExecutor` ships each job to a Ray worker as soon as its needs are done. The worker
  starts from a private temporary store holding copies of the runs the job needs, runs the
  study there, and returns every run it produced (rows and checkpoints,
  :meth:`widthlab.store.Store.dump_runs`); the driver loads them into the store
  (:meth:`~widthlab.store.Store.load_runs`) as each job finishes. A job whose worker died is
  retried by Ray (``max_retries``) from scratch: the engine is deterministic, so the retry
  produces the same numbers.

Both executors write a manifest per finished job (``<store>/jobs/<key>.json``: the runs it
produced) and skip a job whose manifest's runs are all done in the store, so a second
``widthlab reproduce`` does no training. The key is a :class:`~widthlab.engine.spec.RunSpec`'s
(kind ``"job"``): the study, dataset, profile, the options that change numbers (a user data
file's content id, profile overrides; never the device or the file's path) and ``Job.code``:
the import closure of the code the job's steps call
(:meth:`widthlab.studies.base.Study.code_hash`), so editing a figure or a verdict keeps the key
and editing training code does not.

Example::

    from widthlab.executors import Job, LocalExecutor
    from widthlab.reproduce import run_study_job

    jobs = [Job("variance", "mnist", "quick"), Job("pca", "mnist", "quick", needs=("variance",))]
    LocalExecutor(run_study_job).run(jobs, "widthlab-runs")
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from widthlab._io import atomic_path
from widthlab._pool import quiet_resource_tracker, stopped_on_interrupt
from widthlab.engine.spec import job_spec
from widthlab.errors import UsageError, WidthlabError
from widthlab.store import Store
from widthlab.studies.base import RunSet

JOBS_DIR = "jobs"


@dataclass(frozen=True)
class Job:
    """One study on one dataset.

    Parameters
    ----------
    study : str
        A study module name (``widthlab.studies.ORDER``).
    dataset : str
    profile : str
        ``quick``, ``standard`` or ``full``.
    options : tuple of (str, value)
        Extra keyword arguments of the study's ``run`` (e.g. ``(("device", "cpu"),)``).
    needs : tuple of str
        Studies (same dataset and profile) whose runs this job reads; they run first.
    code : str
        Hash of the code that computes the job's numbers (part of the key).
    """

    study: str
    dataset: str
    profile: str = "quick"
    options: tuple[tuple[str, object], ...] = ()
    needs: tuple[str, ...] = field(default=())
    code: str = ""

    @property
    def name(self) -> str:
        return f"{self.study}/{self.dataset}/{self.profile}"

    def key(self) -> str:
        """Identifies the job's results (its manifest's name): ``<study>-<dataset>-<profile>-``
        and 12 digits of its :func:`~widthlab.engine.spec.job_spec`'s key."""
        spec = job_spec(self.study, self.dataset, self.profile, self.options, self.code)
        return f"{spec.prefix}-{spec.key()[:12]}"


#: ``run_job(job, store, progress, needs) -> RunSet``: ``needs`` maps each needed study to
#: its job's RunSet (same dataset and profile)
RunJob = Callable[[Job, Store, object, Mapping[str, RunSet]], RunSet]
OnDone = Callable[[Job, RunSet, float, bool], None]


# ------------------------------------------------------------------------------ manifests
def _manifest(store: Store, job: Job) -> Path:
    return store.root / JOBS_DIR / f"{job.key()}.json"


def job_done(store: Store, job: Job) -> RunSet | None:
    """The job's runs when its manifest exists and every run is done in ``store``."""
    path = _manifest(store, job)
    if not path.is_file():
        return None
    try:
        runs = dict(json.loads(path.read_text())["runs"])
    except (ValueError, KeyError, TypeError):  # an older or damaged manifest: run the job
        return None
    for r in runs.values():
        info = store.get_run(r)
        if info is None or info["status"] != "done":
            return None
    if store.check(list(runs.values()), integrity=False):  # damaged: the job completes them
        return None
    return RunSet(job.study, job.dataset, job.profile, runs)


def _write_manifest(store: Store, job: Job, result: RunSet, seconds: float) -> None:
    path = _manifest(store, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"job": job.name, "key": job.key(), "runs": dict(result.runs),
                                   "seconds": round(seconds, 3)}, indent=1))


def _order(jobs: Sequence[Job]) -> list[Job]:
    """Jobs with each job after the jobs it needs (same dataset and profile)."""
    names = {(j.study, j.dataset, j.profile) for j in jobs}
    for j in jobs:
        for n in j.needs:
            if (n, j.dataset, j.profile) not in names:
                raise UsageError(f"job {j.name} needs study {n!r}, which is not in the list")
    done: list[Job] = []
    pending = list(jobs)
    while pending:  # the first job (in the given order) whose needs are done goes next
        for j in pending:
            if all(any(d.study == n and d.dataset == j.dataset and d.profile == j.profile
                       for d in done) for n in j.needs):
                done.append(j)
                pending.remove(j)
                break
        else:
            raise UsageError("job dependencies form a cycle")
    return done


def _needed(jobs: Sequence[Job], job: Job) -> list[Job]:
    return [d for d in jobs if d.study in job.needs and d.dataset == job.dataset
            and d.profile == job.profile]


# ------------------------------------------------------------------------------ executors
class LocalExecutor:
    """Runs jobs on this machine, in dependency order (the default).

    With ``workers == 1`` every job runs in this process, one after the other. With more, that
    many worker processes run independent jobs side by side, each on ``threads`` torch threads
    (default: this process's threads divided among them, at least 1), all writing into the
    one store (it takes several writers: WAL, one transaction per epoch); a job starts as soon
    as the jobs it needs are done. On 2 cores two 1-thread workers do about 1.8x the work of
    one 2-thread process: most of a quick job is single-threaded (imports, data, small GEMMs,
    analyses, the store). Workers die with this process (Linux); an interrupted job resumes
    from its checkpoints like any run. Numbers depend on the thread count, as they always do:
    a run resumed at another count is not bitwise the same.

    Parameters
    ----------
    run_job : RunJob
        Runs one job (orchestration hands it in: :func:`widthlab.reproduce.run_study_job`).
        With workers it must be importable by name (pickled to the workers).
    workers : int
        Processes running jobs (1: this one).
    threads : int or None
        Torch threads of each worker.
    """

    def __init__(self, run_job: RunJob, workers: int = 1, threads: int | None = None):
        if workers < 1 or (threads is not None and threads < 1):
            raise UsageError(f"workers and threads must be >= 1, got {workers} and {threads}")
        self.run_job, self.workers, self.threads = run_job, int(workers), threads

    def run(self, jobs: Sequence[Job], store: Store | str, *, progress: object = None,
            on_done: OnDone | None = None) -> dict[Job, RunSet]:
        """Run (or skip, when done) every job; returns each job's RunSet.

        ``on_done(job, runset, seconds, skipped)`` is called after each job (in this
        process, in the order jobs finish).
        """
        st = Store.open(store)
        ordered = _order(jobs)
        results: dict[Job, RunSet] = {}
        todo = []
        for job in ordered:  # what is stored already is skipped first, in order
            found = job_done(st, job)
            if found is None:
                todo.append(job)
            else:
                results[job] = found
                if on_done:
                    on_done(job, found, 0.0, True)
        if self.workers > 1 and len(todo) > 1:
            self._run_pool(ordered, todo, st, results, progress, on_done)
            return {j: results[j] for j in ordered}
        for job in todo:
            t0 = time.perf_counter()
            needs = {n.study: results[n] for n in _needed(ordered, job)}
            result = self.run_job(job, st, progress, needs)
            _write_manifest(st, job, result, time.perf_counter() - t0)
            results[job] = result
            if on_done:
                on_done(job, result, time.perf_counter() - t0, False)
        return {j: results[j] for j in ordered}

    def _run_pool(self, ordered, todo, st, results, progress, on_done) -> None:
        import multiprocessing as mp
        import threading
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        import torch

        threads = self.threads or max(1, torch.get_num_threads() // self.workers)
        quiet_resource_tracker()
        ctx = mp.get_context("spawn")  # no torch thread pool or open database is inherited
        events = ctx.SimpleQueue() if callable(progress) else None

        def forward() -> None:  # the workers' progress events, drawn by this process's UI
            while (ev := events.get()) is not None:
                progress(ev)

        reader = threading.Thread(target=forward, daemon=True) if events else None
        if reader:
            reader.start()
        pending, running = list(todo), {}
        error: BaseException | None = None
        try:
            with stopped_on_interrupt(ProcessPoolExecutor(
                    min(self.workers, len(todo)), mp_context=ctx, initializer=_worker_init,
                    initargs=(threads, events))) as pool:
                while pending or running:
                    ready = [j for j in pending if error is None
                             and all(n in results for n in _needed(ordered, j))]
                    for job in ready[:max(0, self.workers - len(running))]:
                        pending.remove(job)
                        needs = {n.study: results[n] for n in _needed(ordered, job)}
                        running[pool.submit(_pool_job, self.run_job, job, str(st.root),
                                            needs)] = job
                    if not running:
                        if error is None:
                            raise WidthlabError("jobs wait on needs that never finished: "
                                                + ", ".join(j.name for j in pending))
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        job = running.pop(fut)
                        try:
                            result, seconds = fut.result()
                        except BaseException as exc:  # the others finish, then it is raised
                            error = error or exc
                            continue
                        _write_manifest(st, job, result, seconds)
                        results[job] = result
                        if on_done:
                            on_done(job, result, seconds, False)
        finally:
            if reader:
                events.put(None)
                reader.join(timeout=5)
        if error is not None:
            raise error


_EVENTS = None  # a worker's queue of progress events to its parent (None: no progress)


def _worker_init(threads: int, events) -> None:
    """A job worker: its torch threads, its progress queue, and death with its parent."""
    global _EVENTS
    import torch

    torch.set_num_threads(threads)
    _EVENTS = events
    try:  # Linux: SIGKILL when the parent dies, so no orphan keeps writing a run
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _pool_job(run_job: RunJob, job: Job, store_root: str,
              needs: dict[str, RunSet]) -> tuple[RunSet, float]:
    t0 = time.perf_counter()
    progress = _EVENTS.put if _EVENTS is not None else None
    result = run_job(job, Store.open(store_root), progress, needs)
    return result, time.perf_counter() - t0


def _remote_job(run_job: RunJob, job: Job, seed_dump: dict, needs: dict[str, RunSet],
                threads: int) -> tuple[RunSet, dict, float]:
    """Body of a Ray task: run ``job`` in a private store seeded with ``seed_dump``."""
    import torch

    torch.set_num_threads(threads)  # the driver's count: same kernels, same numbers
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="widthlab-job-") as tmp:
        st = Store(Path(tmp) / "store")
        seeded = set(st.load_runs(seed_dump)) if seed_dump.get("tables") else set()
        result = run_job(job, st, None, needs)
        produced = [r for r in st.runs()["run_id"] if r not in seeded]
        dump = st.dump_runs(produced)
    return result, dump, time.perf_counter() - t0


class RayExecutor:
    """Ships jobs to a Ray cluster and streams their results into the store.

    Parameters
    ----------
    run_job : RunJob
        Runs one job on a worker (it must be importable there: a module-level function).
    address : str or None
        ``ray.init(address=...)``: ``"auto"`` or ``"ray://host:10001"`` for a running cluster,
        None to start a local instance.
    num_cpus : int or None
        CPUs of a local instance (ignored when connecting to a cluster).
    cpus_per_job : float
        Ray CPUs reserved per job.
    max_retries : int
        Times Ray reruns a job whose worker process died.
    threads : int or None
        Torch threads in each job (None: this process's count, so results match the local
        executor's bit for bit).
    """

    def __init__(self, run_job: RunJob, address: str | None = "auto", *,
                 num_cpus: int | None = None, cpus_per_job: float = 1, max_retries: int = 3,
                 threads: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("the Ray executor needs Ray: pip install 'widthlab[ray]' "
                             "(or use --executor local)") from None
        self.run_job = run_job
        self.address, self.num_cpus = address, num_cpus
        self.cpus_per_job, self.max_retries = cpus_per_job, int(max_retries)
        self.threads = threads

    def _init(self):
        import ray

        if not ray.is_initialized():
            # workers import widthlab from their own environment: install it on every node
            kw = {"address": self.address} if self.address else {"num_cpus": self.num_cpus}
            ray.init(**kw, include_dashboard=False, log_to_driver=False)
        return ray

    def run(self, jobs: Sequence[Job], store: Store | str, *, progress: object = None,
            on_done: OnDone | None = None) -> dict[Job, RunSet]:
        """Run every job not done yet on the cluster; same contract as
        :meth:`LocalExecutor.run` (no progress bars from the workers)."""
        st = Store.open(store)
        ordered = _order(jobs)
        results: dict[Job, RunSet] = {}
        produced: dict[Job, list[str]] = {}  # every run a job brought in (its needs' seeds)
        for job in ordered:
            result = job_done(st, job)
            if result is not None:
                results[job] = result
                produced[job] = self._all_runs_of(st, result.ids())
                if on_done:
                    on_done(job, result, 0.0, True)
        todo = [j for j in ordered if j not in results]
        if todo:
            self._run_remote(ordered, todo, st, results, produced, on_done)
        return results

    def _submit(self, task, ordered, job, st, results, produced, threads):
        needs = _needed(ordered, job)
        seed = st.dump_runs(sorted({r for n in needs for r in produced[n]}))
        return task.remote(self.run_job, job, seed, {n.study: results[n] for n in needs},
                           threads)

    def _run_remote(self, ordered, todo, st, results, produced, on_done) -> None:
        import torch

        ray = self._init()
        task = ray.remote(num_cpus=self.cpus_per_job, max_retries=self.max_retries,
                          retry_exceptions=False)(_remote_job)
        threads = self.threads or torch.get_num_threads()
        running: dict = {}
        started: dict[Job, float] = {}
        while todo or running:
            for job in list(todo):
                if all(n in results for n in _needed(ordered, job)):
                    ref = self._submit(task, ordered, job, st, results, produced, threads)
                    running[ref] = job
                    started[job] = time.perf_counter()
                    todo.remove(job)
            if not running:
                raise WidthlabError("Ray jobs are waiting on needs that never finished")
            ready, _ = ray.wait(list(running), num_returns=1)
            job = running.pop(ready[0])
            try:
                result, dump, _ = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - report which job failed, then stop
                raise WidthlabError(f"job {job.name} failed on the Ray cluster after "
                                    f"{self.max_retries} retries: {exc}") from exc
            st.load_runs(dump)
            missing = [r for r in result.ids() if st.get_run(r) is None]
            if missing:
                raise WidthlabError(f"job {job.name} returned runs {missing} it did not ship")
            results[job] = result
            cols, rows = dump["tables"]["runs"]
            produced[job] = [row[cols.index("run_id")] for row in rows] or result.ids()
            seconds = time.perf_counter() - started[job]
            _write_manifest(st, job, result, seconds)
            if on_done:
                on_done(job, result, seconds, False)

    @staticmethod
    def _all_runs_of(st: Store, runs: list[str]) -> list[str]:
        """Runs a finished job depends on in the store: its own runs and the source runs
        named in their configs (stored analyses, warm starts)."""
        out = list(runs)
        for r in runs:
            cfg = st.get_run(r)["config"]
            for key in ("source_run", "conjecture_run", "init_from"):
                if cfg.get(key) and cfg[key] not in out:
                    out.append(cfg[key])
        return out


def make_executor(run_job: RunJob, kind: str = "local", address: str | None = None, **kw):
    """``"local"`` (``workers=N`` processes; 1: this one) or ``"ray"`` (``address`` None
    starts a local Ray instance)."""
    if kind == "local":
        return LocalExecutor(run_job, **kw)
    if kind == "ray":
        return RayExecutor(run_job, address, **kw)
    raise UsageError(f"unknown executor {kind!r}; choose local or ray")
