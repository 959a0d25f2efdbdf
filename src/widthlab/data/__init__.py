"""Datasets: strict IDX reading, verified fetching, the user's own data, training tensors.

Public API::

    from widthlab.data import load_splits, fetch, verify, read_idx, DATASETS
    from widthlab.data import from_arrays, load_data, from_dataset   # your own data
    from widthlab.data import load_text, TextCorpus, fetch_text      # character-level text

Every loader returns a :class:`DatasetSplits` (``n_features``, ``n_classes``, ``content_id``,
``describe()``)::

    d = load_data("cells.csv", target="label")   # or from_arrays(x, y) / from_dataset(ds)
    d.n_features, d.n_classes, d.content_id
"""

from widthlab.data.cache import FileStatus, cache_root, fetch, iter_info, verify
from widthlab.data.idx import IDXFormatError, read_idx, write_idx
from widthlab.data.registry import DATASETS, DatasetSpec, FileSpec, get_spec
from widthlab.data.tensors import DatasetSplits, Split, load_arrays, load_splits
from widthlab.data.text import TextCorpus, load_text
from widthlab.data.text_source import TEXTS, fetch_text, verify_text
from widthlab.data.user import from_arrays, from_dataset
from widthlab.data.user_files import load_data, reload_splits

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DatasetSplits",
    "FileSpec",
    "FileStatus",
    "IDXFormatError",
    "Split",
    "TEXTS",
    "TextCorpus",
    "cache_root",
    "fetch",
    "fetch_text",
    "from_arrays",
    "from_dataset",
    "get_spec",
    "iter_info",
    "load_arrays",
    "load_data",
    "load_splits",
    "load_text",
    "read_idx",
    "reload_splits",
    "verify",
    "verify_text",
    "write_idx",
]
