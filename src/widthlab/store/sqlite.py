"""The results store: one SQLite database and a folder of checkpoints.

A store is a directory::

    widthlab-runs/
        widthlab.sqlite      runs, models, metrics, per-neuron arrays, checkpoint records
        checkpoints/         {run_id}-e{epoch:04d}.pt, only the newest one of each run

The database runs in WAL mode with a 30 s busy timeout and foreign keys on. Every write is one
``BEGIN IMMEDIATE`` transaction on a fresh connection, so several processes may write to the
same store at once: a writer waits for the lock instead of failing with "database is locked",
and readers see either all of an epoch or none of it.

Example::

    from widthlab.store import MetricRow, Store

    store = Store("widthlab-runs")
    store.create_run("sweep-1", study="sweep", dataset="mnist", config={"lr": 0.1},
                     models=[{"name": "w64", "arch": [64], "seed": 0, "variant": "plain",
                              "options": {}}],
                     seed=0, device="cpu", precision="float32", code_version="0.1.0")
    store.commit_epoch("sweep-1", 1, metrics=[MetricRow(0, 1, "val", "accuracy", 0.97)])
    store.finish_run("sweep-1")
    store.metrics("sweep-1", wide=True)
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import warnings
from collections.abc import Iterable
from pathlib import Path

from widthlab import _io
from widthlab._io import atomic_path
from widthlab.errors import CorruptStoreError, UsageError
from widthlab.store._reads import StoreReads, write_frame
from widthlab.store._schema import (
    CHECKPOINT_DIR,
    DB_NAME,
    SCHEMA_VERSION,
    ArrayRow,
    MetricRow,
    _check_run_id,
    _checkpoint_name,
    _dumps,
    _encode_array,
    _model_record,
    _now,
    _sha256_file,
    label_parts,
)
from widthlab.store._transfer import StoreTransfer

__all__ = ["ArrayRow", "MetricRow", "SCHEMA_VERSION", "Store", "write_frame"]


class Store(StoreReads, StoreTransfer):
    """Runs, metrics, per-neuron arrays and checkpoints kept under one directory.

    Parameters
    ----------
    root
        The store directory. It is created by the first write; reading a store that does not
        exist yet gives empty results and creates nothing.

    Attributes
    ----------
    root : Path
        The store directory.
    db_path : Path
        ``root / "widthlab.sqlite"``.
    """

    def __init__(self, root: str | os.PathLike = "widthlab-runs"):
        self.root = Path(root).expanduser()
        self.db_path = self.root / DB_NAME

    @classmethod
    def open(cls, store: Store | str | os.PathLike = "widthlab-runs") -> Store:
        """``store`` itself when it is a :class:`Store`, else a store on that folder (the one
        way every API function accepts "a store or its path")."""
        return store if isinstance(store, Store) else cls(store)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ------------------------------------------------------------------------------ writes
    def create_run(self, run_id: str, *, study: str, dataset: str, config: dict,
                   models: list[dict], seed: int, device: str, precision: str,
                   code_version: str, model: str | None = None) -> None:
        """Record a new run and its models, with status ``'running'``.

        Parameters
        ----------
        run_id
            Unique id: letters, digits, ``.``, ``_`` and ``-`` (it names checkpoint files).
        study, dataset
            What the run belongs to (its label, ``"study:experiment"``, stored whole and as
            the columns ``study_name`` and ``experiment``) and trains on.
        config
            The full configuration, stored as JSON.
        models
            One dict per model with keys ``name``, ``arch`` (list of hidden widths) and
            optionally ``seed`` (default: the run's seed), ``variant`` and ``options`` (dict).
            A model's index is its position in the list.
        seed, device, precision, code_version
            Stored as given; the host name is added.
        model
            What kind of model the run trains (``"MLPBank"``, an ``nn.Module`` class name),
            the ``model`` column; None for a stored analysis.

        Raises
        ------
        UsageError
            If ``run_id`` is invalid or already exists, or a model dict is malformed.
        """
        _check_run_id(run_id)
        records = [_model_record(i, spec, seed) for i, spec in enumerate(models)]
        config_json = _dumps(config, "config")
        now = _now()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise UsageError(
                    f"run {run_id!r} already exists in {self.root}; choose another id or "
                    "delete the old run"
                )
            conn.execute(
                "INSERT INTO runs (run_id, study, dataset, status, config, code_version, seed,"
                " device, precision, host, created_at, updated_at, study_name, experiment,"
                " model) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, study, dataset, config_json, code_version, int(seed), device,
                 precision, socket.gethostname(), now, now, *label_parts(study), model),
            )
            conn.executemany(
                "INSERT INTO models (run_id, model, name, arch, width, seed, variant, options)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *r) for r in records],
            )
            self._touch_writer(conn, run_id)

    def commit_epoch(self, run_id: str, epoch: int, *, metrics: Iterable[MetricRow] = (),
                     arrays: Iterable[ArrayRow] = (), checkpoint: Path | None = None,
                     failures: Iterable[tuple[int, int, str]] = (),
                     timings: dict | None = None) -> None:
        """Record everything an epoch produced, in one transaction.

        Metrics and arrays are inserted (replacing rows with the same key), failed models are
        marked, ``timings`` is merged into the run's timings (keys given replace stored keys),
        ``epochs_done`` becomes ``max(epochs_done, epoch)`` and, when ``checkpoint`` is given,
        its path and SHA-256 are recorded. Either all of this becomes visible or none of it.
        After the commit, the run's other checkpoint rows and files are deleted, so only the
        newest remains.

        Parameters
        ----------
        run_id, epoch
            The run and the epoch just completed.
        metrics, arrays
            Rows to store; each row carries its own model and epoch.
        checkpoint
            A file under the store root, normally from :meth:`save_checkpoint`.
        failures
            ``(model, failed_epoch, reason)`` for each model that failed (e.g. diverged).
        timings
            Seconds spent, e.g. ``{"train_s": 12.3}``.

        Raises
        ------
        UsageError
            Unknown run or model, a non-numeric array, or a checkpoint outside the store.
        """
        epoch = int(epoch)
        ckpt_row = None
        if checkpoint is not None:
            ckpt_row = (self._relative(Path(checkpoint)), _sha256_file(Path(checkpoint)))
        now = _now()
        with self._write() as conn:
            self._require_run(conn, run_id)
            self._touch_writer(conn, run_id)
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO metrics (run_id, model, epoch, split, name, value)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    ((run_id, int(m.model), int(m.epoch), m.split, m.name, float(m.value))
                     for m in metrics),
                )
                for a in arrays:
                    where = f"array {a.name!r} of model {a.model}, epoch {a.epoch}"
                    conn.execute(
                        "INSERT OR REPLACE INTO arrays (run_id, model, epoch, name, dtype, shape,"
                        " data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (run_id, int(a.model), int(a.epoch), a.name, *_encode_array(a.value,
                                                                                     where)),
                    )
            except sqlite3.IntegrityError as exc:
                raise UsageError(f"run {run_id!r}, epoch {epoch}: {exc} (unknown model?); "
                                 "metrics and arrays must name models of the run") from exc
            for model, failed_epoch, reason in failures:
                cur = conn.execute(
                    "UPDATE models SET status = 'failed', failed_epoch = ?, failure = ?"
                    " WHERE run_id = ? AND model = ?",
                    (int(failed_epoch), str(reason), run_id, int(model)),
                )
                if cur.rowcount != 1:
                    raise UsageError(f"run {run_id!r} has no model {model} to mark as failed")
            self._merge_timings(conn, run_id, timings)
            conn.execute(
                "UPDATE runs SET epochs_done = max(epochs_done, ?), updated_at = ?"
                " WHERE run_id = ?", (epoch, now, run_id),
            )
            if ckpt_row is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO checkpoints (run_id, epoch, path, sha256, created_at)"
                    " VALUES (?, ?, ?, ?, ?)", (run_id, epoch, *ckpt_row, now),
                )
        if ckpt_row is not None:
            self._drop_checkpoints(run_id, "epoch != ?", epoch)

    def save_checkpoint(self, run_id: str, epoch: int, state: dict) -> Path:
        """Write ``state`` with ``torch.save`` to ``checkpoints/{run_id}-e{epoch:04d}.pt``.

        The file is written to a temporary file in the same folder, flushed, fsynced and
        renamed, so the path never holds a partial checkpoint; temporary files of the run left
        by a killed process are removed first. The database is not touched: pass the returned
        path to :meth:`commit_epoch` to record it.

        Raises
        ------
        DiskFullError
            When the disk is full (nothing is left behind; rerunning resumes).
        """
        import torch

        _check_run_id(run_id)
        folder = self.root / CHECKPOINT_DIR
        path = folder / f"{run_id}-e{int(epoch):04d}.pt"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _io.remove_orphans(folder, _checkpoint_name(run_id))
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
        except (OSError, RuntimeError) as exc:
            err = self._fault(exc)
            if err is exc:
                raise
            raise err from exc
        return path

    def latest_checkpoint(self, run_id: str) -> tuple[int, dict] | None:
        """``(epoch, state)`` of the newest recorded checkpoint that is intact, else None.

        A recorded file that is missing or whose SHA-256 differs from the recorded one is
        skipped with a warning and the next older record (if any) is tried. The state is
        loaded onto the CPU with ``torch.load(weights_only=True)``, which runs no code from the
        file: one holding other pickled objects is skipped with a warning too.
        """
        import torch

        with self._read() as conn:
            rows = [] if conn is None else conn.execute(
                "SELECT epoch, path, sha256 FROM checkpoints WHERE run_id = ?"
                " ORDER BY epoch DESC", (run_id,)).fetchall()
        for epoch, rel, sha in rows:
            path = self.root / rel
            if not path.is_file():
                warnings.warn(f"checkpoint {path} of run {run_id!r} is missing; ignoring it",
                              RuntimeWarning, stacklevel=2)
            elif _sha256_file(path) != sha:
                warnings.warn(f"checkpoint {path} of run {run_id!r} is corrupt (sha256 "
                              "mismatch); ignoring it", RuntimeWarning, stacklevel=2)
            else:
                try:
                    return int(epoch), torch.load(path, map_location="cpu", weights_only=True)
                except Exception as exc:  # noqa: BLE001 - weights-only: nothing of it ran
                    warnings.warn(f"checkpoint {path} of run {run_id!r} is not a weights-only "
                                  f"checkpoint ({type(exc).__name__}); ignoring it",
                                  RuntimeWarning, stacklevel=2)
        return None

    def rollback(self, run_id: str, epoch: int) -> None:
        """Forget everything after ``epoch``, before resuming a run from there.

        Deletes metrics, arrays and checkpoint records (and files) of later epochs, sets models
        that failed after ``epoch`` back to ``'ok'``, sets ``epochs_done = epoch`` and marks the
        run ``'running'`` again (``finished_at`` cleared). Temporary checkpoint files of the run
        left by a killed process are removed.
        """
        epoch = int(epoch)
        with self._write() as conn:
            self._require_run(conn, run_id)
            self._touch_writer(conn, run_id)
            for table in ("metrics", "arrays"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ? AND epoch > ?",
                             (run_id, epoch))
            conn.execute(
                "UPDATE models SET status = 'ok', failed_epoch = NULL, failure = NULL"
                " WHERE run_id = ? AND failed_epoch > ?", (run_id, epoch),
            )
            conn.execute(
                "UPDATE runs SET epochs_done = ?, status = 'running', finished_at = NULL,"
                " updated_at = ? WHERE run_id = ?", (epoch, _now(), run_id),
            )
        self._drop_checkpoints(run_id, "epoch > ?", epoch)
        _io.remove_orphans(self.root / CHECKPOINT_DIR, _checkpoint_name(run_id))

    def finish_run(self, run_id: str, status: str = "done", timings: dict | None = None) -> None:
        """Mark a run ``'done'`` or ``'failed'``, stamp ``finished_at`` and merge ``timings``."""
        if status not in ("done", "failed"):
            raise UsageError(f"invalid final status {status!r}; use 'done' or 'failed'")
        now = _now()
        with self._write() as conn:
            self._require_run(conn, run_id)
            self._merge_timings(conn, run_id, timings)
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, updated_at = ? WHERE run_id = ?",
                (status, now, now, run_id),
            )

    def delete_run(self, run_id: str) -> None:
        """Delete a run's rows and its checkpoint files (recorded or not)."""
        with self._write() as conn:
            self._require_run(conn, run_id)
            paths = [self.root / p for (p,) in conn.execute(
                "SELECT path FROM checkpoints WHERE run_id = ?", (run_id,))]
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))  # cascades
        own = _checkpoint_name(run_id)
        folder = self.root / CHECKPOINT_DIR
        if folder.is_dir():
            paths += [p for p in folder.iterdir() if own.fullmatch(p.name)]
            _io.remove_orphans(folder, own)
        for path in paths:
            path.unlink(missing_ok=True)

    def checkpoint_paths(self, run_id: str) -> list[Path]:
        """The recorded checkpoint files of ``run_id`` (resolved paths, newest first)."""
        with self._read() as conn:
            rows = [] if conn is None else conn.execute(
                "SELECT path FROM checkpoints WHERE run_id = ? ORDER BY epoch DESC",
                (run_id,)).fetchall()
        return [(self.root / rel).resolve() for (rel,) in rows]

    def gc(self, *, dry_run: bool = False) -> list[tuple[Path, int]]:
        """Remove what no stored run needs (:func:`widthlab.store.gc.gc_store`)."""
        from widthlab.store.gc import gc_store

        return gc_store(self, dry_run=dry_run)

    # ------------------------------------------------------------------------ checks
    def check(self, run_ids: Iterable[str] | None = None, *, integrity: bool = True) -> list:
        """What is wrong with the store and its finished runs (None: every run); [] if nothing.

        Checks that every finished run holds every epoch's metrics, that its checkpoint
        matches its recorded SHA-256, and ``PRAGMA integrity_check``. Reads only. Call it
        before reading runs you will report on; see :mod:`widthlab.store.check`.
        ``integrity=False`` skips the database-wide ``PRAGMA integrity_check`` (seconds on a
        large store) when only the runs' own rows matter.

        Returns
        -------
        list[widthlab.store.check.Problem]
        """
        from widthlab.store.check import check_store

        return check_store(self, run_ids, integrity=integrity)

    def repair(self, problems: Iterable | None = None) -> dict[str, int]:
        """Mark the damaged runs of ``problems`` (None: :meth:`check`'s) for retraining: each
        is rolled back to its newest intact, complete epoch and set ``running``, so the same
        command resumes it. Returns ``{run_id: epoch rolled back to}``."""
        from widthlab.store.check import repair_runs

        return repair_runs(self, self.check() if problems is None else problems)

    def ensure_ok(self, run_ids: Iterable[str] | None = None) -> None:
        """Raise one line naming the first problem :meth:`check` finds, else return.

        Raises
        ------
        CorruptStoreError
            When a run (or the database) fails the check.
        """
        problems = self.check(run_ids)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise CorruptStoreError(
                f"{problems[0].message}{more}; run `widthlab runs check --repair --store "
                f"{self.root}`, then rerun the command that made the run")

    def _merge_timings(self, conn: sqlite3.Connection, run_id: str,
                       timings: dict | None) -> None:
        if not timings:
            return
        (stored,) = conn.execute("SELECT timings FROM runs WHERE run_id = ?",
                                 (run_id,)).fetchone()
        merged = {**json.loads(stored), **timings}
        conn.execute("UPDATE runs SET timings = ? WHERE run_id = ?",
                     (_dumps(merged, "timings"), run_id))

    def _relative(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            raise UsageError(f"checkpoint {path} is not inside the store {self.root}; "
                             "write it with Store.save_checkpoint") from None

    def _drop_checkpoints(self, run_id: str, condition: str, epoch: int) -> None:
        """Delete the run's checkpoint rows matching ``condition``, then their files."""
        with self._write() as conn:
            rows = conn.execute(f"SELECT epoch, path FROM checkpoints WHERE run_id = ?"
                                f" AND {condition}", (run_id, epoch)).fetchall()
            conn.execute(f"DELETE FROM checkpoints WHERE run_id = ? AND {condition}",
                         (run_id, epoch))
            kept = {p for (p,) in conn.execute("SELECT path FROM checkpoints")}
        for _, rel in rows:
            if rel not in kept:
                (self.root / rel).unlink(missing_ok=True)
