"""Issue 30: fuzz the user-file readers. Random tables (dtypes, shapes, column names with
repeats, text or number labels) are written as CSV/TSV (plain or gz/bz2/xz/zip, several
encodings), Parquet or .npz, optionally damaged (truncated, bytes flipped, garbage inserted),
and loaded with :func:`widthlab.data.load_data`. Every file must either load to exactly what
an independent reference reader (the ``csv`` module, ``gzip``/``bz2``/``lzma``/``zipfile``,
pyarrow, ``numpy.load``) finds in it, or be refused with a one-line ``UsageError`` naming the
file; never another exception. An undamaged file in a plain encoding with unique names must
load exactly when :func:`from_arrays` accepts its arrays.

    pytest tests/data/test_fuzz_user_files.py                           # CI: a few dozen files
    pytest tests/data/test_fuzz_user_files.py --hypothesis-profile fuzz  # thousands
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from widthlab.data import from_arrays, load_data
from widthlab.errors import UsageError

COMPRESS = {"": lambda b: b, ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
            ".zip": None}
DECOMPRESS = {"": lambda b: b, ".gz": gzip.decompress, ".bz2": bz2.decompress,
              ".xz": lzma.decompress}
# the NA markers pandas reads as missing (its default na_values) and the booleans it reads
NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
      "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
TRUE, FALSE = {"True", "TRUE", "true"}, {"False", "FALSE", "false"}
INT = re.compile(r"[+-]?\d+")
FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|Inf|INF|infinity|Infinity)")


class Refused(Exception):
    """The reference reader finds no table of numbers in the file."""


# ------------------------------------------------------------------------ reference reader
def _zip_member(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        if len(names) != 1:
            raise Refused("a zip of several files")
        return z.read(names[0])


def _column(raw: list[str]):
    """A column's values the way a CSV reader infers them: ints, floats, booleans, text
    (numbers may carry leading and trailing white space, as C's strtod allows)."""
    cells = [c.strip(" \t\n\v\f") for c in raw]
    if any(c in NA for c in raw):
        raise Refused("a missing value")
    if all(INT.fullmatch(c) for c in cells):
        values = [int(c) for c in cells]
        if all(-2 ** 63 <= v < 2 ** 63 for v in values):
            return np.array(values, dtype=np.int64)
        if all(0 <= v < 2 ** 64 for v in values):
            return np.array(values, dtype=np.uint64)
        raise Refused("integers beyond 64 bits")
    if all(FLOAT.fullmatch(c) or INT.fullmatch(c) for c in cells):
        return np.array([float(c) for c in cells])
    if all(c in TRUE | FALSE for c in raw):
        return np.array([c in TRUE for c in raw])
    return np.array(raw, dtype=str)


def reference_table(path: Path, sep: str, comp: str, target: str):
    """(x float64, y) of a CSV/TSV file by the csv module, or Refused."""
    data = path.read_bytes()
    try:
        data = _zip_member(data) if comp == ".zip" else DECOMPRESS[comp](data)
        text = data.decode("utf-8")
    except (OSError, EOFError, ValueError, lzma.LZMAError, zipfile.BadZipFile, zlib.error,
            NotImplementedError, RuntimeError) as exc:  # a damaged archive, a bad method
        raise Refused(f"cannot decompress or decode: {exc}") from None
    if "\r" in text:
        raise Refused("carriage returns: the readers differ")
    try:
        rows = [r for r in csv.reader(io.StringIO(text), delimiter=sep) if r]
    except csv.Error as exc:
        raise Refused(str(exc)) from None
    if len(rows) < 2:
        raise Refused("no data rows")
    header, body = rows[0], rows[1:]
    if any(len(r) != len(header) for r in body) or len(set(header)) != len(header):
        raise Refused("ragged rows or repeated names")
    if target not in header or len(header) < 2 or "" in header:
        raise Refused("no such label column")
    cols = {h: _column([r[i] for r in body]) for i, h in enumerate(header)}
    feats = [h for h in header if h != target]
    if any(cols[h].dtype.kind == "U" for h in feats):
        raise Refused("text features")
    x = np.stack([cols[h].astype(np.float64) for h in feats], 1)
    return x, cols[target]


def reference(path: Path, fmt: str, sep: str, comp: str, target: str | None):
    if fmt == "npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if sorted(z.files) != ["x", "y"]:
                    raise Refused("other arrays")
                return z["x"], z["y"]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
                NotImplementedError, RuntimeError) as exc:  # damaged zip headers
            raise Refused(str(exc)) from None
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            names = table.column_names  # decoded here (invalid UTF-8 raises)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise Refused(str(exc)) from None
        if len(set(names)) != len(names) or target not in names:
            raise Refused("repeated names or no label column")
        feats = [n for n in names if n != target]
        if not feats or table.num_rows == 0:
            raise Refused("no features or rows")
        try:  # text is decoded here (invalid UTF-8 raises)
            cols = {n: table[n].to_numpy() for n in names}
        except (ValueError, pa.ArrowException) as exc:
            raise Refused(str(exc)) from None
        if any(cols[n].dtype.kind not in "biuf" for n in feats):
            raise Refused("text features")
        return np.stack([cols[n].astype(np.float64) for n in feats], 1), cols[target]
    return reference_table(path, sep, comp, target)


