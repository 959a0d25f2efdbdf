"""A user nn.Module (a small CNN with BatchNorm and dropout) through the one run lifecycle:
kill -9 mid-epoch then resume is bitwise identical, a NaN is flagged as that run's divergence
and the other runs of the job go on, a finished run is reused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.children import assert_same_numbers, kill_at, run_numbers, spawn
from tests.engine.child_module_run import CONFIG, SmallCNN, images, make_run
from widthlab.engine.lifecycle import Trainable, run_trainable
from widthlab.engine.module_run import ModuleRun
from widthlab.store import Store
from widthlab.studies.base import ModuleExperiment, Profile, Study

CHILD = Path(__file__).with_name("child_module_run.py")
TIMED = {"epoch_time"}  # what a run stores that is measured, not computed


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    store = tmp_path_factory.mktemp("ref") / "store"
    spawn(CHILD, store)
    return run_numbers(store, TIMED)


def test_module_run_is_a_trainable_and_learns(reference):
    assert isinstance(make_run(), Trainable)
    met, _ = reference
    err = met[met.name == "error"].set_index("epoch").value
    assert list(err.index) == [1, 2, 3]
    assert err.iloc[-1] < 0.3 < 0.75  # 4 classes: chance is 0.75


def test_kill_9_mid_epoch_then_resume_is_bitwise_identical(tmp_path, reference):
    store = tmp_path / "store"
    p = spawn(CHILD, store, "--hang-at-step", "12", wait=False)  # 8 steps an epoch: epoch 2
    kill_at(p, tmp_path / "hang")
    st = Store(store)
    (run_id,) = st.runs()["run_id"]
    assert st.get_run(run_id)["epochs_done"] == 1
    spawn(CHILD, store)
    assert st.get_run(run_id)["status"] == "done"
    assert_same_numbers(run_numbers(store, TIMED), reference)  # BatchNorm running stats too


def test_a_run_does_not_depend_on_what_the_process_ran_before(tmp_path):
    """Two runs of the same config in one process (dropout draws from torch's global
    generator) store the same numbers, whatever drew from that generator in between."""
    def run(store):  # a model instance (no factory that seeds), then another job's draws
        model = SmallCNN(0)
        torch.rand(int(store.name == "b") + 1)
        return run_trainable(ModuleRun(model, images(), CONFIG, label="cnn:bn"), store)

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert first == second
    pd.testing.assert_frame_equal(run_numbers(tmp_path / "a", TIMED, first)[0],
                                  run_numbers(tmp_path / "b", TIMED, second)[0],
                                  check_exact=True)


def test_epochs_match_a_naive_loop(tmp_path):
    """The stored training loss is that of a plain loop with the same seeds and schedule."""
    run_id = run_trainable(make_run(), tmp_path)
    model = SmallCNN(0)
    opt = torch.optim.Adam(model.parameters(), lr=CONFIG.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 3 * 8)
    gen = torch.Generator().manual_seed(CONFIG.seed)
    torch.manual_seed(CONFIG.seed)  # dropout's generator: a fresh run seeds it
    data = images()
    losses = []
    for _ in range(3):
        order = torch.randperm(256, generator=gen)
        total = 0.0
        model.train()
        for i in range(0, 256, 32):
            idx = order[i:i + 32]
            loss = torch.nn.functional.cross_entropy(model(data.train.x[idx]), data.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / 256)
    met = Store(tmp_path).metrics(run_id)
    stored = met[met.name == "loss"].sort_values("epoch").value.to_numpy()
    assert stored == pytest.approx(losses, rel=1e-5)


class _P(Profile):
    pass


class TwoRuns(Study):
    """A job of two module runs; the first diverges."""

    name = "twocnn"
    profiles = {"quick": _P()}

    def experiments(self, profile, dataset):
        return [ModuleExperiment("nan", lambda: SmallCNN(0, nan_at_step=10), CONFIG,
                                 model_record={"name": "cnn", "arch": [6]}),
                ModuleExperiment("ok", lambda: SmallCNN(1), CONFIG,
                                 model_record={"name": "cnn", "arch": [6]})]


def test_nan_is_that_runs_divergence_and_the_job_goes_on(tmp_path):
    runs = TwoRuns().run("quadrants", store=tmp_path, data=images(), device="cpu")
    st = Store(tmp_path)
    bad, good = runs["nan"], runs["ok"]
    assert st.get_run(bad)["status"] == st.get_run(good)["status"] == "done"
    m = st.models(bad)
    assert m.status.tolist() == ["failed"] and m.failed_epoch.tolist() == [2]
    assert "NaN" in m.failure.iloc[0]
    assert st.metrics(bad).epoch.max() == 1  # epoch 1's rows, none after the divergence
    ok = st.metrics(good)
    assert st.models(good).status.tolist() == ["ok"] and sorted(set(ok.epoch)) == [1, 2, 3]
    assert ok.value.notna().all()
    # a second run of the job trains nothing
    stamp = st.get_run(good)["finished_at"]
    again = TwoRuns().run("quadrants", store=tmp_path, data=images(), device="cpu")
    assert again.runs == runs.runs and st.get_run(good)["finished_at"] == stamp


def test_the_run_spec_hashes_what_changes_numbers_only():
    from dataclasses import replace

    from tests.engine.child_run import SPECS, synthetic
    from widthlab.engine import Engine, TrainConfig

    def bank_id(**kw):
        cfg = TrainConfig(dataset="synthetic", device="cpu", **kw)
        return Engine(SPECS, cfg, "unused-store", data=synthetic()).run_id

    base = bank_id()
    assert bank_id(eval_batch_size=7, keep_optimizer=True) == base
    labelled = bank_id(study="mine:sweep")
    assert labelled.startswith("mine.sweep-") and labelled[-12:] == base[-12:]
    assert bank_id(lr=2e-3) != base and bank_id(chunk=8) != base
    assert "device" not in TrainConfig.hashed_fields()
    assert "shrink_every" in TrainConfig.hashed_fields(shrinks=True)
    run = make_run()
    assert make_run(cfg=replace(CONFIG, eval_batch=7)).run_id == run.run_id
    assert make_run(cfg=replace(CONFIG, lr=1e-2)).run_id != run.run_id
