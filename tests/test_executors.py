"""Executors: the local one skips finished jobs; the Ray one survives a killed worker and stores
exactly what the local one stores."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import pytest

from widthlab.errors import UsageError
from widthlab.executors import Job, LocalExecutor, job_done, make_executor
from widthlab.reproduce import run_study_job
from widthlab.store import Store

SMALL = (("widths", (8, 16)), ("seeds", (0, 1)), ("epochs", 2), ("train_size", 3000),
         ("device", "cpu"))
# the PCA job analyses the variance job's sweep; its own conjecture sweep is kept small
PCA_SMALL = (("seeds", (0,)), ("conj_widths", (4, 8)), ("conj_seeds", 1), ("conj_train", 2000),
             ("conj_epochs", 1), ("device", "cpu"))


def rows(store: Store) -> dict:
    """Every stored number, keyed by table (timings, hosts and dates left out)."""
    con = sqlite3.connect(store.db_path)
    out = {
        "metrics": sorted(con.execute("SELECT run_id, model, epoch, split, name, value "
                                      "FROM metrics").fetchall()),
        "arrays": sorted(con.execute("SELECT run_id, model, epoch, name, data "
                                     "FROM arrays").fetchall()),
        "runs": sorted(con.execute("SELECT run_id, study, dataset, status, config "
                                   "FROM runs").fetchall()),
    }
    con.close()
    return out


@pytest.mark.realdata
def test_local_executor_skips_done_jobs_and_orders_needs(tmp_path):
    jobs = [Job("pca", "mnist", "quick", options=PCA_SMALL, needs=("variance",)),
            Job("variance", "mnist", "quick", options=SMALL)]
    seen = []
    LocalExecutor(run_study_job).run(jobs, tmp_path, progress=None,
                        on_done=lambda j, r, s, skipped: seen.append((j.study, skipped)))
    assert seen == [("variance", False), ("pca", False)]
    assert all(job_done(Store(tmp_path), j) for j in jobs)
    seen.clear()
    t0 = time.perf_counter()
    LocalExecutor(run_study_job).run(jobs, tmp_path, progress=None,
                        on_done=lambda j, r, s, skipped: seen.append((j.study, skipped)))
    assert seen == [("variance", True), ("pca", True)] and time.perf_counter() - t0 < 5


def test_jobs_keep_their_order_unless_a_need_comes_later():
    from widthlab.executors import _order

    a, b = Job("variance", "mnist"), Job("variance", "fashion-mnist")
    p = Job("pca", "mnist", needs=("variance",))
    f = Job("flexible", "mnist")
    assert _order([a, b, p, f]) == [a, b, p, f]
    assert _order([p, f, a, b]) == [f, a, p, b]


def test_job_errors_are_named():
    with pytest.raises(UsageError, match="needs study 'variance'"):
        LocalExecutor(run_study_job).run([Job("pca", "mnist", needs=("variance",))], "unused")
    with pytest.raises(UsageError, match="executor"):
        make_executor(run_study_job, "dask")
    assert Job("variance", "mnist").key() != Job("variance", "mnist", options=SMALL).key()
    assert Job("variance", "mnist").key() != Job("variance", "mnist", code="edited").key()


def _kill_first_worker(stop: threading.Event, killed: list) -> None:
    """SIGKILL the first process running a widthlab job (Ray names it ray::_remote_job)."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if b"ray::_remote_job" in cmd:
                time.sleep(1.5)  # let it get into training
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.05)


@pytest.mark.realdata
def test_ray_executor_survives_a_killed_worker_and_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    jobs = [Job("variance", "mnist", "quick", options=SMALL),
            Job("variance", "fashion-mnist", "quick", options=SMALL)]
    LocalExecutor(run_study_job).run(jobs, tmp_path / "local", progress=None)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_worker, args=(stop, killed), daemon=True)
    killer.start()
    try:
        ray_ex = make_executor(run_study_job, "ray", None, num_cpus=2, max_retries=3)
        ray_ex.run(jobs, tmp_path / "ray")
    finally:
        stop.set()
        killer.join(5)
        ray.shutdown()
    assert killed, "no Ray worker was seen running a job"
    assert rows(Store(tmp_path / "ray")) == rows(Store(tmp_path / "local"))
    assert all(job_done(Store(tmp_path / "ray"), j) for j in jobs)


@pytest.mark.realdata
def test_local_workers_run_jobs_side_by_side_and_store_what_one_process_stores(
        tmp_path, one_thread):
    """Two worker processes (1 thread each) against this process at 1 thread: the same rows;
    the PCA job starts only after its variance job; progress events reach this process."""
    jobs = [Job("variance", "mnist", "quick", options=SMALL),
            Job("variance", "fashion-mnist", "quick", options=SMALL),
            Job("pca", "mnist", "quick", options=PCA_SMALL, needs=("variance",))]
    LocalExecutor(run_study_job).run(jobs, tmp_path / "one")
    order, events = [], []

    def done(job, result, seconds, skipped):
        order.append(job.name)

    out = LocalExecutor(run_study_job, workers=2, threads=1).run(
        jobs, tmp_path / "two", progress=events.append, on_done=done)
    assert list(out) == jobs
    assert order.index("pca/mnist/quick") > order.index("variance/mnist/quick")
    assert rows(Store(tmp_path / "one")) == rows(Store(tmp_path / "two"))
    epochs = [e for e in events if e.kind == "epoch"]
    assert {e.what.split("-")[0] for e in epochs} >= {"variance"} and len(epochs) >= 4
    # a second call finds everything stored and starts no worker
    seen = []
    LocalExecutor(run_study_job, workers=2).run(
        jobs, tmp_path / "two", on_done=lambda j, r, s, skipped: seen.append(skipped))
    assert seen == [True, True, True]


def test_local_workers_are_checked():
    with pytest.raises(UsageError, match="workers and threads must be >= 1"):
        LocalExecutor(run_study_job, workers=0)


@pytest.mark.realdata
def test_a_failing_job_in_a_worker_is_raised_after_the_others_finish(tmp_path, one_thread):
    good = Job("variance", "mnist", "quick", options=SMALL)
    bad = Job("variance", "fashion-mnist", "quick",
              options=(("widths", (0,)), ("device", "cpu")))
    with pytest.raises(UsageError, match="widths must be positive"):
        LocalExecutor(run_study_job, workers=2, threads=1).run([bad, good], tmp_path)
    assert job_done(Store(tmp_path), good) is not None and job_done(Store(tmp_path), bad) is None
