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

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import socket
import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from widthlab import _io
from widthlab._io import atomic_path
from widthlab.errors import CorruptStoreError, UsageError, WidthlabError
from widthlab.store import _db

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
DB_NAME = "widthlab.sqlite"
CHECKPOINT_DIR = "checkpoints"
RUN_STATUSES = ("running", "done", "failed")
MODEL_KEYS = ("name", "arch", "seed", "variant", "options")
EXPORT_FORMATS = ("csv", "parquet")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

_SCHEMA = [
    """CREATE TABLE runs (
        run_id       TEXT PRIMARY KEY,
        study        TEXT NOT NULL,
        dataset      TEXT NOT NULL,
        status       TEXT NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'done', 'failed')),
        config       TEXT NOT NULL DEFAULT '{}',
        code_version TEXT,
        seed         INTEGER,
        device       TEXT,
        precision    TEXT,
        host         TEXT,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        finished_at  TEXT,
        epochs_done  INTEGER NOT NULL DEFAULT 0,
        timings      TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE models (
        run_id       TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        model        INTEGER NOT NULL,
        name         TEXT NOT NULL,
        arch         TEXT NOT NULL,
        width        INTEGER,
        seed         INTEGER,
        variant      TEXT,
        options      TEXT NOT NULL DEFAULT '{}',
        status       TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'failed')),
        failed_epoch INTEGER,
        failure      TEXT,
        PRIMARY KEY (run_id, model)
    )""",
    """CREATE TABLE metrics (
        run_id TEXT NOT NULL,
        model  INTEGER NOT NULL,
        epoch  INTEGER NOT NULL,
        split  TEXT NOT NULL,
        name   TEXT NOT NULL,
        value  REAL,
        PRIMARY KEY (run_id, model, epoch, split, name),
        FOREIGN KEY (run_id, model) REFERENCES models (run_id, model) ON DELETE CASCADE
    )""",
    """CREATE TABLE arrays (
        run_id TEXT NOT NULL,
        model  INTEGER NOT NULL,
        epoch  INTEGER NOT NULL,
        name   TEXT NOT NULL,
        dtype  TEXT NOT NULL,
        shape  TEXT NOT NULL,
        data   BLOB NOT NULL,
        PRIMARY KEY (run_id, model, epoch, name),
        FOREIGN KEY (run_id, model) REFERENCES models (run_id, model) ON DELETE CASCADE
    )""",
    """CREATE TABLE checkpoints (
        run_id     TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        epoch      INTEGER NOT NULL,
        path       TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (run_id, epoch)
    )""",
]

RUN_COLUMNS = ["run_id", "study", "dataset", "status", "n_models", "n_failed", "epochs_done",
               "seed", "device", "precision", "code_version", "host", "created_at",
               "updated_at", "finished_at"]
MODEL_COLUMNS = ["model", "name", "arch", "width", "seed", "variant", "options", "status",
                 "failed_epoch", "failure"]
METRIC_COLUMNS = ["model", "epoch", "split", "name", "value"]
WIDE_KEYS = ["model", "name", "width", "seed", "variant", "epoch", "split"]
NEURON_COLUMNS = ["model", "epoch", "name", "neuron", "value"]


@dataclass(frozen=True)
class MetricRow:
    """One scalar of one model at one epoch, e.g. ``MetricRow(0, 3, "val", "accuracy", 0.97)``."""

    model: int
    epoch: int
    split: str
    name: str
    value: float


@dataclass(frozen=True)
class ArrayRow:
    """One numeric array of one model at one epoch, e.g. the per-neuron ``"std"``."""

    model: int
    epoch: int
    name: str
    value: np.ndarray


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} cannot be stored as JSON: {exc}; pass plain values") from exc


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _encode_array(value: Any, where: str) -> tuple[str, str, bytes]:
    """(dtype, shape JSON, little-endian bytes) of a numeric array or CPU tensor."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "biufc":
        raise UsageError(f"{where}: dtype {arr.dtype} cannot be stored; pass a numeric array")
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return arr.dtype.str, json.dumps(list(arr.shape)), arr.tobytes()


def _decode_array(dtype: str, shape: str, data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(json.loads(shape)).copy()


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise UsageError(
            f"invalid run id {run_id!r}; use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return run_id


def _checkpoint_name(run_id: str) -> re.Pattern:
    """The names of ``run_id``'s checkpoint files."""
    return re.compile(re.escape(run_id) + r"-e\d+\.pt")


