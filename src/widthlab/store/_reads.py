"""Reading runs, metrics, arrays and neurons, and exporting them; a part of
:class:`widthlab.store.Store`."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from widthlab import _io
from widthlab._io import atomic_path
from widthlab.errors import UsageError
from widthlab.store._connection import StoreConnections
from widthlab.store._schema import (
    EXPORT_FORMATS,
    MODEL_COLUMNS,
    NEURON_COLUMNS,
    RUN_COLUMNS,
    WIDE_KEYS,
    _decode_array,
    _has_table,
    fill_label_columns,
    label_parts,
)


class StoreReads(StoreConnections):
    """Every read of a store (they work on read-only folders and mounts)."""

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
        return fill_label_columns(run)

    def require_run(self, run_id: str) -> dict:
        """:meth:`get_run`, or a UsageError naming the store and the fix when there is none."""
        run = self.get_run(run_id)
        if run is None:
            raise UsageError(f"no run {run_id!r} in {self.root}; run `widthlab runs list` to "
                             "see the stored runs")
        return run

    def runs(self) -> pd.DataFrame:
        """One row per run, oldest first: id, label (``study``), its parts ``study_name`` and
        ``experiment``, dataset, model kind, status, model counts, epochs, seed, device,
        precision, code version, host and timestamps.

        ``status`` is ``running``, ``done`` or ``failed`` as stored, or ``interrupted`` for a
        running run whose writing process (recorded with each write) is gone from this host.
        """
        with self._read() as conn:
            if conn is None:
                return pd.DataFrame(columns=RUN_COLUMNS)
            writers = _has_table(conn, "writers")
            labelled = "experiment" in {c[1] for c in conn.execute("PRAGMA table_info(runs)")}
            df = pd.read_sql_query(
                "SELECT r.run_id, r.study, r.dataset, r.status,"
                + (" r.study_name, r.experiment, r.model," if labelled else "")
                + " (SELECT count(*) FROM models m WHERE m.run_id = r.run_id) AS n_models,"
                " (SELECT count(*) FROM models m WHERE m.run_id = r.run_id"
                "  AND m.status = 'failed') AS n_failed,"
                " r.epochs_done, r.seed, r.device, r.precision, r.code_version, r.host,"
                " r.created_at, r.updated_at, r.finished_at, "
                + ("w.host AS w_host, w.pid AS w_pid, w.started AS w_started FROM runs r"
                   " LEFT JOIN writers w ON w.run_id = r.run_id" if writers else
                   "NULL AS w_host, NULL AS w_pid, NULL AS w_started FROM runs r")
                + " ORDER BY r.created_at, r.rowid", conn)
        if not labelled:  # a schema-1 store read without writing: the same columns
            parts = [label_parts(label) for label in df["study"]]
            df["study_name"] = [p[0] for p in parts]
            df["experiment"] = [p[1] for p in parts]
            df["model"] = None
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
