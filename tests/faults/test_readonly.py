"""Item 1: a read-only store (bind mount) is readable; every write fails with one line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from tests.faults.conftest import make_store, ok, one_line_error, snapshot
from widthlab.errors import ReadOnlyStoreError
from widthlab.store import MetricRow, Store


def test_reads_work_and_writes_fail_with_one_line(tmp_path, mounts, capsys):
    src = make_store(tmp_path / "s").root
    before = snapshot(src)
    expected = {cmd: ok(capsys, ["runs", *cmd, "--store", str(src)])
                for cmd in (("list",), ("show", "run-a"))}
    ro = mounts.read_only(src)
    for cmd, out in expected.items():
        assert ok(capsys, ["runs", *cmd, "--store", str(ro)]) == out.replace(str(src), str(ro))
    out_dir = tmp_path / "export"
    printed = ok(capsys, ["runs", "export", "run", "--out", str(out_dir), "--store", str(ro)])
    assert len(printed.split()) == 3 and (out_dir / "run-a-metrics.csv").is_file()
    assert "passes every check" in ok(capsys, ["runs", "check", "--store", str(ro)])
    st = Store(ro)
    assert st.metrics("run-a")["value"].tolist() == Store(src).metrics("run-a")["value"].tolist()
    assert st.latest_checkpoint("run-a")[0] == 2

    for write in (lambda: st.create_run("run-b", study="s", dataset="mnist", config={},
                                        models=[], seed=0, device="cpu", precision="fp32",
                                        code_version="t"),
                  lambda: st.commit_epoch("run-a", 3, metrics=[MetricRow(0, 3, "val", "acc", 1)]),
                  lambda: st.save_checkpoint("run-a", 3, {}),
                  lambda: st.rollback("run-a", 1)):
        with pytest.raises(ReadOnlyStoreError, match=r"is read-only( \(.*\))?; .*writable") as info:
            write()
        assert "\n" not in str(info.value)
    one_line_error(capsys, ["runs", "export", "run-a", "--out", str(ro / "x"), "--store",
                            str(src)], (2,), "cannot write to the export folder")
    assert snapshot(src) == before


def test_repairing_a_read_only_store_is_one_line(tmp_path, mounts, capsys):
    src = make_store(tmp_path / "s").root
    with sqlite3.connect(src / "widthlab.sqlite") as conn:
        conn.execute("DELETE FROM metrics WHERE epoch = 2")
    before = snapshot(src)
    ro = mounts.read_only(src)
    line = one_line_error(capsys, ["runs", "check", "--repair", "--store", str(ro)], (1,),
                          "is read-only")
    assert line.endswith("writable --store folder (or copy the store there)")
    assert snapshot(src) == before


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from tests.faults.conftest import make_store
    from widthlab.store import MetricRow
    import sqlite3
    st = make_store(__import__("pathlib").Path(sys.argv[1]), done=False)
    keep = sqlite3.connect(st.db_path)   # another connection: closing writers do not clean up
    keep.execute("SELECT count(*) FROM runs").fetchone()
    st.commit_epoch("run-a", 3, metrics=[MetricRow(0, 3, "val", "acc", 0.75)])
    os.kill(os.getpid(), signal.SIGKILL)   # no clean close: the epoch stays in the -wal file
""")


def test_a_store_left_with_a_wal_file_reads_on_a_read_only_mount(tmp_path, mounts, capsys):
    src = tmp_path / "s"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(src), root],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "src"},
                       cwd=root)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert (src / "widthlab.sqlite-wal").stat().st_size > 0
    ro = mounts.read_only(src)
    m = Store(ro).metrics("run-a")
    assert m[m.epoch == 3]["value"].tolist() == [0.75]  # the -wal's epoch is visible
    assert "interrupted" in ok(capsys, ["runs", "list", "--store", str(ro)])
