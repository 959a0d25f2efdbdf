"""Your own data from a file: ``.npz``, CSV or Parquet, checked before any training.

Example::

    from widthlab.data import load_data
    d = load_data("cells.csv", target="label", val_size=0.1, test_size=0.2, seed=0)
    d = load_data("embeddings.npz")          # arrays x, y (and optionally x_test, y_test)
    same = reload_splits(d.describe())       # what a stored run needs to get its data back

Formats, chosen by the file's suffix:

- ``.npz`` (``numpy.savez``): arrays ``x`` (inputs, any shape ``(n, ...)``) and ``y``
  (labels), optionally ``x_test`` and ``y_test`` (else a seeded hold-out); no other arrays
  (a misspelt ``x_tst`` would silently turn into a hold-out), no pickled objects.
- ``.csv``, ``.tsv`` (also ``.gz``/``.bz2``/``.xz``/``.zip`` compressed) and ``.parquet`` /
  ``.pq``: one header row naming every column (an unnamed CSV column, typically a row index
  written by ``DataFrame.to_csv``, is refused rather than learned from), one sample per row;
  ``target`` names the label column, every other column is a numeric feature. Labels may be
  text: the classes are then the distinct strings in sorted order (``DatasetSplits.classes``
  lists them). CSV numbers are parsed exactly (the round-trip parser), so a CSV written from
  float64 arrays gives the same tensors and ``content_id`` as those arrays; one written from
  float32 values holds their shortest decimal text, which is not the same float64 (use
  ``.npz`` for bit-identity).

Labels, standardisation, splits and ``content_id`` follow :mod:`widthlab.data.user`.
"""

from __future__ import annotations

import lzma
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from widthlab.data.registry import DATASETS
from widthlab.data.tensors import DatasetSplits, load_splits
from widthlab.data.user import Size, build_splits, fail
from widthlab.errors import UsageError

_COMPRESSED = (".gz", ".bz2", ".xz", ".zip")
FORMATS = {".npz": "npz", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
NPZ_KEYS = ("x", "y", "x_test", "y_test")
_UNNAMED = re.compile(r"Unnamed: \d+")
# pandas < 3 parses CSV floats to within an ulp unless asked for the round-trip parser;
# pandas 3 parses exactly by default and deprecates the option
_EXACT_FLOATS = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def _format(path: Path) -> tuple[str, str]:
    """(format, stem) of a file name, looking through a compression suffix for CSV."""
    name = path.name.lower()
    for comp in ("", *_COMPRESSED):
        for suffix, fmt in FORMATS.items():
            if name.endswith(suffix + comp) and (not comp or fmt == "csv"):
                return fmt, path.name[: len(path.name) - len(suffix + comp)]
    fail(str(path), f"unknown format {''.join(path.suffixes) or '(no suffix)'!r}; "
                    "give a .npz, .csv, .tsv or .parquet file")


def _why(err: BaseException) -> str:
    """An exception's text on one line."""
    text = " ".join(str(err).split())
    return text[:160] or type(err).__name__


def _columns(cols: list[str], limit: int = 12) -> str:
    shown = ", ".join(cols[:limit])
    return shown + (f", ... ({len(cols)} in all)" if len(cols) > limit else "")


# what a damaged .npz can raise in zipfile/numpy: a flipped flag bit reads as an encrypted
# (RuntimeError) or "patched" (NotImplementedError) member, a bad method id likewise
_NPZ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error,
               lzma.LZMAError, NotImplementedError, RuntimeError, MemoryError, UnicodeError)


def read_npz(path: Path, where: str) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """``x``, ``y`` and ``(x_test, y_test)`` or None from a checked ``.npz`` file."""
    fix = "save it with numpy.savez(path, x=..., y=...)"
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as err:
        fail(where, f"cannot read the file ({_why(err)}); check its permissions")
    if magic == b"\x93NUMPY":  # numpy.save: one unnamed array
        fail(where, f"holds one array (numpy.save), not named arrays; {fix}")
    if not magic.startswith(b"PK"):  # else np.load would try (and refuse) to unpickle it
        fail(where, f"not a readable .npz file (not a zip archive); {fix}")
    try:
        z = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as err:
        fail(where, f"not a readable .npz file ({_why(err)}); {fix}")
    with z:
        keys = list(z.files)
        if len(set(keys)) != len(keys):
            fail(where, f"names an array more than once ({', '.join(keys)}); save it again "
                        f"with numpy.savez")
        extra = [k for k in keys if k not in NPZ_KEYS]
        if extra:
            fail(where, f"unexpected array(s) {', '.join(extra)} (expected x, y and optionally "
                        "x_test, y_test); rename or remove them")
        for k in ("x", "y"):
            if k not in keys:
                fail(where, f"no array named {k!r} (arrays: {', '.join(keys) or 'none'}); "
                            "save the inputs as x and the labels as y")
        if ("x_test" in keys) != ("y_test" in keys):
            fail(where, "has only one of x_test and y_test; save both or neither")
        try:
            arrays = {k: z[k] for k in keys}
        except _NPZ_ERRORS as err:
            fail(where, f"not a readable .npz file ({_why(err)}); {fix}")
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    return arrays["x"], arrays["y"], test