# --------------------------------------------------------------------------------- writers
names_st = st.text(alphabet="abcxyz_ .-éß漢0", min_size=1, max_size=6)
labels_st = st.sampled_from(["int", "text", "float"])


@st.composite
def tables(draw):
    n = draw(st.integers(1, 24))
    d = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["int", "float", "bool"]))
    if kind == "int":
        x = np.array(draw(st.lists(st.integers(-10 ** 6, 10 ** 6), min_size=n * d,
                                   max_size=n * d))).reshape(n, d)
    elif kind == "float":
        x = np.array(draw(st.lists(st.floats(allow_nan=False, allow_infinity=False,
                                             width=draw(st.sampled_from([32, 64]))),
                                   min_size=n * d, max_size=n * d)), dtype=np.float64)
        x = x.reshape(n, d)
    else:
        x = np.array(draw(st.lists(st.booleans(), min_size=n * d, max_size=n * d))).reshape(n, d)
    label = draw(labels_st)
    codes = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    y = {"int": codes, "float": codes.astype(np.float64),
         "text": np.array(["ant", "bee", "cat", "dog"])[codes]}[label]
    names = draw(st.lists(names_st, min_size=d + 1, max_size=d + 1, unique=True))
    if draw(st.integers(0, 4)) == 0:  # a repeated column name
        names[draw(st.integers(0, d))] = names[draw(st.integers(0, d))]
    return x, y, names


def _csv_bytes(x, y, names, sep: str, encoding: str) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator="\n")
    w.writerow(names)
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        w.writerow([repr(v) if isinstance(v, float) else str(v) for v in row] + [str(label)])
    return buf.getvalue().encode(encoding, errors="replace")


NPZ_DTYPES = (None, np.float32, np.float16, np.int32, np.uint8)


def write(tmp: Path, x, y, names, fmt: str, comp: str, encoding: str, shape: int = 0) -> Path:
    target = names[-1]
    if fmt == "npz":  # other dtypes and shapes: (n, d, 1) inputs, (n, 1) labels
        path = tmp / "data.npz"
        dtype = NPZ_DTYPES[shape % len(NPZ_DTYPES)]
        xs = x if dtype is None else x.astype(dtype)
        np.savez(path, x=xs.reshape(len(x), -1, 1) if shape % 2 else xs,
                 y=y.reshape(-1, 1) if shape % 3 == 1 else y)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp / "data.parquet"
        cols = [pa.array(x[:, j]) for j in range(x.shape[1])] + [pa.array(y)]
        pq.write_table(pa.table(cols, names=[*names[:-1], target]), path)
    else:
        suffix = ".csv" if fmt == "csv" else ".tsv"
        raw = _csv_bytes(x, y, names, "," if fmt == "csv" else "\t", encoding)
        path = tmp / f"data{suffix}{comp}"
        if comp == ".zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr(f"data{suffix}", raw)
            raw = buf.getvalue()
        else:
            raw = COMPRESS[comp](raw)
        path.write_bytes(raw)
    return path


