"""A claim on a run: one process trains a run at a time, and a dead one loses it.

Two identical commands on one store would otherwise both train the same run (the second
resumes from the first's checkpoints while the first still writes them). The engine holds a
claim on a run while it trains it (:func:`claimed`); a second process that wants the same run
waits until the claim is released and then finds the run done (and reuses it) or resumes it
from the first's last epoch.

A claim is a row of the ``claims`` table (created on first use; older widthlab versions ignore
the table) with its holder (host, pid, process start) and a lease: the holder renews it every
``lease_s / 3`` seconds from a background thread. Another process takes the claim over when
the lease has run out (a holder on another host that died or lost the network) or at once
when the holder is a process of this host that is gone (``kill -9``, a crash).

Example::

    from widthlab.store.claims import claimed
    with claimed(store, run_id):     # waits while another live process trains run_id
        ...                          # train, resume or reuse run_id
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from widthlab import _io
from widthlab.errors import StoreError
from widthlab.store._schema import _now

if TYPE_CHECKING:
    from widthlab.store.sqlite import Store

__all__ = ["CLAIMS_TABLE", "LEASE_S", "check_claim", "claimed", "holder", "try_claim"]

#: Seconds a claim stays valid without renewal (``WIDTHLAB_LEASE_S`` overrides it).
LEASE_S = float(os.environ.get("WIDTHLAB_LEASE_S", "60"))
CLAIMS_TABLE = """CREATE TABLE IF NOT EXISTS claims (
        run_id      TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        host        TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        started     TEXT,
        lease_until REAL NOT NULL,
        claimed_at  TEXT NOT NULL
    )"""
_HELD: dict[tuple[str, str], int] = {}  # (database, run) -> nesting depth in this process
_LOST: dict[tuple[str, str], dict] = {}  # claims another process took over from this one
_LOCK = threading.Lock()


def _me() -> tuple[str, str, int, str | None]:
    host, pid, started = _io.this_process()
    return f"{host}:{pid}:{started}", host, pid, started


def try_claim(store: Store, run_id: str, lease_s: float = LEASE_S) -> dict | None:
    """Claim (or renew the claim on) ``run_id`` for this process: None when it is now ours,
    else the live holder ``{"host", "pid", "lease_left"}``."""
    owner, host, pid, started = _me()
    with store._write() as conn:
        conn.execute(CLAIMS_TABLE)
        row = conn.execute("SELECT owner, host, pid, started, lease_until FROM claims "
                           "WHERE run_id = ?", (run_id,)).fetchone()
        now = time.time()
        if row is not None and row[0] != owner and row[4] > now \
                and _io.process_alive(row[1], row[2], row[3]) is not False:
            return {"host": row[1], "pid": int(row[2]), "lease_left": row[4] - now}
        conn.execute("INSERT OR REPLACE INTO claims (run_id, owner, host, pid, started, "
                     "lease_until, claimed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (run_id, owner, host, pid, started, now + lease_s, _now()))
    return None


def holder(store: Store, run_id: str) -> dict | None:
    """The claim's row on ``run_id`` (``owner``, ``host``, ``pid``, ``lease_until``), if any."""
    with store._read() as conn:
        if conn is None or not conn.execute("SELECT 1 FROM sqlite_master WHERE name = "
                                            "'claims'").fetchone():
            return None
        row = conn.execute("SELECT owner, host, pid, lease_until FROM claims WHERE "
                           "run_id = ?", (run_id,)).fetchone()
    return None if row is None else dict(zip(("owner", "host", "pid", "lease_until"), row,
                                              strict=True))


def _release(store: Store, run_id: str) -> None:
    with contextlib.suppress(StoreError), store._write() as conn:
        conn.execute(CLAIMS_TABLE)
        conn.execute("DELETE FROM claims WHERE run_id = ? AND owner = ?", (run_id, _me()[0]))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _renew(store: Store, run_id: str, lease_s: float, stop: threading.Event) -> None:
    while not stop.wait(lease_s / 3):
        with contextlib.suppress(StoreError):  # a busy or full disk: the next try renews
            other = try_claim(store, run_id, lease_s)
            if other is not None:  # the lease ran out and another process took the run
                _LOST[(str(store.db_path), run_id)] = other
                return


def check_claim(store: Store, run_id: str) -> None:
    """Raise :class:`StoreError` when another process took over this process's claim on
    ``run_id`` (this one stalled past its lease): the writer then stops before it writes."""
    other = _LOST.get((str(store.db_path), run_id))
    if other is not None:
        raise StoreError(f"the claim on run {run_id} was taken over by process {other['pid']} "
                         f"on {other['host']} (this process did not renew its lease in time); "
                         "stopped so that two processes do not write one run; rerun the "
                         "command to resume from the last stored epoch")


@contextlib.contextmanager
def claimed(store: Store, run_id: str, *, lease_s: float | None = None, poll_s: float = 0.5,
            log: Callable[[str], None] = _stderr) -> Iterator[None]:
    """Hold the claim on ``run_id`` while the block runs.

    Waits (polling every ``poll_s`` seconds, one line on ``log``) while another live process
    holds it; takes it over from a dead holder or one whose lease ran out. Nested claims of
    the same run in one process share the claim. Released on exit, also on an exception.
    """
    lease = LEASE_S if lease_s is None else float(lease_s)
    key = (str(store.db_path), run_id)
    with _LOCK:
        depth = _HELD.get(key, 0)
        _HELD[key] = depth + 1
    if depth:  # this process holds it already
        try:
            yield
        finally:
            with _LOCK:
                _HELD[key] -= 1
        return
    stop = threading.Event()
    try:
        said = False
        while (other := try_claim(store, run_id, lease)) is not None:
            if not said:
                log(f"widthlab: run {run_id} is being trained by process {other['pid']} on "
                    f"{other['host']}; waiting for it (its work is reused; Ctrl-C stops "
                    "waiting)")
                said = True
            time.sleep(poll_s)
        renew = threading.Thread(target=_renew, args=(store, run_id, lease, stop),
                                 daemon=True, name=f"widthlab-claim-{run_id}")
        renew.start()
        try:
            yield
        finally:
            stop.set()
            renew.join(timeout=5)
            _release(store, run_id)
    finally:
        with _LOCK:
            _HELD.pop(key, None)
            _LOST.pop(key, None)
