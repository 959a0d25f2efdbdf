"""A gated CNN shrunk during training (shrink_ with its optimizer after every epoch) resumes
from its weights-only checkpoint in a fresh ModuleRun bitwise identical to the uninterrupted
run: the fresh model is resized to the checkpoint's shapes (a selecting input gate's size
included), the optimizer and schedule rebuilt and loaded. A checkpoint holding a pickled
object (the old format) is refused: the run restarts and still ends identical."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
import torch
from torch import nn

from tests.children import run_numbers
from tests.engine.child_module_run import images
from widthlab.engine.lifecycle import run_trainable
from widthlab.engine.module_run import ModuleRun
from widthlab.engine.modules import ModuleConfig
from widthlab.nn.surgery import gate_layers, model_gates
from widthlab.store import Store
from widthlab.store.sqlite import _sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = ModuleConfig(epochs=3, price=1e-3, gate_lr=1e-2, lr=3e-3, batch_size=32,
                   schedule="cosine", shrink=True, seed=5)
# units dead from the start (relu(g) = 0 under the strict price stays 0): removed after epoch 1
DEAD = {"0": [1, 4], "4": [2], "10:in": [0, 5, 6, 7, 13]}


def gated_cnn() -> nn.Module:
    """conv(1->6) + BN, conv(6->5), Flatten, dropout, Linear(5*2*2 -> 4); gates on both convs'
    channels and on the Linear's inputs (after Flatten: a selecting gate)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Identity(),
                          nn.Linear(20, 4))
    ex = torch.zeros(2, 1, 8, 8)
    gate_layers(model, ["0", "4"], example=ex)
    gate_layers(model, ["10"], inputs="only", example=ex)
    with torch.no_grad():
        for gate in model_gates(model):
            gate.gate[DEAD[gate.key]] = -1.0
    return model


def make() -> ModuleRun:
    return ModuleRun(gated_cnn, images(), CFG, label="cnn:shrunk", device="cpu",
                     model_record={"name": "gated-cnn", "arch": [6, 5]})


def numbers(store, run_id) -> tuple[pd.DataFrame, dict]:
    return run_numbers(store, {"epoch_time"}, run_id)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    store = tmp_path_factory.mktemp("ref")
    run = make()
    run_id = run_trainable(run, store)
    return run, numbers(store, run_id)


def _same(store, run_id, reference) -> ModuleRun:
    ref_run, (ref_met, ref_ckpt) = reference
    resumed = make()
    assert run_trainable(resumed, store) == run_id
    met, ckpt = numbers(store, run_id)
    pd.testing.assert_frame_equal(met, ref_met, check_exact=True)
    assert ckpt["model"].keys() == ref_ckpt["model"].keys()
    for k, v in ckpt["model"].items():
        assert torch.equal(v, ref_ckpt["model"][k]), k
    assert ckpt["sizes"] == ref_ckpt["sizes"]
    assert repr(resumed.model) == repr(ref_run.model)
    return resumed


def test_a_shrunk_run_resumes_bitwise_identical(tmp_path, reference):
    ref_run, _ = reference
    fresh = gated_cnn()
    run_id = run_trainable(make(), tmp_path, until=1)
    _, ckpt = Store(tmp_path).latest_checkpoint(run_id)
    # the epoch-1 checkpoint is of a shrunk model, its sizes plain ints
    assert ckpt["model"]["0.weight"].shape[0] == 4 < fresh[0].weight.shape[0]
    assert ckpt["model"]["4.weight"].shape == (4, 4, 3, 3)
    assert ckpt["model"]["10.weight"].shape[1] == 20 - 4 - 5  # a dead channel's 4, 5 gated
    assert ckpt["sizes"]["10.widthlab_in_gate"]["n_in"] == 16  # 4 channels x 2 x 2
    assert fresh[10].widthlab_in_gate.n_in == 20
    assert set(ckpt) == {"model", "sizes", "state", "opt", "sched", "gen", "rng"}
    resumed = _same(tmp_path, run_id, reference)
    gate, ref_gate = resumed.model[10].widthlab_in_gate, ref_run.model[10].widthlab_in_gate
    assert gate.n_in == ref_gate.n_in and torch.equal(gate.index, ref_gate.index)
    # the optimizer points at the resumed model's parameters
    params = {id(p) for p in resumed.model.parameters()}
    assert {id(p) for g in resumed.opt.param_groups for p in g["params"]} == params


def test_a_pickled_checkpoint_is_refused_and_the_run_restarts(tmp_path, reference):
    """The old format (model, optimizer and schedule objects pickled) is never unpickled."""
    run_id = run_trainable(make(), tmp_path, until=1)
    st = Store(tmp_path)
    with sqlite3.connect(st.root / "widthlab.sqlite") as conn:
        (rel,) = conn.execute("SELECT path FROM checkpoints WHERE run_id = ?",
                              (run_id,)).fetchone()
    path = st.root / rel
    run = make()
    torch.save({"objects": {"model": run.model, "opt": run.opt, "sched": run.sched},
                "state": {"epoch": 1}}, path)
    with sqlite3.connect(st.root / "widthlab.sqlite") as conn:
        conn.execute("UPDATE checkpoints SET sha256 = ?", (_sha256_file(path),))
    with pytest.warns(RuntimeWarning, match="not a weights-only checkpoint"):
        assert st.latest_checkpoint(run_id) is None
    with pytest.warns(RuntimeWarning, match="not a weights-only checkpoint"):
        _same(tmp_path, run_id, reference)  # trained again from epoch 0
