"""Item 4: a full disk (a size-limited tmpfs, or a patched write) ends in one line saying so and
that rerunning resumes; what is stored stays consistent and readable."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest
import torch

from tests.engine.child_run import CONFIG, SPECS, synthetic
from tests.faults.conftest import make_store, ok, one_line_error, snapshot
from widthlab.cli import main
from widthlab.engine.trainer import TrainConfig, train
from widthlab.errors import DiskFullError
from widthlab.store import ArrayRow, Store

RESUMES = "free space and rerun the same command: it resumes"


def test_sqlite_full_keeps_the_stored_epochs(tmp_path, mounts, capsys):
    disk = mounts.tmpfs(tmp_path / "disk", "1m")
    st = make_store(disk / "s", done=False, checkpoint=False)
    before = snapshot(st.root)
    runs = st.runs().drop(columns="updated_at")
    big = [ArrayRow(0, 3, "big", np.arange(300_000, dtype=np.float64))]  # 2.4 MB > the disk
    with pytest.raises(DiskFullError, match=f"disk full .*; {RESUMES}"):
        st.commit_epoch("run-a", 3, arrays=big)
    assert snapshot(st.root) == before
    with pytest.raises(OSError), open(disk / "filler", "wb") as fh:  # fill what is left
        fh.write(b"\0" * 2_000_000)
    assert shutil.disk_usage(disk).free < 4096
    assert Store(st.root).runs().drop(columns="updated_at").equals(runs)
    assert "run-a" in ok(capsys, ["runs", "list", "--store", str(st.root)])
    (disk / "filler").unlink()
    with sqlite3.connect(st.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT max(epoch) FROM metrics").fetchone()[0] == 2


def _metrics(store):
    run = store.runs()["run_id"].iloc[0]
    return store.metrics(run).sort_values(["model", "epoch", "split", "name"]).reset_index(
        drop=True)


def test_full_disk_during_training_resumes_exactly(tmp_path, mounts):
    specs, cfg = SPECS * 8, TrainConfig(**{**CONFIG, "epochs": 3})
    ref = Store(tmp_path / "ref")
    train(specs, cfg, ref, data=synthetic(), progress=False)
    disk = mounts.tmpfs(tmp_path / "disk", "512k")
    (disk / "filler").write_bytes(b"\0" * 300_000)
    st = Store(disk / "s")
    with pytest.raises(DiskFullError, match=RESUMES):
        train(specs, cfg, st, data=synthetic(), progress=False)
    assert st.check() == []  # what was stored is consistent
    assert st.runs()["epochs_done"].iloc[0] < 3
    (disk / "filler").unlink()
    mounts.resize(disk, "16m")
    run = train(specs, cfg, st, data=synthetic(), progress=False)  # the same call resumes
    assert st.get_run(run)["status"] == "done"
    np.testing.assert_array_equal(_metrics(st)["value"].to_numpy(),
                                  _metrics(ref)["value"].to_numpy())
    assert st.check() == []


def test_torch_writer_error_is_disk_full(tmp_path, monkeypatch, capsys):
    st = make_store(tmp_path / "s", done=False)
    before = snapshot(st.root)

    def full(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4928 vs "
                           "4822")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=RESUMES):
        st.save_checkpoint("run-a", 3, {"w": torch.zeros(3)})
    assert snapshot(st.root) == before  # the partial temporary file is gone
    assert not list((st.root / "checkpoints").glob(".*.tmp"))


@pytest.mark.realdata
def test_cli_train_on_a_full_disk_is_one_line_and_resumes(real_cache, tmp_path, mounts, capsys):
    args = ["train", "--widths", "64,128", "--seeds", "2", "--epochs", "2", "--train-size",
            "512", "--quiet", "--device", "cpu", "--store"]
    assert main([*args, str(tmp_path / "ref")]) == 0
    run_id = capsys.readouterr().out.split()[-1]
    disk = mounts.tmpfs(tmp_path / "disk", "1536k")
    store = str(disk / "s")
    one_line_error(capsys, [*args, store], (1,), "disk full", RESUMES)
    assert run_id in ok(capsys, ["runs", "list", "--store", store])
    mounts.resize(disk, "32m")
    assert ok(capsys, [*args, store]).split()[-1] == run_id
    np.testing.assert_array_equal(_metrics(Store(store))["value"].to_numpy(),
                                  _metrics(Store(tmp_path / "ref"))["value"].to_numpy())
