"""Worker pools that stop when their parent is interrupted, and stay quiet when it is killed.

Example::

    quiet_resource_tracker()                 # before the first pool or queue is made
    with stopped_on_interrupt(ProcessPoolExecutor(2, mp_context=ctx)) as pool:
        ...                                  # Ctrl-C here terminates the workers at once
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

__all__ = ["quiet_resource_tracker", "stopped_on_interrupt"]


@contextlib.contextmanager
def stopped_on_interrupt(pool: ProcessPoolExecutor) -> Iterator[ProcessPoolExecutor]:
    """Use ``pool`` and shut it down after the block, waiting for its jobs; but on Ctrl-C (or
    any other exception leaving the block) terminate its workers at once instead of waiting
    for the jobs in flight. A widthlab job stopped mid-epoch resumes from its last checkpoint
    like any killed run, and its claim on the run goes with its process."""
    try:
        yield pool
    except BaseException:
        terminate(pool)
        raise
    pool.shutdown(wait=True)


def terminate(pool: ProcessPoolExecutor) -> None:
    """SIGTERM every worker of ``pool`` (SIGKILL after 3 s), cancel what is queued."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        with contextlib.suppress(OSError, ValueError):
            p.terminate()
    for p in procs:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            p.join(timeout=3)
            if p.is_alive():
                p.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def quiet_resource_tracker() -> None:
    """Keep multiprocessing's resource tracker from printing its multi-line "leaked semaphore"
    warnings when this process is killed (SIGKILL, out of memory): the tracker is started with
    this interpreter's ``-W`` options, so call this before the first pool or queue exists.
    The tracker still cleans up; workers die with their parent (``PR_SET_PDEATHSIG``)."""
    flag = "ignore:resource_tracker:UserWarning"
    if flag not in sys.warnoptions:
        sys.warnoptions.append(flag)
