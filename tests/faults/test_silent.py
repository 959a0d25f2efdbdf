"""Item 7: what used to be silent or confusing: duplicate seeds, orphaned temporary checkpoint
files, killed runs shown as running, every model diverged, raw RuntimeWarnings, failed_epoch
printed as a float, multi-line data errors, FlexibleLinear(0, n)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.faults.conftest import make_store, ok, one_line_error
from widthlab import _io
from widthlab.cli import main
from widthlab.errors import DataError, UsageError
from widthlab.store import MetricRow, Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flag, value, dup", [("--seeds", "0,0", "0"),
                                              ("--widths", "16,32,16", "16")])
def test_duplicate_widths_or_seeds_are_refused(tmp_path, capsys, flag, value, dup):
    line = one_line_error(capsys, ["train", flag, value, "--store", str(tmp_path / "s")], (2,),
                          f"lists {dup} more than once", "give each of the")
    assert flag in line
    assert not (tmp_path / "s").exists()


def _child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": "src"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


KILLED_MID_WRITE = """
    import os, signal, sys
    from widthlab._io import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_orphaned_temporary_checkpoints_are_removed(tmp_path):
    st = make_store(tmp_path / "s", done=False)
    folder = st.root / "checkpoints"
    p = _child(KILLED_MID_WRITE, str(folder / "run-a-e0003.pt"))
    assert p.wait(60) == -signal.SIGKILL
    (orphan,) = folder.glob(".*.tmp")
    # a live writer's file (this process), another run's orphan, another host's fresh file
    with _io.atomic_path(folder / "run-a-e0004.pt") as live:
        live.write_bytes(b"being written")
        other_run = folder / orphan.name.replace("run-a", "run-b")
        other_run.write_bytes(b"x")
        fresh = folder / ".run-a-e0005.pt.1@otherhost.abcd.tmp"
        fresh.write_bytes(b"x")
        stale = folder / ".run-a-e0006.pt.1@otherhost.efgh.tmp"
        stale.write_bytes(b"x")
        old = time.time() - 2 * _io.ORPHAN_AGE_S
        os.utime(stale, (old, old))
        st.save_checkpoint("run-a", 3, {"w": 1})  # the run's next write cleans up
        assert not orphan.exists() and not stale.exists()
        assert live.exists() and other_run.exists() and fresh.exists()
    assert (folder / "run-a-e0004.pt").read_bytes() == b"being written"


KILLED_RUN = """
    import os, signal, sys, time
    from widthlab.store import MetricRow, Store
    st = Store(sys.argv[1])
    st.create_run(sys.argv[2], study="s", dataset="mnist", config={}, seed=0, device="cpu",
                  models=[{"name": "a", "arch": [4]}], precision="fp32", code_version="t")
    st.commit_epoch(sys.argv[2], 1, metrics=[MetricRow(0, 1, "val", "acc", 0.5)])
    print("ready", flush=True)
    if sys.argv[3] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)
"""


def test_a_killed_run_is_interrupted_a_live_one_running(tmp_path, capsys):
    root = str(tmp_path / "s")
    dead = _child(KILLED_RUN, root, "dead", "die")
    assert dead.wait(60) == -signal.SIGKILL
    live = _child(KILLED_RUN, root, "live", "live")
    try:
        assert live.stdout.readline().strip() == "ready"
        status = Store(root).runs().set_index("run_id")["status"].to_dict()
        assert status == {"dead": "interrupted", "live": "running"}
        assert Store(root).get_run("dead")["status"] == "interrupted"
        listing = ok(capsys, ["runs", "list", "--store", root])
        assert "interrupted" in listing and "running" in listing
    finally:
        live.kill()
        live.wait()
    assert Store(root).runs()["status"].tolist() == ["interrupted", "interrupted"]
    assert _io.process_alive(socket.gethostname(), os.getpid(), _io.this_process()[2])
    assert _io.process_alive("another-host", 1, None) is None


@pytest.mark.realdata
def test_every_model_diverged_exits_1(real_cache, tmp_path, capsys):
    line = one_line_error(capsys, ["train", "--widths", "16", "--seeds", "2", "--lr", "1e30",
                                   "--train-size", "256", "--quiet", "--device", "cpu",
                                   "--store", str(tmp_path / "s")], (1,), "every model of run")
    assert "diverged" in line and line.endswith("lower the learning rate with --lr")


@pytest.mark.realdata
def test_recovery_notice_is_one_plain_line(real_cache, tmp_path, capsys):
    args = ["train", "--widths", "16", "--seeds", "1", "--train-size", "256", "--quiet",
            "--device", "cpu", "--store", str(tmp_path / "s")]
    run_id = ok(capsys, args).split()[-1]
    st = Store(tmp_path / "s")
    st.rollback(run_id, 1)  # unfinished again, resuming from its checkpoint...
    ckpt = next((st.root / "checkpoints").glob("*.pt"))
    ckpt.write_bytes(b"garbage")  # ...which is corrupt
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        f"widthlab: warning: checkpoint {ckpt} of run {run_id!r} is corrupt (sha256 mismatch);"
        " ignoring it"]
    assert st.get_run(run_id)["status"] == "done"


def test_runs_show_prints_failed_epoch_as_an_integer(tmp_path, capsys):
    st = make_store(tmp_path / "s", done=False)
    st.commit_epoch("run-a", 3, metrics=[MetricRow(0, 3, "val", "acc", 0.9)],
                    failures=[(1, 3, "loss became NaN")])
    st.finish_run("run-a")
    out = ok(capsys, ["runs", "show", "run-a", "--store", str(st.root)])
    row = next(line for line in out.splitlines() if "loss became NaN" in line)
    cells = [c.strip() for c in row.split("│")]
    assert "3" in cells and "3.0" not in cells


def test_data_errors_are_one_line_naming_the_users_file(tmp_path, empty_cache):
    from widthlab.data.cache import fetch

    user = tmp_path / "mine"
    user.mkdir()
    (user / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + b"\0" * 100)
    with pytest.raises(DataError) as info:
        fetch("mnist", user, include_network=False)
    msg = str(info.value)
    assert "\n" not in msg and str(user / "train-images-idx3-ubyte") in msg
    assert "data-dir:train" not in msg and msg.count("; ") >= 1
    assert msg.endswith("or connect to the internet")


@pytest.mark.parametrize("args", [(0, 8), (8, 0), (-1, 4), (2.5, 4)])
def test_flexible_linear_needs_a_unit_and_an_input(args):
    from widthlab.nn.flexible import FlexibleLinear

    with pytest.raises(UsageError, match="must be an integer >= 1.*; give the layer"):
        FlexibleLinear(*args)
    assert FlexibleLinear(1, 1).out_features == 1