# what a damaged or hostile file can raise while pandas/pyarrow read it (pyarrow's errors derive
# from these); EOFError must not reach click, which would call it a Ctrl-C ("aborted", 130)
_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, UnicodeError, EOFError,
                NotImplementedError, OverflowError, zipfile.BadZipFile, lzma.LZMAError,
                zlib.error, pd.errors.ParserError)


def _arrow_errors() -> tuple[type[BaseException], ...]:
    """pyarrow's base error (not all of its errors derive from ValueError/OSError)."""
    try:
        import pyarrow as pa
    except ImportError:
        return ()
    return (pa.ArrowException,)


def _header(path: Path, fmt: str, sep: str) -> list[str]:
    """The column names as written in the file (pandas renames a repeated CSV name)."""
    if fmt == "csv":
        row = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str,
                          keep_default_na=False)
        return [str(v) for v in row.iloc[0].tolist()] if len(row) else []
    import pyarrow.parquet as pq

    return [str(n) for n in pq.read_schema(path).names]


def read_table(path: Path, fmt: str, where: str) -> pd.DataFrame:
    """The rows of a CSV/TSV or Parquet file as a DataFrame (at least one row, every column
    named once). The one place that reads a user's table."""
    sep = "\t" if ".tsv" in path.name.lower() else ","
    kind = "CSV" if fmt == "csv" else "Parquet"
    try:
        names = _header(path, fmt, sep)
        dups = sorted({n for n in names if names.count(n) > 1 and n != ""})
        if dups:
            fail(where, f"column name(s) {_columns(dups, 5)} appear more than once; give "
                        "every column its own name (a repeated label column would leak the "
                        "label into the features)")
        if fmt == "csv":
            frame = pd.read_csv(path, sep=sep, **_EXACT_FLOATS)
        else:  # text is decoded lazily: here, so that invalid UTF-8 is a read error
            frame = pd.read_parquet(path)
            frame = frame.astype({c: object for c in frame.columns
                                  if not pd.api.types.is_numeric_dtype(frame[c])})
    except pd.errors.EmptyDataError:
        fail(where, "the file is empty; write a header row and one row per sample")
    except UsageError:
        raise
    except (*_READ_ERRORS, *_arrow_errors()) as err:
        fail(where, f"not a readable {kind} file ({_why(err)}); check the file and its format")
    unnamed = [str(c) for c in frame.columns if _UNNAMED.fullmatch(str(c))]
    if fmt == "csv" and unnamed:  # pandas' name for an empty header cell
        fail(where, f"{len(unnamed)} column(s) without a header ({unnamed[0]!r}; a row index "
                    "written by DataFrame.to_csv?); write with index=False or name the column")
    if len(frame) == 0:
        fail(where, f"the file has no rows (columns: {_columns([str(c) for c in frame.columns])})"
                    "; write one row per sample")
    return frame


