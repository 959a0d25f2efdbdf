"""Issue 30: a claim on a run. A second identical command waits for the first and reuses its
work instead of training the run again; a holder that died loses the claim at once, one on
another host when its lease runs out."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

import pandas as pd
import pytest

from tests.engine.child_run import CONFIG, SPECS, synthetic
from tests.engine.test_trainer import dump, run_child
from widthlab.engine import trainer as trainer_module
from widthlab.engine.trainer import TrainConfig, train
from widthlab.store import Store
from widthlab.store.claims import claimed, holder, try_claim


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    store = tmp_path_factory.mktemp("ref") / "store"
    run_child(store)
    return dump(store)


def _wait_for(marker, p) -> None:
    deadline = time.time() + 120
    while not marker.exists():
        assert p.poll() is None, p.stderr.read()
        assert time.time() < deadline, "child never reached its pause"
        time.sleep(0.05)


def test_second_identical_command_waits_and_reuses(tmp_path, reference, monkeypatch,
                                                   capsys):
    store = tmp_path / "store"
    # the pause is long enough for the second command to find it training on a loaded machine
    first = run_child(store, "--hang-at-step", "3", "--pause-s", "8", wait=False)
    _wait_for(tmp_path / "hang-x", first)

    def no_training(self, *args, **kwargs):
        raise AssertionError("the second command trained an epoch")
    monkeypatch.setattr(trainer_module.Engine, "train_epoch", no_training)
    t0 = time.perf_counter()
    run_id = train(SPECS, TrainConfig(**CONFIG), store, data=synthetic(), progress=False)
    waited = time.perf_counter() - t0
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert waited > 1.0  # it waited for the first one's pause
    assert f"run {run_id} is being trained by process {first.pid}" in capsys.readouterr().err
    metrics, arrays, _ = dump(store)
    pd.testing.assert_frame_equal(metrics, reference[0], check_exact=True)
    assert arrays == reference[1]
    assert holder(Store(store), run_id) is None  # released


def test_a_killed_holder_loses_its_claim(tmp_path, reference):
    store = tmp_path / "store"
    first = run_child(store, "--hang-at-step", "30", wait=False)
    _wait_for(tmp_path / "hang-x", first)
    (run_id,) = Store(store).runs()["run_id"]
    assert holder(Store(store), run_id)["pid"] == first.pid
    done = []
    second = threading.Thread(target=lambda: done.append(
        train(SPECS, TrainConfig(**CONFIG), store, data=synthetic(), progress=False)))
    second.start()
    time.sleep(1.0)
    assert second.is_alive() and not done  # waiting on the live holder
    first.send_signal(signal.SIGKILL)
    first.wait()
    second.join(timeout=120)
    assert done == [run_id]
    metrics, arrays, _ = dump(store)  # resumed from the killed one's last epoch: identical
    pd.testing.assert_frame_equal(metrics, reference[0], check_exact=True)
    assert arrays == reference[1]


def _foreign_claim(store: Store, run_id: str, lease_left: float) -> None:
    with claimed(store, "other"):  # creates the store and the claims table
        pass
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("INSERT OR REPLACE INTO claims VALUES (?, 'elsewhere:1:1', 'elsewhere', 1,"
                     " NULL, ?, 'then')", (run_id, time.time() + lease_left))
    conn.close()


def test_a_lease_from_another_host_runs_out(tmp_path):
    st = Store(tmp_path / "s")
    _foreign_claim(st, "r1", 60)
    assert try_claim(st, "r1")["host"] == "elsewhere"  # alive as far as we can tell
    _foreign_claim(st, "r1", 0.6)
    lines: list[str] = []
    t0 = time.perf_counter()
    with claimed(st, "r1", poll_s=0.05, log=lines.append):
        assert holder(st, "r1")["host"] != "elsewhere"
    assert 0.4 < time.perf_counter() - t0 < 10
    assert len(lines) == 1 and "waiting" in lines[0]
    assert holder(st, "r1") is None


def test_a_claim_is_renewed_while_held_and_nests(tmp_path):
    st = Store(tmp_path / "s")
    with claimed(st, "r2", lease_s=0.3):
        first = holder(st, "r2")["lease_until"]
        with claimed(st, "r2", lease_s=0.3):  # the same process: no wait
            time.sleep(0.5)
        assert holder(st, "r2")["lease_until"] > first  # renewed in the background
    assert holder(st, "r2") is None


@pytest.mark.parametrize("lease", [0.0])
def test_an_expired_lease_is_taken_at_once(tmp_path, lease):
    st = Store(tmp_path / "s")
    _foreign_claim(st, "r3", lease - 5)
    assert try_claim(st, "r3") is None


def test_a_holder_whose_claim_was_taken_over_stops_before_it_writes(tmp_path):
    """A holder that stalled past its lease and lost the run to another host must notice at
    its next renewal and refuse to write (two writers of one run otherwise)."""
    from widthlab.errors import StoreError
    from widthlab.store.claims import check_claim

    st = Store(tmp_path / "s")
    with claimed(st, "r4", lease_s=0.3):
        check_claim(st, "r4")  # ours: nothing to say
        _foreign_claim(st, "r4", 60)  # another host took it while we stalled
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                check_claim(st, "r4")
            except StoreError as e:
                assert "taken over" in str(e) and "rerun" in str(e)
                break
            time.sleep(0.05)
        else:
            pytest.fail("the lost claim was never noticed")
        assert holder(st, "r4")["host"] == "elsewhere"  # not taken back by the renewal
    assert holder(st, "r4")["host"] == "elsewhere"  # and not released: it is not ours
    check_claim(st, "r4")  # forgotten once the block ends
