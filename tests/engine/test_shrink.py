"""The engine with sparsifier gates: dead units removed at a cadence, the same numbers as
masking them, alive widths stored, a killed run resumes into the same shrunk bank.

This file is also the child process of the kill -9 tests::

    python tests/engine/test_shrink.py STORE [--every N] [--hang-at-step N | --hang-before-commit E]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as the child: make `tests` importable
    sys.path.insert(0, str(ROOT))

from tests.engine.child_run import install_hangs, synthetic  # noqa: E402
from widthlab.engine.trainer import Engine, TrainConfig, evaluate, load_bank, train  # noqa: E402
from widthlab.errors import UsageError  # noqa: E402
from widthlab.nn.bank import ModelSpec  # noqa: E402
from widthlab.nn.gated import SparsifierGate  # noqa: E402
from widthlab.store import Store  # noqa: E402

SPECS = [ModelSpec((16,), seed=0), ModelSpec((24,), seed=1), ModelSpec((16,), seed=2),
         ModelSpec((12, 6), seed=3)]
LAMBDAS = [3e-3, 1e-3, 3e-4, 2e-3]
CONFIG = dict(dataset="synthetic", epochs=4, batch_size=32, device="cpu", stats_epochs="all",
              preact_cov=True, eval_batch_size=100, eval_splits=("val", "test"))


pytestmark = pytest.mark.usefixtures("one_thread")


def gate(penalty: str = "strict") -> SparsifierGate:
    return SparsifierGate(LAMBDAS, penalty=penalty, lr=6e-2)


def config(**kw) -> TrainConfig:
    return TrainConfig(**{**CONFIG, **kw})


# ----------------------------------------------------------------------------- the child
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--every", default="epoch")
    ap.add_argument("--hang-at-step", type=int)
    ap.add_argument("--hang-before-commit", type=int)
    args = ap.parse_args()
    torch.set_num_threads(1)
    marker = pathlib.Path(args.store).parent / "hang"

    install_hangs(marker, args.hang_at_step, args.hang_before_commit)
    print(train(SPECS, config(shrink_every=args.every), args.store, modifiers=[gate],
                data=synthetic(), progress=False))


def run_child(store: Path, *args: str, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    p = subprocess.Popen([sys.executable, __file__, str(store), *args], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    return p


def dump(store: Path) -> tuple[pd.DataFrame, dict]:
    import sqlite3

    s = Store(store)
    (run_id,) = s.runs()["run_id"]
    metrics = s.metrics(run_id).sort_values(["model", "epoch", "split", "name"])
    with sqlite3.connect(s.db_path) as con:
        arrays = {row[:3]: bytes(row[3]) for row in con.execute(
            "SELECT model, epoch, name, data FROM arrays WHERE run_id=?", (run_id,))}
    return metrics.reset_index(drop=True), arrays


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs, per cadence."""
    out = {}
    for every in ("epoch", "7"):
        store = tmp_path_factory.mktemp(f"ref{every}") / "store"
        run_child(store, "--every", every)
        out[every] = dump(store)
    return out


@pytest.mark.slow  # two child processes each (mostly torch's import time)
@pytest.mark.parametrize("every,hang,resume_at", [
    ("epoch", ["--hang-at-step", "30"], 1),
    ("epoch", ["--hang-before-commit", "3"], 2),
    ("7", ["--hang-at-step", "47"], 2),
], ids=["mid-epoch-2", "before-commit-3", "steps-mid-epoch-3"])
def test_kill_9_then_resume_equals_uninterrupted(tmp_path, references, every, hang, resume_at):
    """The checkpoint records every model's width: the resumed run rebuilds the shrunk bank
    and its optimizer state and continues bit for bit."""
    import signal

    ref_metrics, ref_arrays = references[every]
    kept = ref_metrics[ref_metrics.name == "kept_width"].pivot(
        index="epoch", columns="model", values="value")
    assert (kept.loc[resume_at] < [s.width for s in SPECS]).any(), \
        "the run must resume from a shrunk checkpoint"
    assert (kept.loc[4] < kept.loc[resume_at]).any(), "and shrink again after the kill"
    store = tmp_path / "store"
    p = run_child(store, "--every", every, *hang, wait=False)
    deadline = time.time() + 120
    while not (tmp_path / "hang").exists():
        assert p.poll() is None, p.stderr.read()
        assert time.time() < deadline, "child never reached its hang point"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    run_child(store, "--every", every)
    metrics, arrays = dump(store)
    pd.testing.assert_frame_equal(metrics, ref_metrics, check_exact=True)
    assert arrays == ref_arrays


