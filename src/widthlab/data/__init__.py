"""Datasets: strict IDX reading, verified fetching and in-memory training tensors.

Public API::

    from widthlab.data import load_splits, fetch, verify, read_idx, DATASETS
"""

from widthlab.data.cache import FileStatus, cache_root, fetch, iter_info, verify
from widthlab.data.idx import IDXFormatError, read_idx, write_idx
from widthlab.data.registry import DATASETS, DatasetSpec, FileSpec, get_spec
from widthlab.data.tensors import DatasetSplits, Split, load_arrays, load_splits

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DatasetSplits",
    "FileSpec",
    "FileStatus",
    "IDXFormatError",
    "Split",
    "cache_root",
    "fetch",
    "get_spec",
    "iter_info",
    "load_arrays",
    "load_splits",
    "read_idx",
    "verify",
    "write_idx",
]
