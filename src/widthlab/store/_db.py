"""Opening the store's SQLite file safely, and turning storage failures into one-line errors.

What this module guards against:

- a read-only folder or mount: reads open the database with ``mode=ro`` (or ``immutable=1``
  when SQLite cannot create its ``-shm`` file there), writes fail with
  :class:`~widthlab.errors.ReadOnlyStoreError`;
- a damaged file, an empty (zero-length) file or a foreign SQLite database: refused with
  :class:`~widthlab.errors.CorruptStoreError` before anything is written to it;
- a full disk (``ENOSPC``, ``SQLITE_FULL``, torch's ``inline_container`` writer error):
  :class:`~widthlab.errors.DiskFullError`, whose message says that rerunning resumes.

Example::

    from widthlab.store._db import storage_error
    try:
        ...
    except Exception as exc:
        err = storage_error(exc, root)   # a WidthlabError, or None if not a storage failure
"""

from __future__ import annotations

import errno
import os
import sqlite3
import urllib.parse
from pathlib import Path

from widthlab.errors import (
    CorruptStoreError,
    DiskFullError,
    ReadOnlyStoreError,
    StoreError,
    WidthlabError,
)

SQLITE_MAGIC = b"SQLite format 3\x00"
REQUIRED_TABLES = frozenset({"runs", "models", "metrics", "arrays", "checkpoints"})
WRITERS_TABLE = """CREATE TABLE writers (
        run_id  TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
        host    TEXT NOT NULL,
        pid     INTEGER NOT NULL,
        started TEXT,
        seen_at TEXT NOT NULL
    )"""
_CORRUPT = ("file is not a database", "malformed", "database corrupt", "not a database")
_FULL = ("database or disk is full", "no space left", "disk quota exceeded")
_READ_ONLY = ("readonly database", "read-only", "readonly")
_RO_FIX = "reading works, to write use a writable --store folder (or copy the store there)"
_TORCH_WRITE = ("inline_container", "pytorchstreamwriter", "unexpected pos")


def _fix_corrupt(db: Path) -> str:
    return (f"move {db} away (restore it from a backup if you have one) and rerun: "
            "a new, empty store is created")


def probe_file(db: Path) -> None:
    """Refuse a database file that is empty or not an SQLite file, before SQLite touches it.

    Raises
    ------
    CorruptStoreError
        When ``db`` is a folder, has zero bytes, or does not start with SQLite's header.
    """
    if db.is_dir():
        raise CorruptStoreError(f"{db} is a folder, not the store's database; "
                                f"move it away and rerun")
    try:
        with open(db, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except PermissionError as exc:
        raise StoreError(f"cannot read the store database {db} ({exc.strerror}); "
                         "give yourself read permission or use another --store") from None
    if not head:
        raise CorruptStoreError(f"store database {db} is empty (0 bytes), not a widthlab "
                                f"store; {_fix_corrupt(db)}")
    if head != SQLITE_MAGIC:
        raise CorruptStoreError(f"{db} is not a database (not an SQLite file); "
                                f"{_fix_corrupt(db)}")


def check_tables(conn: sqlite3.Connection, db: Path, version: int) -> set[str]:
    """The database's table names, after checking they are widthlab's (never a foreign file).

    Raises
    ------
    CorruptStoreError
        When the file holds tables but no widthlab schema (another program's database), or a
        widthlab version stamp without widthlab's tables.
    """
    tables = {n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    if version == 0 and tables:
        shown = ", ".join(sorted(tables)[:4])
        raise CorruptStoreError(f"{db} is an SQLite database of another program (tables "
                                f"{shown}), not a widthlab store; point --store at another "
                                "folder (widthlab adds nothing to it)")
    if version > 0 and not REQUIRED_TABLES <= tables:
        missing = ", ".join(sorted(REQUIRED_TABLES - tables))
        raise CorruptStoreError(f"{db} is not a complete widthlab store (tables {missing} "
                                f"missing); {_fix_corrupt(db)}")
    return tables


def folder_writable(root: Path) -> bool:
    """Whether files can be created in ``root`` (or its nearest existing parent)."""
    path = root
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK)


def connect(db: Path, timeout_s: float, *, read_only: bool = False,
            immutable: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode; ``read_only``: ``mode=ro``, ``immutable``: also
    ``immutable=1`` (no ``-shm``/``-wal`` needed, for read-only media)."""
    if read_only or immutable:
        query = "immutable=1" if immutable else "mode=ro"
        uri = f"file:{urllib.parse.quote(str(db.absolute()))}?{query}"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
    else:
        conn = sqlite3.connect(db, timeout=timeout_s, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def wal_has_data(db: Path) -> bool:
    """Whether ``db``'s ``-wal`` file holds committed pages not yet copied into the database."""
    wal = db.with_name(db.name + "-wal")
    return wal.is_file() and wal.stat().st_size > 0


def may_read_read_only(exc: sqlite3.Error) -> bool:
    """Whether a failed normal open should be retried read-only (no room or no right to create
    the ``-shm``/``-wal`` files), rather than reported."""
    return _is(exc, ("unable to open", "disk i/o error", *_READ_ONLY, *_FULL))


def _is(exc: BaseException, words: tuple[str, ...]) -> bool:
    text = str(exc).lower()
    return any(w in text for w in words)


def storage_error(exc: BaseException, root: Path, *, writing: bool = True) -> WidthlabError | None:
    """The one-line :class:`WidthlabError` for a storage failure under ``root``, else None.

    Recognises read-only folders and mounts, full disks, damaged or foreign databases, a
    ``checkpoints`` path that is a file, and a lock held too long.
    """
    if isinstance(exc, WidthlabError):
        return exc
    if not isinstance(exc, sqlite3.Error) and isinstance(exc.__cause__, sqlite3.Error):
        exc = exc.__cause__  # pandas wraps SQLite's errors in its own DatabaseError
    db = root / "widthlab.sqlite"
    rerun = "free space and rerun the same command: it resumes where it stopped"
    if isinstance(exc, OSError):
        where = exc.filename or root
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFullError(f"disk full writing {where}; {rerun}")
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return ReadOnlyStoreError(f"store {root} is read-only ({exc.strerror}); {_RO_FIX}")
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            return StoreError(f"cannot write {where}: a file stands where the store needs a "
                              f"folder ({exc.strerror}); move that file away and rerun")
        return None
    if isinstance(exc, RuntimeError) and _is(exc, _TORCH_WRITE):
        return DiskFullError(f"disk full (or write error) saving a checkpoint in {root}; {rerun}")
    if not isinstance(exc, sqlite3.Error):
        return None
    if _is(exc, _FULL):
        return DiskFullError(f"disk full writing store {root}; {rerun}")
    if _is(exc, _CORRUPT):
        return CorruptStoreError(f"store database {db} is damaged ({exc}); {_fix_corrupt(db)}")
    if _is(exc, _READ_ONLY) or (writing and "unable to open" in str(exc)
                                and not folder_writable(root)):
        return ReadOnlyStoreError(f"store {root} is read-only; {_RO_FIX}")
    if "locked" in str(exc):
        return StoreError(f"store {root} stayed locked by another process ({exc}); wait for "
                          "it to finish and rerun")
    if "disk i/o error" in str(exc).lower():
        return StoreError(f"disk I/O error on store {root} (a full disk or a failing device); "
                          f"{rerun}")
    return StoreError(f"store {root} failed: {exc}; run `widthlab runs check --store {root}`")