# ----------------------------------------------------------------------------- in process
def test_removing_gives_the_numbers_of_masking_at_a_lower_cost(tmp_path):
    data = synthetic()
    runs = {}
    for mode in ("remove", "mask"):
        eng = Engine(SPECS, config(shrink_mode=mode, stats_epochs="none"), tmp_path,
                     modifiers=[lambda: gate("abs")], data=data, progress=False)
        eng.run()
        m = Store(tmp_path).metrics(eng.run_id)
        runs[mode] = (eng, m.set_index(["model", "epoch", "split", "name"])["value"])
    removed, masked = runs["remove"][1], runs["mask"][1]
    for name in ("alive_width", "gate_l1"):
        a, b = removed.xs(name, level="name"), masked.xs(name, level="name")
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5)
    for name in ("loss", "loss_running"):
        a, b = removed.xs(name, level="name"), masked.xs(name, level="name")
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5)
    alive = removed.xs("alive_width", level="name").xs(4, level="epoch").to_numpy()
    assert (removed.xs("kept_width", level="name").xs(4, level="epoch").to_numpy() == alive).all()
    assert (masked.xs("kept_width", level="name").to_numpy() == np.repeat(
        [s.width for s in SPECS], 4)).all()
    assert runs["remove"][0].bank.n_hidden == alive.sum() < sum(s.width for s in SPECS)
    assert runs["mask"][0].bank.n_hidden == sum(s.width for s in SPECS)


def test_alive_width_is_stored_and_the_shrunk_run_loads_back(tmp_path):
    data = synthetic()
    eng = Engine(SPECS, config(stats_epochs="none"), tmp_path, modifiers=[gate], data=data,
                 progress=False)
    run_id = eng.run()
    st = Store(tmp_path)
    met = st.metrics(run_id, wide=True)
    met = met[met.split == "train"].sort_values(["model", "epoch"])
    for m, rows in met.groupby("model"):
        w = rows["alive_width"].to_numpy()
        assert (np.diff(w) <= 0).all() and w[0] <= SPECS[m].width  # strict gates never revive
        assert (rows["kept_width"].to_numpy() == w).all()
    gates = eng.bank.modifiers[0].gate.detach()
    last = met[met.epoch == 4].set_index("model")
    assert (last["alive_width"].to_numpy() < [s.width for s in SPECS]).sum() >= 3
    for m, (a, b) in enumerate(eng.bank.slices):
        assert int((gates[a:b] > 0).sum()) == last.loc[m, "alive_width"] == b - a
    bank = load_bank(st, run_id, modifiers=[gate])
    assert bank.archs == eng.bank.archs
    assert torch.equal(bank.unit_ids, eng.bank.unit_ids)
    acc = evaluate(bank, data.test, batch_size=100).acc.numpy()
    tm = st.metrics(run_id)
    stored = tm[(tm.split == "test") & (tm.name == "acc") & (tm.epoch == 4)]["value"].to_numpy()
    np.testing.assert_array_equal(acc, stored)
    # the checkpoint alone (no modifiers) still loads, at the shrunk widths
    assert load_bank(st, run_id, strict_modifiers=False).n_hidden == eng.bank.n_hidden


def test_a_failed_model_loses_all_its_units_and_the_others_go_on(tmp_path):
    specs = [SPECS[0], ModelSpec((16,), seed=9, lr=1e30), SPECS[1]]
    eng = Engine(specs, config(epochs=2, stats_epochs="none"), tmp_path,
                 modifiers=[lambda: SparsifierGate(1e-3, lr=5e-2)], data=synthetic(),
                 progress=False)
    eng.run()
    models = Store(tmp_path).models(eng.run_id)
    assert list(models["status"]) == ["ok", "failed", "ok"]
    assert eng.bank.archs[1] == (0,) and eng.bank.archs[0][0] > 0 and eng.bank.archs[2][0] > 0


def test_running_epoch_by_epoch_equals_one_run(tmp_path):
    """``run(until=e)`` (the benchmark's way of timing engines in turn) continues in memory."""
    data = synthetic()
    cfg = config(stats_epochs="none")
    whole = Engine(SPECS, cfg, tmp_path / "a", modifiers=[gate], data=data, progress=False)
    whole.run()
    steps = Engine(SPECS, cfg, tmp_path / "b", modifiers=[gate], data=data, progress=False)
    for epoch in (1, 2, 3):
        steps.run(until=epoch)
        assert steps.state.epoch == epoch
        assert Store(tmp_path / "b").get_run(steps.run_id)["status"] == "running"
    steps.run()
    assert Store(tmp_path / "b").get_run(steps.run_id)["status"] == "done"
    a = Store(tmp_path / "a").metrics(whole.run_id)
    b = Store(tmp_path / "b").metrics(steps.run_id)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_shrink_settings_enter_the_run_id_only_with_gates(tmp_path):
    data = synthetic()

    def run_id(mods=(), **kw):
        return Engine(SPECS, config(**kw), tmp_path, modifiers=mods, data=data,
                      progress=False).run_id

    assert run_id(shrink_every=None) == run_id(shrink_every="epoch") == run_id(
        shrink_mode="mask")
    ids = {run_id([gate], shrink_every=e, shrink_mode=m)
           for e in ("epoch", 5, None) for m in ("remove", "mask")}
    assert len(ids) == 6


@pytest.mark.parametrize("bad", ["weekly", 0, -3, True, 1.5])
def test_bad_shrink_settings_name_the_choices(bad):
    with pytest.raises(UsageError, match="'epoch', a number of steps"):
        TrainConfig(shrink_every=bad)
    with pytest.raises(UsageError, match="'remove' or 'mask'"):
        TrainConfig(shrink_mode="prune")
    assert TrainConfig(shrink_every="12").shrink_every == 12
    assert TrainConfig(shrink_every="none").shrink_every is None


if __name__ == "__main__":
    main()
