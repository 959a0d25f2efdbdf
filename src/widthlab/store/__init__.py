"""The results store: runs, metrics, per-neuron arrays and checkpoints in one SQLite file.

Public API::

    from widthlab.store import ArrayRow, MetricRow, Store
"""

from widthlab.store.sqlite import ArrayRow, MetricRow, Store, write_frame

__all__ = ["ArrayRow", "MetricRow", "Store", "write_frame"]