def _model_record(i: int, spec: dict, run_seed: int) -> tuple:
    unknown = set(spec) - set(MODEL_KEYS)
    if unknown or "name" not in spec or "arch" not in spec:
        raise UsageError(
            f"model {i}: keys {sorted(spec)}; give 'name' and 'arch' and optionally "
            f"{', '.join(repr(k) for k in MODEL_KEYS[2:])}"
        )
    arch = [int(w) for w in spec["arch"]]
    if any(w < 1 for w in arch):
        raise UsageError(f"model {i} ({spec['name']}): hidden widths must be >= 1, got {arch}")
    return (i, str(spec["name"]), json.dumps(arch), arch[0] if arch else None,
            int(spec.get("seed", run_seed)), spec.get("variant"),
            _dumps(spec.get("options") or {}, f"options of model {i}"))


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the database to WAL mode (persistent; a no-op once done).

    Switching needs an exclusive lock and SQLite may answer "database is locked" at once,
    without waiting, while another process is creating the same store; so retry until the busy
    timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Store:
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

    # ------------------------------------------------------------------------- connections
    def _connect(self) -> sqlite3.Connection:
        return _db.connect(self.db_path, BUSY_TIMEOUT_S)

    def _check_version(self, conn: sqlite3.Connection) -> int:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UsageError(
                f"store {self.root} has schema version {version}, newer than this widthlab "
                f"understands ({SCHEMA_VERSION}); upgrade widthlab"
            )
        return version

    def _fault(self, exc: BaseException, *, writing: bool = True) -> BaseException:
        """``exc`` as a one-line store error when it is a storage failure, else ``exc``."""
        err = _db.storage_error(exc, self.root, writing=writing)
        return exc if err is None else err

    def _create_db(self) -> None:
        """Create the database complete (schema, WAL mode) under a temporary name and link it
        into place, so ``widthlab.sqlite`` never exists empty or half-made."""
        tmp = self.root / f".{DB_NAME}.{os.getpid()}.tmp"
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN")
                for statement in (*_SCHEMA, _db.WRITERS_TABLE):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            finally:
                conn.close()
            try:
                os.link(tmp, self.db_path)
            except FileExistsError:
                pass  # another process created it first
            except OSError:  # no hard links here: a rename (the database did not exist)
                if not self.db_path.exists():
                    os.replace(tmp, self.db_path)
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    def _open_write(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.db_path.exists():
            self._create_db()
        _db.probe_file(self.db_path)
        return self._connect()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``; commit on success, roll back on error.

        Storage failures (read-only, disk full, damaged or foreign file) become one-line
        :class:`~widthlab.errors.StoreError` subclasses; nothing is written to a foreign file.
        """
        try:
            conn = self._open_write()
        except (OSError, sqlite3.Error) as exc:
            raise self._fault(exc) from exc
        try:
            # refuse a foreign file before switching it to WAL mode (which writes to it)
            _db.check_tables(conn, self.db_path, self._check_version(conn))
            _use_wal(conn)
            conn.execute("BEGIN IMMEDIATE")
            version = self._check_version(conn)
            tables = _db.check_tables(conn, self.db_path, version)
            if version == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if "writers" not in tables:
                conn.execute(_db.WRITERS_TABLE)
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            err = self._fault(exc)
            if err is exc:
                raise
            raise err from exc
        finally:
            conn.close()

    def _open_read(self) -> sqlite3.Connection:
        """A reading connection: normal when the folder is writable, else ``mode=ro`` (when
        SQLite can use the leftover ``-wal``) or ``immutable=1`` (read-only media)."""
        if _db.folder_writable(self.root) and os.access(self.db_path, os.W_OK):
            conn = self._connect()
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.OperationalError as exc:  # e.g. no room for the -shm file
                conn.close()
                if _db.storage_error(exc, self.root, writing=False) is None:
                    raise
        if _db.wal_has_data(self.db_path):
            try:
                conn = _db.connect(self.db_path, BUSY_TIMEOUT_S, read_only=True)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.OperationalError:
                warnings.warn(f"store {self.root} was not closed cleanly and cannot be written "
                              "here; reading it without its -wal journal (the newest epochs "
                              "may be missing)", RuntimeWarning, stacklevel=4)
        return _db.connect(self.db_path, BUSY_TIMEOUT_S, immutable=True)

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        """A connection holding one read snapshot, or None when the store holds no database.

        Works on read-only folders and mounts; a damaged or foreign file is refused with one
        line (:class:`~widthlab.errors.CorruptStoreError`).
        """
        if not self.db_path.exists():
            yield None
            return
        try:
            _db.probe_file(self.db_path)
            conn = self._open_read()
        except (OSError, sqlite3.Error) as exc:
            raise self._fault(exc, writing=False) from exc
        try:
            version = self._check_version(conn)
            _db.check_tables(conn, self.db_path, version)
            if version == 0:
                yield None
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:  # an error may have ended it already
                    conn.execute("COMMIT")
        except (OSError, sqlite3.Error) as exc:
            raise self._fault(exc, writing=False) from exc
        finally:
            conn.close()

    def _touch_writer(self, conn: sqlite3.Connection, run_id: str) -> None:
        """Record this process as the one writing ``run_id`` (``runs list`` shows a running
        run whose writer is gone as ``interrupted``)."""
        host, pid, started = _io.this_process()
        conn.execute("INSERT OR REPLACE INTO writers (run_id, host, pid, started, seen_at)"
                     " VALUES (?, ?, ?, ?, ?)", (run_id, host, pid, started, _now()))

    def _live_status(self, status: str, host: str | None, pid: float | None,
                     started: str | None) -> str:
        if status != "running" or pid is None or pid != pid:  # NaN from pandas
            return status
        return "interrupted" if _io.process_alive(host, int(pid), started) is False else status

    def _require_run(self, conn: sqlite3.Connection | None, run_id: str) -> sqlite3.Connection:
        if conn is not None and conn.execute(
                "SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
            return conn
        raise UsageError(
            f"no run {run_id!r} in {self.root}; see `widthlab runs list --store {self.root}`"
        )

    # ------------------------------------------------------------------------------ writes
    def create_run(self, run_id: str, *, study: str, dataset: str, config: dict,
                   models: list[dict], seed: int, device: str, precision: str,
                   code_version: str) -> None:
        """Record a new run and its models, with status ``'running'``.

        Parameters
        ----------
        run_id
            Unique id: letters, digits, ``.``, ``_`` and ``-`` (it names checkpoint files).
        study, dataset
            What the run belongs to and trains on.
        config
            The full configuration, stored as JSON.
        models
            One dict per model with keys ``name``, ``arch`` (list of hidden widths) and
            optionally ``seed`` (default: the run's seed), ``variant`` and ``options`` (dict).
            A model's index is its position in the list.
        seed, device, precision, code_version
            Stored as given; the host name is added.

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
                " device, precision, host, created_at, updated_at)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, study, dataset, config_json, code_version, int(seed), device,
                 precision, socket.gethostname(), now, now),
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
        loaded onto the CPU with ``torch.load(weights_only=False)``.
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
                return int(epoch), torch.load(path, map_location="cpu", weights_only=False)
        return None

    def rollback(self, run_id: str, epoch: int) -> None:
        """Forget everything after ``epoch``, before resuming a run from there.

        Deletes metrics, arrays and checkpoint records (and files) of later epochs, sets models
        that failed after ``epoch`` back to ``'ok'``, sets ``epochs_done = epoch`` and marks the
        run ``'running'`` again (``finished_at`` cleared).
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

    # ------------------------------------------------------------------------ checks
    def check(self, run_ids: Iterable[str] | None = None) -> list:
        """What is wrong with the store and its finished runs (None: every run); [] if nothing.

        Checks that every finished run holds every epoch's metrics, that its checkpoint
        matches its recorded SHA-256, and ``PRAGMA integrity_check``. Reads only. Call it
        before reading runs you will report on; see :mod:`widthlab.store.check`.

        Returns
        -------
        list[widthlab.store.check.Problem]
        """
        from widthlab.store.check import check_store

        return check_store(self, run_ids)

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

    # ------------------------------------------------------------------------ transfer
    _TABLES = ("runs", "models", "metrics", "arrays", "checkpoints")

    def dump_runs(self, run_ids: Iterable[str] | None = None) -> dict:
        """Every row of ``run_ids`` (None: all runs) and the bytes of their recorded
        checkpoints, as a picklable dict for :meth:`load_runs` (how the Ray executor ships a
        worker's results back to the driver's store)."""
        out: dict = {"schema": SCHEMA_VERSION, "tables": {}, "files": {}}
        with self._read() as conn:
            if conn is None:
                return out
            ids = [r for (r,) in conn.execute("SELECT run_id FROM runs")] if run_ids is None \
                else list(run_ids)
            for r in ids:
                self._require_run(conn, r)
            for table in self._TABLES:
                cur = conn.execute(f"SELECT * FROM {table} WHERE run_id IN "
                                   f"({','.join('?' * len(ids))})", ids) if ids else None
                cols = [d[0] for d in cur.description] if cur else []
                out["tables"][table] = (cols, cur.fetchall() if cur else [])
        cols, rows = out["tables"]["checkpoints"]
        for row in rows:
            rel = dict(zip(cols, row, strict=True))["path"]
            out["files"][rel] = (self.root / rel).read_bytes()
        return out

    def load_runs(self, dump: dict) -> list[str]:
        """Insert a :meth:`dump_runs` result, in one transaction; returns the run ids added.

        Checkpoint files are written first (atomically, verified against their recorded
        SHA-256). A run already present here is left as it is unless it is unfinished and the
        dump's copy is done, in which case the dump's copy replaces it.
        """
        if dump.get("schema") != SCHEMA_VERSION:
            raise UsageError(f"cannot load runs of store schema {dump.get('schema')} into "
                             f"schema {SCHEMA_VERSION}; use the same widthlab version")
        cols, rows = dump["tables"]["runs"]
        incoming = {dict(zip(cols, r, strict=True))["run_id"]: dict(zip(cols, r, strict=True))
                    for r in rows}
        take = []
        for run_id, row in incoming.items():
            mine = self.get_run(run_id)
            if mine is None:
                take.append(run_id)
            elif mine["status"] != "done" and row["status"] == "done":
                self.delete_run(run_id)
                take.append(run_id)
        if not take:
            return []
        ccols, crows = dump["tables"]["checkpoints"]
        for row in crows:
            rec = dict(zip(ccols, row, strict=True))
            if rec["run_id"] not in take:
                continue
            data = dump["files"][rec["path"]]
            if hashlib.sha256(data).hexdigest() != rec["sha256"]:
                raise WidthlabError(f"checkpoint {rec['path']} of run {rec['run_id']!r} "
                                    "arrived corrupt (sha256 mismatch); run the job again")
            path = self.root / rec["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        with self._write() as conn:
            for table in self._TABLES:
                tcols, trows = dump["tables"][table]
                i = tcols.index("run_id")
                keep = [r for r in trows if r[i] in take]
                if keep:
                    conn.executemany(f"INSERT INTO {table} ({','.join(tcols)}) VALUES "
                                     f"({','.join('?' * len(tcols))})", keep)
        return take

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

    # ------------------------------------------------------------------------------- reads
    def resolve(self, run_id_or_prefix: str) -> str:
        """The run id that is, or uniquely starts with, ``run_id_or_prefix`` (like git).

        Raises
        ------
        UsageError
            When the store holds no runs, nothing matches, or the prefix is ambiguous.
        """
        hint = f"see `widthlab runs list --store {self.root}`"
        with self._read() as conn:
            ids = [] if conn is None else [r for (r,) in conn.execute(
                "SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY run_id",
                (len(run_id_or_prefix), run_id_or_prefix))]
            empty = conn is None or not conn.execute("SELECT 1 FROM runs").fetchone()
        if run_id_or_prefix in ids:
            return run_id_or_prefix
        if len(ids) == 1:
            return ids[0]
        if empty:
            raise UsageError(f"no runs in {self.root}; pass --store DIR (or set WIDTHLAB_STORE) "
                             "to the folder holding widthlab.sqlite")
        if not ids:
            raise UsageError(f"no run {run_id_or_prefix!r} in {self.root}; {hint}")
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise UsageError(f"run id {run_id_or_prefix!r} is ambiguous in {self.root} "
                         f"({len(ids)} runs: {shown}); give more characters or {hint}")

    def get_run(self, run_id: str) -> dict | None:
        """The run's row as a dict (``config`` and ``timings`` parsed), or None if unknown."""
        with self._read() as conn:
            if conn is None:
                return None
            cur = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
            writer = conn.execute("SELECT host, pid, started FROM writers WHERE run_id = ?",
                                  (run_id,)).fetchone() if _has_table(conn, "writers") else None
        if row is None:
            return None
        run = dict(zip(names, row, strict=True))
        run["status"] = self._live_status(run["status"], *(writer or (None, None, None)))
        run["config"] = json.loads(run["config"])
        run["timings"] = json.loads(run["timings"])
        return run

    def runs(self) -> pd.DataFrame:
        """One row per run, oldest first: id, study, dataset, status, model counts, epochs,
        seed, device, precision, code version, host and timestamps.

        ``status`` is ``running``, ``done`` or ``failed`` as stored, or ``interrupted`` for a
        running run whose writing process (recorded with each write) is gone from this host.
        """
        with self._read() as conn:
            if conn is None:
                return pd.DataFrame(columns=RUN_COLUMNS)
            writers = _has_table(conn, "writers")
            df = pd.read_sql_query(
                "SELECT r.run_id, r.study, r.dataset, r.status,"
                " (SELECT count(*) FROM models m WHERE m.run_id = r.run_id) AS n_models,"
                " (SELECT count(*) FROM models m WHERE m.run_id = r.run_id"
                "  AND m.status = 'failed') AS n_failed,"
                " r.epochs_done, r.seed, r.device, r.precision, r.code_version, r.host,"
                " r.created_at, r.updated_at, r.finished_at, "
                + ("w.host AS w_host, w.pid AS w_pid, w.started AS w_started FROM runs r"
                   " LEFT JOIN writers w ON w.run_id = r.run_id" if writers else
                   "NULL AS w_host, NULL AS w_pid, NULL AS w_started FROM runs r")
                + " ORDER BY r.created_at, r.rowid", conn)
        df["status"] = [self._live_status(*row) for row in
                        df[["status", "w_host", "w_pid", "w_started"]].itertuples(index=False)]
        return df[RUN_COLUMNS]

    def models(self, run_id: str) -> pd.DataFrame:
        """The run's models: index, name, arch (list), width, seed, variant, options (dict),
        status (``'ok'`` or ``'failed'``), failed_epoch and failure."""
        with self._read() as conn:
            df = pd.read_sql_query(
                f"SELECT {', '.join(MODEL_COLUMNS)} FROM models WHERE run_id = ? ORDER BY model",
                self._require_run(conn, run_id), params=(run_id,))
        df["arch"] = df["arch"].map(json.loads)
        df["options"] = df["options"].map(json.loads)
        return df

    def metrics(self, run_id: str, *, wide: bool = False) -> pd.DataFrame:
        """The run's metrics.

        Parameters
        ----------
        wide
            False: long format, columns ``model, epoch, split, name, value``. True: one row per
            (model, epoch, split) with one column per metric name, preceded by the model's
            ``name, width, seed, variant``.
        """
        with self._read() as conn:
            long = pd.read_sql_query(
                "SELECT model, epoch, split, name, value FROM metrics WHERE run_id = ?"
                " ORDER BY model, epoch, split, name",
                self._require_run(conn, run_id), params=(run_id,))
        long["value"] = long["value"].astype(float)  # NULL (stored NaN) -> NaN
        if not wide:
            return long
        models = self.models(run_id)[["model", "name", "width", "seed", "variant"]]
        if long.empty:
            return pd.DataFrame(columns=WIDE_KEYS)
        table = long.pivot(index=["model", "epoch", "split"], columns="name", values="value")
        table.columns.name = None
        table = table.reset_index().merge(models, on="model", how="left")
        return table[WIDE_KEYS + [c for c in table.columns if c not in WIDE_KEYS]]

    def array(self, run_id: str, model: int, name: str, epoch: int | None = None) -> np.ndarray:
        """One stored array of one model, at ``epoch`` (None: the latest stored epoch).

        Raises
        ------
        UsageError
            When no such array is stored; the message lists the names that are.
        """
        sql = ("SELECT dtype, shape, data FROM arrays WHERE run_id = ? AND model = ?"
               " AND name = ?")
        params: tuple = (run_id, int(model), name)
        if epoch is not None:
            sql, params = sql + " AND epoch = ?", params + (int(epoch),)
        with self._read() as conn:
            row = self._require_run(conn, run_id).execute(
                sql + " ORDER BY epoch DESC LIMIT 1", params).fetchone()
            if row is None:
                raise self._no_array(conn, run_id, name, epoch, model)
        return _decode_array(*row)

    def arrays(self, run_id: str, name: str, epoch: int | None = None) -> dict[int, np.ndarray]:
        """``{model: array}`` for every model that stored ``name`` at ``epoch`` (None: each
        model's latest stored epoch).

        Raises
        ------
        UsageError
            When no model stored such an array.
        """
        sql = ("SELECT model, epoch, dtype, shape, data FROM arrays WHERE run_id = ?"
               " AND name = ?")
        params: tuple = (run_id, name)
        if epoch is not None:
            sql, params = sql + " AND epoch = ?", params + (int(epoch),)
        with self._read() as conn:
            rows = self._require_run(conn, run_id).execute(
                sql + " ORDER BY model, epoch", params).fetchall()
            if not rows:
                raise self._no_array(conn, run_id, name, epoch)
        # Rows are sorted by epoch within a model, so the latest one wins.
        return {int(m): _decode_array(d, s, b) for m, _, d, s, b in rows}

    def _no_array(self, conn: sqlite3.Connection, run_id: str, name: str, epoch: int | None,
                  model: int | None = None) -> UsageError:
        names = [n for (n,) in conn.execute(
            "SELECT DISTINCT name FROM arrays WHERE run_id = ? ORDER BY name", (run_id,))]
        what = f"array {name!r}" + ("" if model is None else f" of model {model}")
        when = "" if epoch is None else f" at epoch {epoch}"
        return UsageError(f"run {run_id!r} has no {what}{when}; stored arrays: "
                          f"{', '.join(names) or 'none'}")

    def neurons(self, run_id: str) -> pd.DataFrame:
        """Every 1-D array of the run in long format: ``model, epoch, name, neuron, value``."""
        with self._read() as conn:
            rows = self._require_run(conn, run_id).execute(
                "SELECT model, epoch, name, dtype, shape, data FROM arrays WHERE run_id = ?"
                " ORDER BY model, epoch, name", (run_id,)).fetchall()
        parts = []
        for model, epoch, name, dtype, shape, data in rows:
            if len(json.loads(shape)) != 1:
                continue
            values = _decode_array(dtype, shape, data)
            parts.append(pd.DataFrame({
                "model": model, "epoch": epoch, "name": name,
                "neuron": np.arange(len(values)), "value": values.astype(float),
            }))
        if not parts:
            return pd.DataFrame(columns=NEURON_COLUMNS)
        return pd.concat(parts, ignore_index=True)

    def export(self, run_id: str, out_dir: Path, fmt: str = "csv") -> list[Path]:
        """Write the run's models, wide metrics and neurons as CSV or Parquet files.

        The files are ``{run_id}-models``, ``{run_id}-metrics`` and ``{run_id}-neurons`` with
        the suffix ``.csv`` or ``.parquet``, each written to a temporary file and renamed. The
        models' ``arch`` and ``options`` are written as JSON text.

        Returns
        -------
        list[Path]
            The three paths written.
        """
        if fmt not in EXPORT_FORMATS:
            raise UsageError(f"unknown export format {fmt!r}; choose one of: "
                             f"{', '.join(EXPORT_FORMATS)}")
        models = self.models(run_id)
        models["arch"] = models["arch"].map(json.dumps)
        models["options"] = models["options"].map(lambda o: json.dumps(o, sort_keys=True))
        frames = {"models": models, "metrics": self.metrics(run_id, wide=True),
                  "neurons": self.neurons(run_id)}
        out_dir = _io.ensure_writable(out_dir, "the export folder", "choose a writable --out")
        written = []
        for part, frame in frames.items():
            path = write_frame(frame, out_dir / f"{run_id}-{part}.{fmt}")
            written.append(path)
        return written


def write_frame(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``frame`` as CSV or Parquet (by the suffix) through a temporary file and a rename,
    so ``path`` never holds a half-written table. Creates the folder. Returns the path."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"cannot write {path}: the name must end in .csv or .parquet")
    with atomic_path(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path
