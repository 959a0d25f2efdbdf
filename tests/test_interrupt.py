"""Issue 30: Ctrl-C on `reproduce --workers 2` stops the jobs in flight within seconds (they
resume like any killed run), and a parent killed with SIGKILL leaves no Python
``resource_tracker`` warnings behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sleepy_job(job, store, progress, needs):
    """A job that says it started (its pid in a file) and then works for a minute."""
    (store.root.parent / f"started-{job.dataset}").write_text(str(os.getpid()))
    time.sleep(60)
    raise AssertionError("never finishes in these tests")


def drive(folder: str) -> None:
    """Run two sleepy jobs on two local workers (the body of the child process)."""
    from widthlab.executors import Job, LocalExecutor

    jobs = [Job("variance", "a"), Job("variance", "b")]
    LocalExecutor(_sleepy_job, workers=2, threads=1).run(jobs, Path(folder) / "store")


def _start(tmp_path: Path, dump_after: float = 0) -> tuple[subprocess.Popen, list[int]]:
    """The driver in a child process, SIGINT handled as in a terminal (a test runner or a
    library may have left SIGINT ignored, which a child would inherit; the disposition it
    found is written to ``sigint``); ``dump_after``: seconds after which a child still alive
    prints every thread's stack to its stderr (a hang explains itself)."""
    code = ("import faulthandler, signal, sys\n"
            f"open({str(tmp_path / 'sigint')!r}, 'w').write(repr(signal.getsignal(2)))\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            + (f"faulthandler.dump_traceback_later({dump_after})\n" if dump_after else "")
            + f"sys.path[:0] = [{str(ROOT / 'src')!r}, {str(ROOT)!r}]\n"
            "from tests.test_interrupt import drive\n"
            f"drive({str(tmp_path)!r})\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    markers = [tmp_path / "started-a", tmp_path / "started-b"]
    while not all(m.exists() and m.read_text() for m in markers):
        assert p.poll() is None, p.communicate()
        assert time.time() < deadline, "the workers never started their jobs"
        time.sleep(0.05)
    return p, [int(m.read_text()) for m in markers]


def _gone(pid: int, within: float) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as fh:  # a zombie counts as gone
                if fh.read().split(") ")[1].startswith("Z"):
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc")
def test_ctrl_c_stops_the_jobs_in_flight_within_seconds(tmp_path):
    p, workers = _start(tmp_path, dump_after=20)
    t0 = time.time()
    p.send_signal(signal.SIGINT)  # the parent only, as `kill -INT`
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate()
        pytest.fail(f"the driver did not exit on SIGINT (SIGINT was "
                    f"{(tmp_path / 'sigint').read_text()} at its start); its stacks:\n{err}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    assert time.time() - t0 < 10, "Ctrl-C waited for the jobs in flight"
    assert p.returncode != 0 and "KeyboardInterrupt" in err
    assert all(_gone(w, 5) for w in workers)
    assert not list((tmp_path / "store").glob("jobs/*.json"))  # nothing recorded as done


@pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc")
def test_sigkill_of_the_parent_prints_no_resource_tracker_warning(tmp_path):
    p, workers = _start(tmp_path)
    p.send_signal(signal.SIGKILL)
    try:
        _, err = p.communicate(timeout=60)  # EOF once the workers and the tracker are gone
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    assert all(_gone(w, 10) for w in workers)
    assert "resource_tracker" not in err and "Warning" not in err, err
    assert len(err.strip().splitlines()) <= 1
