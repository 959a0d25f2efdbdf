"""Copying runs between stores (how the Ray executor ships results home); a part of
:class:`widthlab.store.Store`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from widthlab._io import atomic_path
from widthlab.errors import UsageError, WidthlabError
from widthlab.store._connection import StoreConnections
from widthlab.store._schema import SCHEMA_VERSION


class StoreTransfer(StoreConnections):
    """:meth:`dump_runs` and :meth:`load_runs`."""

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
