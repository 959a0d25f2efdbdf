"""The results store: runs, metrics, per-neuron arrays and checkpoints in one SQLite file.

Public API::

    from widthlab.store import ArrayRow, MetricRow, Problem, Store

    store = Store("widthlab-runs")
    store.ensure_ok(run_ids)   # before reading runs for a report: one line if any is damaged

Reads work on read-only folders and mounts; storage failures (read-only, damaged or foreign
database, full disk) raise one-line :class:`~widthlab.errors.StoreError` subclasses.
"""

from widthlab.store.check import Problem
from widthlab.store.sqlite import ArrayRow, MetricRow, Store, write_frame

__all__ = ["ArrayRow", "MetricRow", "Problem", "Store", "write_frame"]
