"""The store's schema, row types and small helpers shared by its parts (see
:mod:`widthlab.store.sqlite`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from widthlab.errors import UsageError

SCHEMA_VERSION = 2  # 2: runs gained study_name, experiment, model (v1 stores migrate)
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
        timings      TEXT NOT NULL DEFAULT '{}',
        study_name   TEXT,
        experiment   TEXT,
        model        TEXT
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

LABEL_COLUMNS = ("study_name", "experiment", "model")
RUN_COLUMNS = ["run_id", "study", "study_name", "experiment", "dataset", "model", "status",
               "n_models", "n_failed", "epochs_done", "seed", "device", "precision",
               "code_version", "host", "created_at", "updated_at", "finished_at"]
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


def label_parts(label: str) -> tuple[str, str | None]:
    """``(study name, experiment)`` of a run label ``"study:experiment"`` (experiment None
    without a colon): the one place a label is split, when a run is stored or a schema-1
    store's rows are migrated; readers use the columns."""
    study, sep, experiment = str(label).partition(":")
    return study, (experiment if sep else None)


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a schema-``version`` database to :data:`SCHEMA_VERSION` inside the caller's
    transaction (1 -> 2: add the label columns and fill them from each run's label; the
    model kind of an old run is unknown, NULL)."""
    if version < 2:
        have = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        for col in LABEL_COLUMNS:
            if col not in have:
                conn.execute(f"ALTER TABLE runs ADD COLUMN {col} TEXT")
        rows = conn.execute("SELECT run_id, study FROM runs").fetchall()
        conn.executemany("UPDATE runs SET study_name = ?, experiment = ? WHERE run_id = ?",
                         [(*label_parts(study), run_id) for run_id, study in rows])
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def fill_label_columns(run: dict) -> dict:
    """A run row read from a schema-1 store (not yet migrated: read-only) with the label
    columns a schema-2 row has."""
    if "study_name" not in run:
        run["study_name"], run["experiment"] = label_parts(run["study"])
        run["model"] = None
    return run


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
