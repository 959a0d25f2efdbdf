"""The one run spec: what changes numbers is hashed, placement and labels are not, and every
kind of run (bank, module, analysis, job) is identified through it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch.nn.functional as F

from tests.engine.child_module_run import CONFIG, SmallCNN, images, make_run
from tests.engine.child_run import SPECS, synthetic
from widthlab.engine import Engine, TrainConfig
from widthlab.engine.lifecycle import run_trainable
from widthlab.engine.module_run import ModuleRun
from widthlab.engine.modules import ModuleConfig
from widthlab.engine.spec import RunSpec, split_config
from widthlab.errors import WidthlabError
from widthlab.executors import Job
from widthlab.nn.gated import SparsifierGate

SPEC = RunSpec("bank", label="a:b", dataset="mnist", data="mnist:10:2:3",
               models=[{"hidden": [8], "seed": 0}], train={"lr": 1e-3, "epochs": 2},
               modifiers=[{"gate": 1}], code="c0de", placement={"device": "cpu"})


def test_the_key_is_a_hash_of_the_hashed_half_only():
    expected = {"kind": "bank", "data": "mnist:10:2:3", "models": [{"hidden": [8], "seed": 0}],
                "train": {"lr": 1e-3, "epochs": 2}, "modifiers": [{"gate": 1}], "code": "c0de"}
    blob = json.dumps(expected, sort_keys=True)
    assert SPEC.key() == hashlib.sha256(blob.encode()).hexdigest()
    assert SPEC.run_id() == f"a.b-mnist-{SPEC.key()[:12]}"
    # label, dataset name, prefix and placement never count
    same = SPEC.replace(label="x:y", dataset="other", prefix="p",
                        placement={"device": "cuda:1", "eval_batch_size": 7})
    assert same.key() == SPEC.key() and same.run_id() == f"p-other-{SPEC.key()[:12]}"
    # everything else does
    for change in ({"kind": "module"}, {"data": "mnist:10:2:4"}, {"models": [{"seed": 1}]},
                   {"train": {"lr": 2e-3, "epochs": 2}}, {"modifiers": []}, {"code": "c0df"}):
        assert SPEC.replace(**change).key() != SPEC.key(), change
    with pytest.raises(ValueError, match="kind must be one of"):
        RunSpec("banks")


def test_split_config_follows_the_field_metadata():
    cfg = TrainConfig(device="cpu", eval_batch_size=7, study="s:e", keep_optimizer=True)
    hashed, placed = split_config(cfg)
    assert set(placed) == {"device", "eval_batch_size", "study", "keep_optimizer",
                           "shrink_every", "shrink_mode"}
    assert hashed["lr"] == 1e-3 and "device" not in hashed
    hashed, placed = split_config(cfg, shrinks=True)
    assert hashed["shrink_every"] == "epoch" and hashed["shrink_mode"] == "remove"
    assert set(split_config(ModuleConfig(eval_batch=3))[1]) == {"eval_batch"}


def _engine(store, modifiers=(), **kw) -> Engine:
    cfg = TrainConfig(dataset="synthetic", device="cpu", **kw)
    return Engine(SPECS, cfg, store, data=synthetic(), modifiers=modifiers)


def test_an_engine_run_is_identified_by_its_spec(tmp_path):
    eng = _engine(tmp_path)
    spec = eng.spec
    assert spec.kind == "bank" and eng.run_id == spec.run_id()
    assert spec.train == split_config(eng.cfg)[0]
    assert spec.placement["device"] == "cpu" and "study" not in spec.placement
    assert spec.models == [s.to_dict() for s in SPECS]
    # placement and label leave the key alone; the shrink policy counts only with a gate
    assert _engine(tmp_path, eval_batch_size=3, keep_optimizer=True, study="m:x",
                   shrink_mode="mask").spec.key() == spec.key()
    gate = [lambda: SparsifierGate(1e-3)]
    gated = _engine(tmp_path, gate)
    masked = _engine(tmp_path, gate, shrink_mode="mask")
    assert gated.spec.modifiers and gated.spec.key() != spec.key()
    assert masked.spec.key() != gated.spec.key()


def test_a_module_run_is_identified_by_its_spec():
    run = make_run()
    spec = run.spec
    assert spec.kind == "module" and run.run_id == spec.run_id()
    assert spec.placement == {"eval_batch": CONFIG.eval_batch, "device": "cpu"}
    assert spec.modifiers[0] == {"loss": "torch.nn.functional.cross_entropy"}
    other_loss = ModuleRun(lambda: SmallCNN(seed=0), images(), CONFIG, device="cpu",
                           loss_fn=F.nll_loss)
    assert other_loss.spec.key() != ModuleRun(lambda: SmallCNN(seed=0), images(), CONFIG,
                                              device="cpu").spec.key()
    assert make_run(cfg=replace(CONFIG, eval_batch=3)).spec.key() == spec.key()


def test_the_lifecycle_refuses_a_run_id_that_is_not_its_specs(tmp_path):
    run = make_run()
    run.run_id = "hand-made-id"
    with pytest.raises(WidthlabError, match="is not its spec's"):
        run_trainable(run, tmp_path / "store")
    assert not (tmp_path / "store").exists()  # refused before anything was written


def test_a_jobs_key_ignores_where_it_runs():
    base = Job("variance", "mnist", options=(("device", "cpu"),), code="c")
    assert base.key() == Job("variance", "mnist", options=(("device", "cuda"),),
                             code="c").key()
    user = Job("variance", "mine", options=(("device", "cpu"), ("data_file", ("/a.csv", "y")),
                                              ("data_id", "abc")), code="c")
    moved = Job("variance", "mine", options=(("device", "auto"), ("data_file", ("/b.csv", "y")),
                                               ("data_id", "abc")), code="c")
    assert user.key() == moved.key() and user.key().startswith("variance-mine-quick-")
    assert user.key() != replace(user, options=(("data_id", "abd"),)).key()
    assert base.key() != replace(base, options=(("epochs", 2),)).key()
    assert base.key() != replace(base, profile="standard").key()
