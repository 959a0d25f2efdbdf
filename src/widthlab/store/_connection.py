"""Opening the store's database for reading and writing (a part of
:class:`widthlab.store.Store`; see :mod:`widthlab.store._db` for the failure handling)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path

from widthlab import _io
from widthlab.errors import UsageError
from widthlab.store import _db
from widthlab.store._schema import (
    _SCHEMA,
    BUSY_TIMEOUT_S,
    DB_NAME,
    SCHEMA_VERSION,
    _now,
    _use_wal,
    migrate,
)


class StoreConnections:
    """How a store opens its database: one transaction per write, one snapshot per read."""

    root: Path
    db_path: Path

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
            elif version < SCHEMA_VERSION:
                migrate(conn, version)  # in this write's transaction: all or nothing
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
                if not _db.may_read_read_only(exc):
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
