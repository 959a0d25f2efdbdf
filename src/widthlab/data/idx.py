"""IDX file format (the MNIST container): strict reader and writer.

An IDX file is a 4-byte magic number ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the data in big-endian order. The reader validates every part and the
exact byte length, and accepts plain or gzip-compressed files (detected by content, not name).

Example::

    from widthlab.data.idx import read_idx
    images = read_idx("train-images-idx3-ubyte")   # uint8 array of shape (60000, 28, 28)
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from widthlab.errors import DataError

# IDX dtype codes -> big-endian numpy dtypes.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_FIX = "delete it and run `widthlab data fetch` to restore a verified copy"


class IDXFormatError(DataError):
    """The bytes are not a well-formed IDX file. The message names the file and the fix."""


def decompress(raw: bytes, name: str | os.PathLike = "<bytes>") -> bytes:
    """Return ``raw`` decompressed if it is gzip data, unchanged otherwise."""
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXFormatError(f"{name}: corrupt gzip stream ({exc}); {_FIX}") from None


def parse_idx(raw: bytes, name: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Parse the (already decompressed) bytes of an IDX file into a native-endian array.

    Raises :class:`IDXFormatError` for a wrong magic number, an unknown dtype code, a zero
    dimension count, or a byte length that does not match the header exactly.
    """
    if len(raw) < 4:
        raise IDXFormatError(
            f"{name}: file is {len(raw)} bytes, too short for an IDX header; {_FIX}"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise IDXFormatError(
            f"{name}: wrong magic number {raw[:4].hex()} (an IDX file starts with 0000); "
            f"this is not an IDX file or it is corrupt; {_FIX}"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise IDXFormatError(
            f"{name}: unknown IDX dtype code 0x{code:02x} (expected one of "
            f"{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}); {_FIX}"
        )
    if ndim == 0:
        raise IDXFormatError(f"{name}: IDX header declares 0 dimensions; {_FIX}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(
            f"{name}: truncated header ({len(raw)} bytes, {header} needed for {ndim} dims); {_FIX}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "has trailing bytes"
        raise IDXFormatError(
            f"{name}: file {kind}: header says shape {shape} of {dtype.name}, i.e. {expected} "
            f"bytes, but the file has {len(raw)}; {_FIX}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a plain or gzip IDX file and return its array (uint8 for the MNIST family)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IDXFormatError(f"{path}: no such file; run `widthlab data fetch`") from None
    return parse_idx(decompress(raw, path), path)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (the inverse of :func:`parse_idx`)."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(
            f"dtype {array.dtype} has no IDX code; use one of uint8, int8, int16, int32, "
            "float32, float64"
        )
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {array.ndim}")
    code = _CODES[native]
    head = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return head + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool = False) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``compress``)."""
    data = encode_idx(array)
    Path(path).write_bytes(gzip.compress(data, mtime=0) if compress else data)
