"""Fixtures for the fault tests: read-only and size-limited mounts, stores, one-line errors.

We run as root in CI, so a read-only folder is a read-only bind mount (``chmod`` does not stop
root); when mounting is not allowed the tests fall back to ``chmod`` as a non-root user, and
skip as root.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from widthlab.cli import main
from widthlab.store import ArrayRow, MetricRow, Store

MODELS = [{"name": "w8", "arch": [8], "seed": 0}, {"name": "w16", "arch": [16], "seed": 1}]


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mounts():
    """``mounts.read_only(src)`` -> a read-only view of ``src``; ``mounts.tmpfs(dst, size)``."""
    made: list[Path] = []
    chmodded: list[Path] = []

    class Mounts:
        def read_only(self, src: Path) -> Path:
            dst = src.parent / f"{src.name}-ro"
            dst.mkdir()
            if _mount("--bind", str(src), str(dst)):
                made.append(dst)
                if _mount("-o", "remount,bind,ro", str(dst)):
                    return dst
            if os.geteuid() == 0:
                pytest.skip("cannot make a read-only bind mount here (and root ignores chmod)")
            dst.rmdir()
            for p in [src, *src.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)
            chmodded.append(src)
            return src

        def tmpfs(self, dst: Path, size: str) -> Path:
            dst.mkdir(parents=True, exist_ok=True)
            if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(dst)):
                pytest.skip("cannot mount a size-limited tmpfs here")
            made.append(dst)
            return dst

        def resize(self, dst: Path, size: str) -> None:
            assert _mount("-o", f"remount,size={size}", str(dst))

    yield Mounts()
    for dst in reversed(made):
        subprocess.run(["umount", "-l", str(dst)], capture_output=True)
    for src in chmodded:
        for p in [src, *src.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def make_store(root: Path, run_id: str = "run-a", epochs: int = 2, *, done: bool = True,
               checkpoint: bool = True) -> Store:
    """A store with one run of two models: ``epochs`` epochs of metrics and arrays."""
    import torch

    st = Store(root)
    st.create_run(run_id, study="sweep", dataset="mnist", config={"epochs": epochs},
                  models=MODELS, seed=0, device="cpu", precision="float32", code_version="t")
    for e in range(1, epochs + 1):
        rows = [MetricRow(m, e, s, "acc", 0.5 + 0.1 * e + 0.01 * m)
                for m in range(2) for s in ("val", "test")]
        arrays = [ArrayRow(m, e, "act_std", [0.5 * e, 1.0 + m]) for m in range(2)]
        path = st.save_checkpoint(run_id, e, {"w": torch.arange(4.0) * e}) if checkpoint \
            else None
        st.commit_epoch(run_id, e, metrics=rows, arrays=arrays, checkpoint=path)
    if done:
        st.finish_run(run_id)
    return st


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` but SQLite's -wal/-shm side files."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def one_line_error(capsys, args: list[str], codes=(1, 2), *words: str) -> str:
    """Run the CLI; check it failed with one ``widthlab: error: <problem>; <fix>`` line."""
    rc = main(args)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc in codes, (rc, out, err)
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("widthlab: error: ") and "; " in line, line
    assert "Traceback" not in out + err
    for w in words:
        assert w in line, (w, line)
    return line


def ok(capsys, args: list[str]) -> str:
    """Run the CLI; check it succeeded without anything on stderr; return stdout."""
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 0 and not err.strip(), (rc, out, err)
    return out