def split_frame(frame: pd.DataFrame, target: str | None, where: str
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features float64, labels, feature names) of a table with label column ``target``."""
    cols = [str(c) for c in frame.columns]
    if target is None:
        fail(where, f"name the label column with target= (--target) "
                    f"(columns: {_columns(cols)})")
    if target not in cols:
        fail(where, f"no column {target!r} (columns: {_columns(cols)}); pass the label "
                    "column's name as target")
    frame = frame.set_axis(cols, axis=1)
    feats = frame.drop(columns=[target])
    if feats.shape[1] == 0:
        fail(where, f"only the label column {target!r}; add feature columns")
    text = [c for c in feats.columns if not (pd.api.types.is_numeric_dtype(feats[c])
                                             or pd.api.types.is_bool_dtype(feats[c]))]
    if text:
        fail(where, f"column(s) {_columns(text, 5)} are not numeric; encode them as numbers "
                    "or drop them")
    x = feats.to_numpy(dtype=np.float64, na_value=np.nan)
    return x, _label_column(frame[target], where, target), list(feats.columns)


def _label_column(col: pd.Series, where: str, target: str) -> np.ndarray:
    missing = col.isna().to_numpy()
    if missing.any():
        fail(where, f"column {target!r} has a missing label at sample "
                    f"{int(np.argmax(missing))}; drop the unlabelled rows")
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_integer_dtype(col):
        return col.to_numpy(dtype=np.int64)
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64)
    return np.asarray([str(v) for v in col.tolist()], dtype=str)


def load_data(path: str | os.PathLike, target: str | None = None, *, name: str | None = None,
              val_size: Size = 0.1, test_size: Size = 0.2, seed: int = 0,
              device: torch.device | str = "cpu") -> DatasetSplits:
    """Training splits from a ``.npz``, CSV/TSV or Parquet file (formats: module docstring).

    Parameters
    ----------
    path : the file; its suffix gives the format.
    target : the label column of a CSV/Parquet file (required there; not used for ``.npz``).
    name : the dataset's name in run ids and reports (default: the file name without suffix).
    val_size, test_size, seed, device : as in :func:`widthlab.data.from_arrays`; the hold-out
        is used when the file has no test split (always for CSV/Parquet).

    Raises
    ------
    UsageError
        one line starting with the path: missing, empty or unreadable file, unknown format,
        missing label column or arrays, and every data problem :func:`from_arrays` refuses.
    """
    p = Path(path)
    where = str(p)
    if not p.exists():
        fail(where, "no such file; check the path")
    if p.is_dir():
        fail(where, "is a folder; give a .npz, .csv, .tsv or .parquet file")
    fmt, stem = _format(p)
    try:
        empty = p.stat().st_size == 0
    except OSError as err:
        fail(where, f"cannot read the file ({_why(err)}); check its permissions")
    if empty:
        fail(where, "the file is empty; write the data into it (see widthlab.data.load_data)")
    kwargs: dict[str, Any] = dict(where=where, name=name or stem, val_size=val_size,
                                  test_size=test_size, seed=seed, device=device)
    if fmt == "npz":
        if target is not None:
            fail(where, "target names a CSV/Parquet column; an .npz holds arrays x and y "
                        "(and optionally x_test, y_test): drop target")
        x, y, test = read_npz(p, where)
        d = build_splits(x, y, test, **kwargs)
    else:
        x, y, names = split_frame(read_table(p, fmt, where), target, where)
        d = build_splits(x, y, None, names=names, x_name="the table",
                         y_name=f"column {target!r}", **kwargs)
    # where to find it again (reload_splits); neither enters content_id
    return replace(d, settings={**d.settings, "path": str(p.resolve()), "target": target})


def reload_splits(description: Mapping[str, Any], *,
                  device: torch.device | str = "cpu") -> DatasetSplits:
    """The splits a run was trained on, rebuilt from its stored :meth:`DatasetSplits.describe`.

    Built-in datasets are loaded by name; files are read again from their path and must still
    hold the same content (same ``content_id``). In-memory data (``from_arrays``,
    ``from_dataset``) cannot be rebuilt: pass the same splits again (``data=``).

    Raises
    ------
    UsageError
        the source is in-memory, the file is gone or unreadable, or its content changed.
    """
    source, settings = description.get("source"), dict(description.get("settings") or {})
    seed = int(description.get("seed", 0))
    if settings.get("test") == "official" and source in DATASETS:
        return load_splits(source, val_size=int(settings["val_size"]), seed=seed, device=device)
    if "path" not in settings:
        raise UsageError(f"{source or description.get('name')}: the run was trained on "
                         "in-memory data, which is not stored; pass the same splits again "
                         "(data=...)")
    d = load_data(settings["path"], settings.get("target"), name=description.get("name"),
                  val_size=settings.get("val_size", 0.1),
                  test_size=settings.get("test_size") or 0.2, seed=seed, device=device)
    if d.content_id != description.get("content_id"):
        fail(settings["path"], f"the file changed since the run was trained (content id "
                     f"{description.get('content_id')}, now {d.content_id}); restore it or "
                     "train a new run on it")
    return d
