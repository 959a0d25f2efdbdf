"""The lenet study with both gate kinds (issue 33): hard-concrete runs stored beside the L1 ones
under their own step names, the stored records equal a fresh run (seeded noise), L1 runs keep
their identity, per-kind verdicts and figure, and a misnamed kind is refused."""

from __future__ import annotations

import pytest
import torch

from tests.studies.test_lenet_study import data
from widthlab.errors import UsageError
from widthlab.nn.lenet import LENET300
from widthlab.report.builder import study_sections
from widthlab.store import Store
from widthlab.studies import lenet
from widthlab.studies.base import newest
from widthlab.studies.lenet.compute import gated_run_config

# 12 steps per epoch under a cosine schedule: log_alpha learns fast enough to cross the edge
SMALL = dict(networks=(LENET300,), prices300=(1e-3,), hc_prices300=(1e-5,), epochs300=2,
             train_size=None, gate_lr=0.1, batch_size=50, cut=False,
             gate_kinds=("l1", "hard_concrete"), hc_init=1.0, hc_gate_lr=0.4, hc_per_weight300=True)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    torch.set_num_threads(1)
    store = Store(tmp_path_factory.mktemp("lenet-hc"))
    return store, lenet.run("mnist", "quick", store=store, data=data("mnist", 0), device="cpu",
                            **SMALL)


def test_hard_concrete_runs_are_stored_and_reproduce(study):
    store, runs = study
    assert set(runs.runs) == {"gated-lenet300-0.001", "gated-hc-lenet300-1e-05", "manifest"}
    run_id = runs["gated-hc-lenet300-1e-05"]
    cfg = store.get_run(run_id)["config"]
    assert cfg["gate_kind"] == "hard_concrete" and cfg["settings"]["per_weight"] is True
    assert "gate_kind" not in store.get_run(runs["gated-lenet300-0.001"])["config"]
    prof = lenet.STUDY.profile("quick", **SMALL)
    fresh = lenet.gated_run(LENET300, 1e-5, data("mnist", 0), prof, kind="hard_concrete")
    met = store.metrics(run_id)
    for rec in fresh:  # the same seeded noise: the same numbers, exactly
        got = met[met.epoch == rec["epoch"]].set_index("name")["value"]
        assert got["error"] == rec["test_error"] and got["loss"] == rec["train_loss"]
        assert tuple(int(got[f"width/{n}"]) for n in ("fc1", "fc2", "fc3")) == rec["row_widths"]
    assert fresh[-1]["row_widths"][0] < 784  # the expected-L0 price removed pixels


def test_l1_identity_is_unchanged_by_the_gate_kinds():
    """An L1 run's config (hence its id) has no gate-kind fields: stored runs stay found."""
    class Ctx:
        profile = lenet.STUDY.profile("quick")
        data = None
        dataset = "mnist"

    cfg = gated_run_config(LENET300, 5e-4, Ctx())
    assert set(cfg) == {"network", "price", "kind", "settings", "data"}
    assert set(cfg["settings"]) == {"epochs", "train_size", "seed", "lr", "batch_size",
                                    "gate_lr", "free_frac", "warmup", "scales300"}


def test_verdicts_and_figure_per_kind(study, tmp_path):
    store, runs = study
    tables = lenet.STUDY.tables(store, newest(store, runs.ids()))
    rows = tables["mnist"]["rows"]
    assert sorted(rows.gate_kind) == ["hard_concrete", "l1"]
    v = lenet.STUDY.verdicts(tables)["mnist"]
    claims = [x.claim for x in v]
    assert claims[2].startswith("LeNet-300-100 (gates (hard concrete)): at most 1.6%")
    hc = rows[rows.gate_kind == "hard_concrete"].iloc[0]
    assert v[2].holds == bool(hc.error <= 1.6 and hc.total_width <= 200)
    assert v[2].numbers["total_width"] == hc.total_width
    reached = [x for x in v if x.claim.startswith("widthlab gates") and "reach every" in x.claim]
    assert [x.claim for x in reached] == ["widthlab gates reach every published row",
                                          "widthlab gates (hard concrete) reach every "
                                          "published row"]
    assert "their best epoch" in reached[1].text and "Reached 0 of 4" in reached[1].text
    rendered = study_sections(lenet.STUDY, store, runs.ids(), tmp_path)
    sec = rendered[0].section
    assert "hard-concrete gates" in sec.intro and not sec.error
    assert "(widthlab gates (hard concrete)): 2 epochs at each of 1 prices (1e-05" in sec.budget


