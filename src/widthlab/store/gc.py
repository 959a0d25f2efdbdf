"""Reclaiming disk: what no stored run needs.

``widthlab runs gc`` removes checkpoint files no checkpoint row records (left by a crash
between a write and its commit, or by older widthlab versions), temporary files whose writer
is gone, and job manifests (``jobs/*.json``) naming runs the store no longer holds. Recorded
checkpoints are never touched: a finished run keeps its weights-only checkpoint, which feeds
``load_bank``, PCA, importance and the width frontier.

Example::

    from widthlab.store import Store

    removed = Store("widthlab-runs").gc()          # paths removed, with their sizes
    sum(size for _, size in removed) / 2**20        # MiB freed
"""

from __future__ import annotations

import json
from pathlib import Path

from widthlab import _io
from widthlab.store._schema import CHECKPOINT_DIR


def gc_store(store, *, dry_run: bool = False) -> list[tuple[Path, int]]:
    """Remove (or with ``dry_run`` only list) what no stored run needs; returns
    ``(path, bytes)`` per file."""
    recorded = set()
    runs = set(store.runs()["run_id"])
    for run_id in runs:
        recorded |= set(store.checkpoint_paths(run_id))
    out: list[tuple[Path, int]] = []
    folder = store.root / CHECKPOINT_DIR
    if folder.is_dir():
        if not dry_run:
            out += [(p, 0) for p in _io.remove_orphans(folder)]
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.resolve() not in recorded and path.suffix == ".pt":
                out.append((path, path.stat().st_size))
    jobs = store.root / "jobs"
    if jobs.is_dir():
        for path in sorted(jobs.glob("*.json")):
            try:
                named = set(dict(json.loads(path.read_text())["runs"]).values())
            except (ValueError, KeyError, TypeError):
                named = set()
            if not named or not named <= runs:
                out.append((path, path.stat().st_size))
    if not dry_run:
        for path, _ in out:
            path.unlink(missing_ok=True)
    return out


__all__ = ["gc_store"]
