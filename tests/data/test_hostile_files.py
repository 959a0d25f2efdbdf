"""Issue 30: hostile user files (repeated column names, overflowing labels, damaged
compressed files) are refused in one line before any training."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile

import numpy as np
import pandas as pd
import pytest

from widthlab.cli import main
from widthlab.data import from_arrays, load_data
from widthlab.errors import UsageError


def _csv_text(n: int = 40) -> bytes:
    rows = [f"{i * 0.5},{(i * 7) % 5},{i % 2}" for i in range(n)]
    return ("f0,f1,label\n" + "\n".join(rows) + "\n").encode()


@pytest.mark.parametrize("header", ["f0,label,label", "label,f0,f0"])
def test_repeated_csv_column_is_refused(tmp_path, header):
    rows = "\n".join(f"{i},{i % 2},{i % 2}" for i in range(30))
    (tmp_path / "d.csv").write_text(header + "\n" + rows + "\n")
    dup = header.split(",")[1]
    with pytest.raises(UsageError, match=f"column name\\(s\\) {dup} appear more than once"):
        load_data(tmp_path / "d.csv", "label")


def test_repeated_parquet_column_is_refused(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = np.arange(30)
    pq.write_table(pa.table([pa.array(n * 1.0), pa.array(n % 2), pa.array(n % 2)],
                            names=["f0", "label", "label"]), tmp_path / "d.parquet")
    rc = main(["train", "--data", str(tmp_path / "d.parquet"), "--target", "label",
               "--store", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and "label appear more than once" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_a_column_named_like_pandas_renames_is_still_fine(tmp_path):
    y = np.arange(30) % 2
    pd.DataFrame({"label": y, "label.1": np.arange(30) * 1.0}).to_csv(tmp_path / "d.csv",
                                                                      index=False)
    d = load_data(tmp_path / "d.csv", "label")
    assert d.n_features == 1


@pytest.mark.parametrize("labels, bad", [
    (np.array([1e20, 3e20] * 10), "1e+20"),
    (np.array([1e20, 5.0] * 10), "1e+20"),
    (np.array([2 ** 64 - 1, 1] * 10, dtype=np.uint64), "18446744073709551615"),
    (np.array([2.0 ** 63, 0.0] * 10), "9.223372036854776e+18"),
    (np.array([2 ** 70, 1] * 10, dtype=object), str(2 ** 70)),
])
def test_labels_too_large_for_a_class(labels, bad):
    x = np.arange(len(labels), dtype=float)[:, None]
    with pytest.raises(UsageError, match="too large|out of range") as info:
        from_arrays(x, labels)
    assert bad in str(info.value) and "sample 0" in str(info.value)


def test_largest_int64_label_is_still_a_class():
    y = np.array([2 ** 63 - 1, 0] * 10, dtype=np.uint64)
    d = from_arrays(np.arange(20.0)[:, None], y)
    assert d.classes == (0, 2 ** 63 - 1)


def test_one_sample_is_too_few_samples(tmp_path):
    (tmp_path / "one.csv").write_text("f0,label\n1.5,3\n")
    with pytest.raises(UsageError, match="too few samples"):
        load_data(tmp_path / "one.csv", "label")


def _compressed(kind: str, data: bytes) -> bytes:
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("d.csv", data)
        return buf.getvalue()
    return {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind](data)


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zip"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_compressed_csv_exits_2_in_one_line(tmp_path, capsys, kind, damage):
    good = _compressed(kind, _csv_text(400))
    path = tmp_path / f"d.csv.{kind}"
    path.write_bytes(good[:len(good) // 2] if damage == "truncated"
                     else bytes((b * 37 + 11) % 256 for b in range(300)))
    rc = main(["train", "--data", str(path), "--target", "label", "--store",
               str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "not a readable CSV file" in lines[0] and str(path) in lines[0]


def test_intact_compressed_csv_still_loads(tmp_path):
    for kind in ("gz", "bz2", "xz", "zip"):
        (tmp_path / f"d.csv.{kind}").write_bytes(_compressed(kind, _csv_text()))
        d = load_data(tmp_path / f"d.csv.{kind}", "label")
        assert d.n_features == 2 and d.n_classes == 2


@pytest.mark.parametrize("factor", [1e300, 1e-300, 2.0 ** 1000, 1e-310])
def test_extreme_magnitudes_standardise_like_ordinary_ones(factor):
    """Found by the file fuzzer: squares of features near 1e300 overflowed (std inf: the
    feature became all zeros) and near 1e-300 underflowed (std 0: inf inputs)."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 2))
    y = np.arange(40) % 2
    got = from_arrays(base * factor, y, val_size=0, test_size=4)
    train = np.sort(np.setdiff1d(np.arange(40), np.random.default_rng(0).permutation(40)[:4]))
    ref = base[train]
    want = ((ref - ref.mean(0)) / ref.std(0)).astype(np.float32)  # numpy float64, unscaled
    assert np.isfinite(got.train.x.numpy()).all()
    np.testing.assert_allclose(got.train.x.numpy(), want, rtol=1e-5, atol=1e-5)


def test_a_test_value_too_far_for_float32_is_refused():
    x = np.array([[0.0], [1e-300]] * 10)
    y = np.array([0, 1] * 10)
    with pytest.raises(UsageError, match="too many standard deviations"):
        from_arrays(x, y, test=(np.array([[1.0], [0.0]]), np.array([1, 0])), val_size=0)


@pytest.mark.parametrize("at, bits", [(0.875, 32), (0.875, 1), (0.87890625, 1)])
def test_damaged_npz_is_refused_in_one_line(tmp_path, at, bits):
    """Found by the file fuzzer: one flipped bit in an .npz's zip headers made zipfile call
    a member encrypted (RuntimeError) or 'compressed patched data' (NotImplementedError)."""
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((1, 2), dtype=np.int64), y=np.zeros(1, dtype=np.int64))
    data = bytearray(path.read_bytes())
    data[int(at * len(data))] ^= bits
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="not a readable .npz file") as info:
        load_data(path)
    assert "\n" not in str(info.value)


def test_parquet_with_invalid_utf8_text_is_refused_in_one_line(tmp_path):
    """Found by the file fuzzer: a flipped bit in a Parquet text column (invalid UTF-8) raised
    pyarrow's ArrowException when the labels were converted, after the read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    labels = ["ant"] * 10 + ["bee", "cat"]
    pq.write_table(pa.table([pa.array([False] * 12), pa.array(labels)], names=["0", "00"]),
                   path, compression="none")
    data = bytearray(path.read_bytes())
    at = data.index(b"bee")
    data[at] ^= 128  # b"\xe2ee": not UTF-8
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="not a readable Parquet file") as info:
        load_data(path, "00")
    assert "\n" not in str(info.value)
