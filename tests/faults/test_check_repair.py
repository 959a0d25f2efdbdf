"""Item 6: `runs check` finds a finished run with missing epochs or a bad checkpoint; the same
train call (with or without `runs check --repair` first) completes it with the numbers of an
uninterrupted run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.engine.child_run import CONFIG, SPECS, synthetic
from tests.faults.conftest import make_store, ok, one_line_error, snapshot
from widthlab.cli import main
from widthlab.engine.trainer import TrainConfig, train
from widthlab.errors import CorruptStoreError
from widthlab.store import Store

CFG = {**CONFIG, "epochs": 3}


def _everything(st: Store, run: str):
    m = st.metrics(run).sort_values(["model", "epoch", "split", "name"])
    arrays = {(k, e): st.arrays(run, k, e) for k in ("act_std", "pre_cov") for e in (1, 2, 3)}
    return m["value"].to_numpy(), arrays, st.latest_checkpoint(run)[0]


def _same(a, b) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].keys() == b[1].keys() and a[2] == b[2]
    for key in a[1]:
        for model in a[1][key]:
            np.testing.assert_array_equal(a[1][key][model], b[1][key][model])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    st = Store(tmp_path_factory.mktemp("ref") / "s")
    run = train(SPECS, TrainConfig(**CFG), st, data=synthetic(), progress=False)
    return run, _everything(st, run)


@pytest.mark.parametrize("how", ["same-command", "repair-first"])
@pytest.mark.parametrize("damage", ["lost-epoch", "lost-last-epoch", "bad-checkpoint"])
def test_check_repair_and_retrain_is_exact(tmp_path, capsys, reference, damage, how):
    run, want = reference
    st = Store(tmp_path / "s")
    assert train(SPECS, TrainConfig(**CFG), st, data=synthetic(), progress=False) == run
    assert "passes every check" in ok(capsys, ["runs", "check", "--store", str(st.root)])
    with sqlite3.connect(st.db_path) as conn:  # what a deleted -wal file loses
        if damage == "lost-epoch":
            conn.execute("DELETE FROM metrics WHERE epoch = 2")
        elif damage == "lost-last-epoch":
            conn.execute("DELETE FROM metrics WHERE epoch = 3")
            conn.execute("UPDATE runs SET epochs_done = 2")
    conn.close()
    if damage == "bad-checkpoint":
        ckpt = next((st.root / "checkpoints").glob("*.pt"))
        ckpt.write_bytes(ckpt.read_bytes()[:-10] + b"0123456789")
    before = snapshot(st.root)
    assert main(["runs", "check", run[:10], "--store", str(st.root)]) == 1
    out, err = capsys.readouterr()
    assert run in out and ("no metrics for epoch" in out or "checkpoint" in out)
    assert err.count("\n") == 1 and "--repair" in err
    assert snapshot(st.root) == before  # checking changes nothing
    with pytest.raises(CorruptStoreError, match="runs check --repair"):
        st.ensure_ok([run])
    if how == "repair-first":
        out = ok(capsys, ["runs", "check", "--repair", "--store", str(st.root)])
        assert f"{run}: rolled back to epoch" in out
    # the same command finds the damage itself and completes the run
    assert train(SPECS, TrainConfig(**CFG), st, data=synthetic(), progress=False) == run
    assert st.check() == [] and st.get_run(run)["status"] == "done"
    _same(_everything(st, run), want)


def test_unfinished_and_unknown_runs(tmp_path, capsys):
    st = make_store(tmp_path / "s", done=False)
    with sqlite3.connect(st.db_path) as conn:
        conn.execute("DELETE FROM metrics WHERE epoch = 1")
    conn.close()
    assert st.check() == []  # a running run is completed by its command, not checked
    one_line_error(capsys, ["runs", "check", "nope", "--store", str(st.root)], (2,),
                   "no run 'nope'")


@pytest.mark.realdata
def test_cli_train_completes_a_repaired_run_exactly(real_cache, tmp_path, capsys):
    args = ["train", "--widths", "16,32", "--seeds", "1", "--epochs", "2", "--train-size",
            "512", "--quiet", "--device", "cpu", "--store"]
    stores = [str(tmp_path / name) for name in ("ref", "damaged")]
    runs = [ok(capsys, [*args, s]).split()[-1] for s in stores]
    assert runs[0] == runs[1]
    with sqlite3.connect(Path(stores[1]) / "widthlab.sqlite") as conn:
        conn.execute("DELETE FROM metrics WHERE epoch = 1")
    conn.close()
    one_line_error(capsys, ["runs", "check", "--store", stores[1]], (1,), "1 problem(s)")
    assert ok(capsys, [*args, stores[1]]).split()[-1] == runs[0]  # the same command
    want, got = (Store(s).metrics(runs[0]) for s in stores)
    pd.testing.assert_frame_equal(got, want)
    assert "passes every check" in ok(capsys, ["runs", "check", "--store", stores[1]])


def test_check_without_integrity_still_checks_the_runs(tmp_path):
    st = make_store(tmp_path / "s", epochs=3)
    with sqlite3.connect(st.db_path) as conn:
        conn.execute("DELETE FROM metrics WHERE epoch = 2 AND model = 1")
    conn.close()
    (p,) = st.check(["run-a"], integrity=False)
    assert p.kind == "missing-epochs" and "epoch 2 (models 1)" in p.message
    assert p.resume_epoch == 0  # the only checkpoint (epoch 3) is past the hole
    assert st.repair([p]) == {"run-a": 0}
    assert st.get_run("run-a")["epochs_done"] == 0 and st.latest_checkpoint("run-a") is None
