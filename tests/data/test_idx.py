"""The IDX reader: round trips on files written here, and one specific error per corruption."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given
from hypothesis.extra import numpy as hnp

from widthlab.data.idx import IDXFormatError, encode_idx, parse_idx, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((5, 3, 4)) * 50).astype(dtype)
    path = tmp_path / "a.idx"
    write_idx(path, arr, compress=compress)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress


@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=4, max_side=6)))
def test_round_trip_any_uint8_shape(arr):
    np.testing.assert_array_equal(parse_idx(encode_idx(arr)), arr)


def test_header_layout_is_big_endian():
    raw = encode_idx(np.zeros((2, 3), np.uint8))
    assert raw[:4] == bytes([0, 0, 0x08, 2])
    assert raw[4:12] == bytes([0, 0, 0, 2, 0, 0, 0, 3])
    assert len(raw) == 12 + 6


def _write(tmp_path, raw, name="bad-idx"):
    p = tmp_path / name
    p.write_bytes(raw)
    return p


def test_truncated_names_file_and_fix(tmp_path):
    raw = encode_idx(np.arange(100, dtype=np.uint8).reshape(10, 10))
    p = _write(tmp_path, raw[:-7])
    with pytest.raises(IDXFormatError, match=r"bad-idx: file truncated.*widthlab data fetch"):
        read_idx(p)


def test_trailing_bytes(tmp_path):
    raw = encode_idx(np.zeros(4, np.uint8)) + b"\x00"
    with pytest.raises(IDXFormatError, match="trailing bytes"):
        read_idx(_write(tmp_path, raw))


def test_wrong_magic(tmp_path):
    raw = bytearray(encode_idx(np.zeros(4, np.uint8)))
    raw[0] = 0x42
    with pytest.raises(IDXFormatError, match=r"bad-idx: wrong magic number 42000801"):
        read_idx(_write(tmp_path, bytes(raw)))


def test_unknown_dtype_code(tmp_path):
    raw = bytearray(encode_idx(np.zeros(4, np.uint8)))
    raw[2] = 0x07
    with pytest.raises(IDXFormatError, match="unknown IDX dtype code 0x07"):
        read_idx(_write(tmp_path, bytes(raw)))


def test_zero_dims_and_short_header(tmp_path):
    with pytest.raises(IDXFormatError, match="0 dimensions"):
        parse_idx(bytes([0, 0, 8, 0]), "f")
    with pytest.raises(IDXFormatError, match="too short"):
        parse_idx(b"\x00\x00", "f")
    with pytest.raises(IDXFormatError, match="truncated header"):
        parse_idx(bytes([0, 0, 8, 3, 0, 0, 0, 1]), "f")


def test_corrupt_gzip(tmp_path):
    raw = gzip.compress(encode_idx(np.zeros(100, np.uint8)))
    p = _write(tmp_path, raw[:20], "x.gz")
    with pytest.raises(IDXFormatError, match=r"x.gz: corrupt gzip stream"):
        read_idx(p)


def test_missing_file(tmp_path):
    with pytest.raises(IDXFormatError, match="no such file"):
        read_idx(tmp_path / "nope")


def test_encode_rejects_unsupported_dtype():
    with pytest.raises(ValueError, match="no IDX code"):
        encode_idx(np.zeros(3, np.int64))
