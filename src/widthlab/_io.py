"""Atomic file writes: a path never holds a half-written file; and telling live writers.

    with atomic_path("out/report.html") as tmp:   # a temporary file in the same folder
        tmp.write_text(page)                       # write it any way you like
    # renamed over out/report.html only if the block succeeded; removed otherwise

    remove_orphans("out")   # temporary files left by killed processes
    ensure_writable("out")  # one-line UsageError when "out" cannot take files

The file gets the usual permissions (0666 minus the umask, like ``open``) rather than
``mkstemp``'s private 0600, and is fsynced before the rename. The temporary name carries the
writer's pid and host (``.report.html.1234@host.x7k2.tmp``), so :func:`remove_orphans` can
delete what a killed process left behind without touching the file a live one is writing.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from widthlab.errors import UsageError

ORPHAN_AGE_S = 3600.0  # a temporary file of another host (or of unknown owner) older than this
_TMP = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]*)\.[A-Za-z0-9_]+\.tmp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` when the block ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{os.getpid()}@{_host_tag()}."
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) when it is not a folder."""
    for path in (folder, *folder.parents):
        if path.exists():
            return None if path.is_dir() else path
    return None


def ensure_writable(folder: str | os.PathLike, what: str = "folder",
                    fix: str = "choose a writable path") -> Path:
    """Create ``folder`` if needed and check that files can be created in it.

    Raises
    ------
    UsageError
        ``cannot write to <what> <folder>: <reason>; <fix>`` when a file stands in the way,
        the folder is read-only, or it cannot be created.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".widthlab-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        blocker = _file_in_the_way(folder)
        if blocker is not None:
            reason = f"{blocker} is a file, not a folder"
        elif folder.is_dir():
            reason = f"files cannot be created there ({exc.strerror or exc})"
        else:
            reason = exc.strerror or str(exc)
        raise UsageError(f"cannot write to {what} {folder}: {reason}; {fix}") from None
    return folder


def remove_orphans(folder: str | os.PathLike, target: re.Pattern | None = None) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` in ``folder`` that no live process
    is writing; returns the paths removed.

    A file of a process of this host is removed when that process is gone; a file of another
    host, or one without an owner in its name, when it has not changed for an hour.
    ``target``: only temporary files whose final name fully matches this pattern.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(".*.tmp"):
        m = _TMP.fullmatch(path.name)
        if target is not None and not (m and target.fullmatch(m["target"])):
            continue
        orphan = False
        if m and m["host"] == _host_tag():
            orphan = process_alive(socket.gethostname(), int(m["pid"]), None) is False
        else:
            with contextlib.suppress(FileNotFoundError):
                orphan = time.time() - path.stat().st_mtime > ORPHAN_AGE_S
        if orphan:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell reused pids."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def this_process() -> tuple[str, int, str | None]:
    """``(host, pid, start ticks)`` of the calling process."""
    return socket.gethostname(), os.getpid(), _start_ticks(os.getpid())


def process_alive(host: str | None, pid: int | None, started: str | None) -> bool | None:
    """True/False when ``pid`` on ``host`` is (not) running; None when it cannot be told
    (another host, or nothing recorded). ``started``: the start ticks recorded with the pid
    (a different value means the pid was reused)."""
    if host is None or pid is None or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _start_ticks(int(pid))
    if Path("/proc").is_dir() and now is None:
        return False  # gone, or a zombie
    return started is None or now is None or now == started