damage_st = st.one_of(
    st.just(None),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
)


def damage(path: Path, how) -> None:
    data = bytearray(path.read_bytes())
    at = min(int(how[1] * len(data)), max(len(data) - 1, 0))
    if how[0] == "truncate":
        del data[at:]
    elif how[0] == "flip" and data:
        data[at] ^= how[2]
    elif how[0] == "insert":
        data[at:at] = how[2]
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------------- the test
def _same(a, b) -> None:
    assert a.content_id == b.content_id
    assert a.classes == b.classes
    for split in ("train", "val", "test"):
        sa, sb = getattr(a, split), getattr(b, split)
        assert np.array_equal(sa.x.numpy(), sb.x.numpy(), equal_nan=False)
        assert np.array_equal(sa.y.numpy(), sb.y.numpy())


@settings(max_examples=max(settings.default.max_examples, 300),  # a few hundred in CI
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow], deadline=None)
@given(table=tables(), fmt=st.sampled_from(["csv", "tsv", "parquet", "npz"]),
       comp=st.sampled_from(list(COMPRESS)), encoding=st.sampled_from(
           ["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]), how=damage_st,
       shape=st.integers(0, 29))
def test_every_file_loads_exactly_or_is_refused_in_one_line(tmp_path_factory, table, fmt,
                                                             comp, encoding, how, shape):
    x, y, names = table
    tmp = tmp_path_factory.mktemp("f")
    comp = comp if fmt in ("csv", "tsv") else ""
    try:
        with np.errstate(all="ignore"):  # a cast to float16 / uint8 may overflow
            path = write(tmp, x, y, names, fmt, comp, encoding, shape)
    except (UnicodeError, ValueError):  # e.g. latin-1 cannot hold the name
        assume(False)
    if how is not None:
        damage(path, how)
    target = None if fmt == "npz" else names[-1]
    try:
        got = load_data(path, target)
    except UsageError as exc:
        msg = str(exc)
        assert "\n" not in msg and msg.startswith(str(path)), msg
        got = None
    event(f"{fmt}{comp} {'damaged' if how else 'intact'}: {'loaded' if got else 'refused'}")
    try:
        rx, ry = reference(path, fmt, "\t" if fmt == "tsv" else ",", comp, target)
        want = from_arrays(rx, ry, name=got.name if got else "data")
    except (Refused, UsageError) as why:
        want = None
        reason = why
    if got is not None:
        assert want is not None, f"loaded a file the reference refuses ({reason})"
        _same(got, want)
    plain = (how is None and encoding == "utf-8" and len(set(names)) == len(names)
             and all(nm.strip() == nm for nm in names))
    if plain and want is not None:
        assert got is not None, "refused an intact file that the reference reads"


def test_fuzz_profile_is_registered():
    from hypothesis import settings as s

    assert s.get_profile("fuzz").max_examples >= 1000
    assert s.get_profile("ci").max_examples <= 100


@pytest.mark.parametrize("text", ["f0,label\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n7,0\n8,1\n9,0\n"])
def test_reference_reader_agrees_on_a_plain_file(tmp_path, text):
    (tmp_path / "d.csv").write_text(text)
    x, y = reference_table(tmp_path / "d.csv", ",", "", "label")
    _same(load_data(tmp_path / "d.csv", "label"), from_arrays(x, y, name="d"))
