"""Child processes of the kill -9 tests: start a test's child script, kill it once it hangs
at its marker, and read what a store's run holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import pandas as pd
import torch

from widthlab.store import Store

ROOT = Path(__file__).resolve().parents[1]


def spawn(script: Path, *args: str, wait: bool = True, one_thread: bool = False,
          timeout: float = 300) -> subprocess.Popen:
    """``python script *args`` with this checkout's ``src`` and tests importable; ``wait``:
    until it ends, asserting it succeeded (its stderr in the message)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"
    p = subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err
    return p


def kill_at(p: subprocess.Popen, marker: Path, timeout: float = 300) -> None:
    """SIGKILL ``p`` once ``marker`` exists (the child writes it, then hangs); a loaded
    machine starts a child slowly, hence the long ``timeout``."""
    deadline = time.time() + timeout
    while not marker.exists():
        assert p.poll() is None, p.stderr.read()
        assert time.time() < deadline, "child never reached its hang point"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    assert p.wait(60) == -signal.SIGKILL


def run_numbers(store: Path, timed: Collection[str], run_id: str | None = None
                ) -> tuple[pd.DataFrame, dict]:
    """The computed metrics of a run (the store's only one unless ``run_id``), without the
    measured ones named in ``timed``, and its latest checkpoint."""
    st = Store(store)
    if run_id is None:
        (run_id,) = st.runs()["run_id"]
    met = st.metrics(run_id)
    met = met[~met.name.isin(list(timed))].sort_values(["epoch", "split", "name"])
    return met.reset_index(drop=True), st.latest_checkpoint(run_id)[1]


def assert_same_numbers(got: tuple[pd.DataFrame, dict], want: tuple[pd.DataFrame, dict]
                        ) -> None:
    """Bitwise the same metrics and final model tensors (:func:`run_numbers`'s pairs)."""
    pd.testing.assert_frame_equal(got[0], want[0], check_exact=True)
    gm, wm = got[1]["model"], want[1]["model"]
    assert gm.keys() == wm.keys()
    for k, v in gm.items():
        assert torch.equal(v, wm[k]), k


def hang_at_step(optimizer: type, step: int, marker: Path) -> None:
    """Make the ``step``-th call of ``optimizer.step`` (any instance) write ``marker`` and
    hang: a child's way to be killed at a known point (see :func:`kill_at`)."""
    original, count = optimizer.step, [0]

    def hanging(self, *a, **kw):
        count[0] += 1
        if count[0] == step:
            marker.write_text("hanging")
            while True:
                time.sleep(1)
        return original(self, *a, **kw)

    optimizer.step = hanging
