"""Checking a store before trusting it, and marking damaged runs for retraining.

A finished run must hold every epoch's metrics for every model that was still training at that
epoch, its checkpoint must match its recorded SHA-256, and the database must pass SQLite's
``PRAGMA integrity_check``. A run that fails (for instance after its ``-wal`` journal was
deleted while another process held a read snapshot) can be repaired: it is rolled back to its
newest intact, complete epoch (or to the start) and marked ``running``, so the command that
made it retrains what is missing and ends with the numbers of an uninterrupted run.

Example::

    from widthlab.store import Store

    store = Store("widthlab-runs")
    problems = store.check()          # [] when every finished run is whole
    store.repair(problems)            # then rerun the same `widthlab train ...` command
    store.ensure_ok(["train-mnist-1a2b3c4d5e6f"])   # raise one line naming the first problem
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from widthlab.store._schema import _sha256_file
from widthlab.store.sqlite import Store


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store.

    Attributes
    ----------
    run_id : str or None
        The damaged run; None for a problem of the whole database.
    kind : str
        ``"integrity"``, ``"missing-epochs"`` or ``"checkpoint"``.
    message : str
        One line naming the problem.
    resume_epoch : int or None
        The epoch :func:`repair` rolls the run back to (None: cannot be repaired here).
    """

    run_id: str | None
    kind: str
    message: str
    resume_epoch: int | None = None


def _sha256(path: Path) -> str | None:
    try:
        return _sha256_file(path)
    except OSError:
        return None


def _missing_epochs(conn: sqlite3.Connection, run_id: str, last: int) -> dict[int, list[int]]:
    """``{epoch: [models]}`` of models that were training at an epoch but have no rows."""
    have = set(conn.execute("SELECT DISTINCT model, epoch FROM metrics WHERE run_id = ?",
                            (run_id,)).fetchall())
    models = conn.execute("SELECT model, status, failed_epoch FROM models WHERE run_id = ?",
                          (run_id,)).fetchall()
    missing: dict[int, list[int]] = {}
    for epoch in range(1, last + 1):
        for model, status, failed in models:
            training = status != "failed" or failed is None or epoch < failed
            if training and (model, epoch) not in have:
                missing.setdefault(epoch, []).append(int(model))
    return missing


def _check_run(store: Store, conn: sqlite3.Connection, run_id: str) -> list[Problem]:
    epochs_done, config = conn.execute("SELECT epochs_done, config FROM runs WHERE run_id = ?",
                                       (run_id,)).fetchone()
    planned = json.loads(config).get("epochs")
    engine_run = isinstance(planned, int)
    last = max(int(epochs_done), planned if engine_run else 0)
    missing = _missing_epochs(conn, run_id, last)
    complete = min(missing, default=last + 1) - 1  # every epoch up to here is whole
    ckpts = conn.execute("SELECT epoch, path, sha256 FROM checkpoints WHERE run_id = ?"
                         " ORDER BY epoch DESC", (run_id,)).fetchall()
    intact = [e for e, rel, sha in ckpts if _sha256(store.root / rel) == sha]
    resume = next((e for e in intact if e <= complete), 0)
    problems = []
    if missing:
        shown = ", ".join(f"{e} (models {','.join(map(str, ms))})"
                          for e, ms in list(missing.items())[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        problems.append(Problem(run_id, "missing-epochs",
                                f"run {run_id!r} is marked done but has no metrics for epoch "
                                f"{shown}{more}", resume))
    for epoch, rel, _ in ckpts:
        if epoch not in intact:
            what = "missing" if not (store.root / rel).is_file() else "corrupt (sha256 mismatch)"
            problems.append(Problem(run_id, "checkpoint", f"checkpoint {store.root / rel} of "
                                    f"run {run_id!r} (epoch {epoch}) is {what}", resume))
    if engine_run and not ckpts:
        problems.append(Problem(run_id, "checkpoint",
                                f"run {run_id!r} is marked done but has no checkpoint", 0))
    return problems


def check_store(store: Store, run_ids: Iterable[str] | None = None, *,
                integrity: bool = True) -> list[Problem]:
    """Every problem of ``store`` and of its finished runs ``run_ids`` (None: all of them).

    Reads only (works on a read-only store). Unfinished runs are not checked: the command
    that makes them completes them. ``integrity=False`` skips ``PRAGMA integrity_check``,
    which reads the whole database (seconds for a large store), when only the runs matter.

    Raises
    ------
    UsageError
        When a run id (or unique prefix) is not in the store.
    StoreError
        When the database cannot be opened at all (damaged header, foreign file).
    """
    ids = None if run_ids is None else [store.resolve(r) for r in run_ids]
    problems: list[Problem] = []
    with store._read() as conn:
        if conn is None:
            return problems
        bad = [r for (r,) in conn.execute("PRAGMA integrity_check")] if integrity else ["ok"]
        if bad != ["ok"]:
            problems.append(Problem(None, "integrity", f"database {store.db_path} fails "
                                    f"PRAGMA integrity_check: {bad[0]}"))
        done = [r for (r,) in conn.execute(
            "SELECT run_id FROM runs WHERE status = 'done' ORDER BY created_at, rowid")]
        for run_id in done if ids is None else [r for r in done if r in ids]:
            problems += _check_run(store, conn, run_id)
    return problems


def repair_runs(store: Store, problems: Iterable[Problem]) -> dict[str, int]:
    """Roll every run named in ``problems`` back to its newest intact, complete epoch and mark
    it ``running``; returns ``{run_id: epoch rolled back to}``.

    The command that made the run then resumes it (the engine resumes from the newest
    checkpoint, or retrains from the start when there is none) and its numbers are those of
    an uninterrupted run. Database-level problems are not repairable here and are skipped.
    """
    target: dict[str, int] = {}
    for p in problems:
        if p.run_id is not None and p.resume_epoch is not None:
            target[p.run_id] = min(target.get(p.run_id, p.resume_epoch), p.resume_epoch)
    for run_id, epoch in target.items():
        store.rollback(run_id, epoch)
    return target