def test_ramp_and_fixed_gates_are_lenet300_hard_concrete_settings():
    """hc_ramp300 / hc_fix_gates300 reach the hard-concrete LeNet-300-100 run's ModuleConfig
    and identity only; L1 runs, LeNet-5-Caffe and runs without them keep theirs."""
    from widthlab.nn.lenet import LENET5
    from widthlab.studies.lenet.config import gated_config, settings

    p = lenet.STUDY.profile("full", hc_ramp300=0.2, hc_fix_gates300=True, hc_epochs300=0)
    cfg = gated_config(p, LENET300, 3e-3, "hard_concrete")
    assert (cfg.ramp_epochs, cfg.fix_gates, cfg.free_epochs, cfg.warmup_epochs) == (6, True,
                                                                                    10, 5)
    assert settings(p, LENET300, "gated", "hard_concrete")["fix_gates"] is True
    for net, kind in ((LENET300, "l1"), (LENET5, "hard_concrete")):
        c = gated_config(p, net, 1e-3, kind)
        assert (c.ramp_epochs, c.fix_gates) == (0, False)
        assert "ramp" not in settings(p, net, "gated", kind)
    plain = lenet.STUDY.profile("full", hc_ramp300=0.0, hc_fix_gates300=False)
    assert "ramp" not in settings(plain, LENET300, "gated", "hard_concrete")
    with pytest.raises(UsageError, match="hc_ramp300"):
        lenet.STUDY.profile("quick", hc_ramp300=1.5)


def test_bad_gate_kind_is_refused():
    with pytest.raises(UsageError, match="gate_kinds"):
        lenet.STUDY.profile("quick", gate_kinds=("l0",))


def test_regularisers_are_lenet300_hard_concrete_settings_only_when_set():
    """hc_dropout300 / hc_dropout_free_only300 / hc_weight_decay300 reach the hard-concrete
    LeNet-300-100 run's ModuleConfig, and its settings (identity) only when set: a profile
    without them gives the settings keys of before."""
    from widthlab.nn.lenet import LENET5
    from widthlab.studies.lenet.config import gated_config, settings

    before = {"epochs", "train_size", "seed", "lr", "batch_size", "gate_lr", "free_frac",
              "warmup", "gate_kind", "per_weight", "init", "ramp", "fix_gates", "scales300"}
    plain = lenet.STUDY.profile("full", hc_dropout300=(), hc_weight_decay300=0.0,
                                hc_dropout_free_only300=False, hc_distill300=0.0,
                                hc_shift300=0)
    assert set(settings(plain, LENET300, "gated", "hard_concrete")) == before
    cfg = gated_config(plain, LENET300, 3e-3, "hard_concrete")
    assert (cfg.dropout, cfg.dropout_free_only, cfg.weight_decay) == ((), False, 0.0)
    assert "dropout" not in cfg.identity()[0]
    p = lenet.STUDY.profile("full", hc_dropout300=(0.1, 0.2, 0.3), hc_dropout_free_only300=True,
                            hc_weight_decay300=1e-4, hc_distill300=0.0, hc_shift300=0)
    got = settings(p, LENET300, "gated", "hard_concrete")
    assert set(got) == before | {"dropout", "dropout_free_only", "weight_decay"}
    assert (got["dropout"], got["weight_decay"]) == ([0.1, 0.2, 0.3], 1e-4)
    cfg = gated_config(p, LENET300, 3e-3, "hard_concrete")
    assert (cfg.dropout, cfg.dropout_free_only, cfg.weight_decay) == ((0.1, 0.2, 0.3), True,
                                                                       1e-4)
    for net, kind in ((LENET300, "l1"), (LENET5, "hard_concrete")):
        c = gated_config(p, net, 1e-3, kind)
        assert (c.dropout, c.weight_decay) == ((), 0.0)
        assert "dropout" not in settings(p, net, "gated", kind)
    for bad in ({"hc_dropout300": (0.1, 0.2)}, {"hc_dropout300": (1.0,)},
                {"hc_weight_decay300": -1.0}):
        with pytest.raises(UsageError, match="hc_dropout300|hc_weight_decay300"):
            lenet.STUDY.profile("quick", **bad)
