"""The lenet study's distilled hard-concrete LeNet-300-100 runs (hc_distill300): settings and
ModuleConfig only when set, the stored run equals a hand-made teacher + distilled run, and
bad values are refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.studies.test_lenet_study import data
from widthlab.engine.distill import shifted_teacher_logits
from widthlab.engine.modules import train_module
from widthlab.errors import UsageError
from widthlab.nn.lenet import LENET5, LENET300
from widthlab.store import Store
from widthlab.studies import lenet
from widthlab.studies.base import newest
from widthlab.studies.lenet.config import dense_config, gated_config, settings
from widthlab.studies.lenet.train import build_dense, build_gated

SMALL = dict(networks=(LENET300,), hc_prices300=(1e-2,), epochs300=2, train_size=None,
             batch_size=50, cut=False, gate_kinds=("hard_concrete",), hc_gate_lr=0.4,
             hc_distill300=0.6, hc_distill_temp300=3.0, hc_teacher300=LENET300)


def test_distillation_is_a_lenet300_hard_concrete_setting_only_when_set():
    plain = lenet.STUDY.profile("full", hc_distill300=0.0, hc_shift300=0)
    keys = set(settings(plain, LENET300, "gated", "hard_concrete"))
    assert not {"distill", "distill_temp", "teacher"} & keys
    assert gated_config(plain, LENET300, 3e-3, "hard_concrete").distill == 0.0
    p = lenet.STUDY.profile("full", hc_distill300=0.5, hc_distill_temp300=2.0, hc_shift300=0)
    got = settings(p, LENET300, "gated", "hard_concrete")
    assert set(got) == keys | {"distill", "distill_temp", "teacher", "teacher_epochs"}
    assert (got["distill"], got["distill_temp"], got["teacher"], got["teacher_epochs"]) == (
        0.5, 2.0, LENET5, 10)
    cfg = gated_config(p, LENET300, 3e-3, "hard_concrete")
    assert (cfg.distill, cfg.distill_temperature) == (0.5, 2.0)
    for net, kind in ((LENET300, "l1"), (LENET5, "hard_concrete")):
        assert gated_config(p, net, 1e-3, kind).distill == 0.0
        assert "distill" not in settings(p, net, "gated", kind)
    assert "shift" not in got and gated_config(p, LENET300, 3e-3, "hard_concrete").shift == 0
    shifted = lenet.STUDY.profile("full", hc_shift300=2)
    assert settings(shifted, LENET300, "gated", "hard_concrete")["shift"] == 2
    assert gated_config(shifted, LENET300, 3e-3, "hard_concrete").shift == 2
    assert gated_config(shifted, LENET5, 3e-3, "hard_concrete").shift == 0
    for bad in ({"hc_distill300": 1.5}, {"hc_distill_temp300": 0.0},
                {"hc_teacher300": "LeNet-7"}, {"hc_shift300": -1}):
        with pytest.raises(UsageError, match="hc_distill|hc_teacher300|hc_shift300"):
            lenet.STUDY.profile("quick", **bad)


@pytest.mark.parametrize("shift", [0, 1])
def test_stored_distilled_run_equals_a_hand_made_teacher_and_student(tmp_path, shift):
    torch.set_num_threads(1)
    d = dataclasses.replace(data("mnist", 0), sample_shape=(1, 28, 28))
    small = {**SMALL, "hc_shift300": shift}
    runs = lenet.run("mnist", "quick", store=Store(tmp_path), data=d, device="cpu", **small)
    run_id = runs["gated-hc-lenet300-0.01"]
    p = lenet.STUDY.profile("quick", **small)
    teacher = build_dense(LENET300, p, 784, 10)  # the dense network, trained by hand
    train_module(teacher, (d.train.x, d.train.y), (d.test.x, d.test.y),
                 dense_config(p, LENET300))
    logits = shifted_teacher_logits(teacher, d.train.x, (1, 28, 28), shift,
                                    float(d.train.x.min()))
    assert logits.shape == ((600, 10) if not shift else (600, 9, 10))
    student = build_gated(LENET300, p, 784, 10, "hard_concrete")
    recs = train_module(student, (d.train.x, d.train.y), (d.test.x, d.test.y),
                        gated_config(p, LENET300, 1e-2, "hard_concrete"), teacher=logits,
                        sample_shape=(1, 28, 28))
    assert gated_config(p, LENET300, 1e-2, "hard_concrete").shift == shift
    met = Store(tmp_path).metrics(run_id)
    for rec in recs:
        got = met[met.epoch == rec["epoch"]].set_index("name")["value"]
        assert got["error"] == rec["test_error"] and got["loss"] == rec["train_loss"]
    plain = build_gated(LENET300, p, 784, 10, "hard_concrete")
    undistilled = train_module(plain, (d.train.x, d.train.y), (d.test.x, d.test.y),
                               gated_config(p, LENET300, 1e-2, "hard_concrete"), distill=0.0,
                               sample_shape=(1, 28, 28))
    assert undistilled[0]["train_loss"] != recs[0]["train_loss"]
    cfg = Store(tmp_path).get_run(run_id)["config"]
    assert cfg["settings"]["teacher"] == LENET300 and cfg["settings"]["distill"] == 0.6
    assert cfg["settings"].get("shift", 0) == shift
    rows = lenet.STUDY.tables(Store(tmp_path), newest(Store(tmp_path), runs.ids()))["mnist"]["rows"]
    note = ", images shifted up to 1 px" if shift else ""
    assert list(rows.method) == ["widthlab gates (hard concrete), price 0.01, distilled from "
                                 f"LeNet-300-100 (a=0.6, T=3){note}"]


def test_hc_epochs300_sets_the_hard_concrete_lenet300_epochs_only():
    p = lenet.STUDY.profile("full", hc_epochs300=90)
    assert gated_config(p, LENET300, 3e-3, "hard_concrete").epochs == 90
    assert (gated_config(p, LENET300, 3e-3, "hard_concrete").free_epochs,
            gated_config(p, LENET300, 3e-3, "hard_concrete").warmup_epochs) == (30, 15)
    assert settings(p, LENET300, "gated", "hard_concrete")["epochs"] == 90
    assert gated_config(p, LENET300, 3e-4, "l1").epochs == 30
    assert settings(p, LENET300, "gated", "l1")["epochs"] == 30
    assert settings(p, LENET300, "cut")["epochs"] == 30
    assert gated_config(p, LENET5, 1e-3, "hard_concrete").epochs == 10
    plain = lenet.STUDY.profile("full", hc_epochs300=0)
    assert gated_config(plain, LENET300, 3e-3, "hard_concrete").epochs == 30
    with pytest.raises(UsageError, match="hc_epochs300"):
        lenet.STUDY.profile("quick", hc_epochs300=-1)
