"""The importance study end to end on a synthetic problem: what the engine hook stored is
recomputed from the trained weights, and the report reads the store."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from tests.engine.child_run import synthetic
from widthlab.engine import identity
from widthlab.engine.trainer import Engine, TrainConfig, load_bank, train
from widthlab.errors import UsageError
from widthlab.metrics.importance import exact_importance, keep_neurons, proxies
from widthlab.metrics.importance_hook import ImportanceHook
from widthlab.metrics.ordering import ordering as order_of
from widthlab.nn import ModelSpec, NeuronGate
from widthlab.report.builder import study_sections
from widthlab.store import Store
from widthlab.studies import importance
from widthlab.studies.base import newest

SMALL = dict(widths=[8, 24], seeds=2, epochs=2, batch_size=32, lr=5e-3, train_size=None)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return synthetic(n_train=640, n_val=200, n_test=300)


@pytest.fixture(scope="module")
def importance_run(tmp_path_factory, data):
    store = tmp_path_factory.mktemp("imp")
    runs = importance.run("synthetic", "quick", store=store, data=data, device="cpu", **SMALL)
    return store, runs["scores"]


def test_stored_scores_and_cuts_recompute_from_the_checkpoint(importance_run, data):
    store, run_id = importance_run
    st = Store(store)
    assert run_id.startswith("importance.scores-synthetic-")
    assert st.get_run(run_id)["study"] == "importance:scores"
    # the last checkpoint: the weights the hook scored (strict=False: the hook is listed with
    # the modifiers in the run config)
    bank = load_bank(st, run_id, strict_modifiers=False)
    for m in range(bank.n_models):
        mlp = bank.export(m)
        exact = exact_importance(mlp, data.val.x, data.val.y)
        np.testing.assert_allclose(st.array(run_id, m, "imp_exact"), exact, rtol=0, atol=1e-12)
        for name, v in proxies(mlp, data.val.x, data.val.y).items():
            np.testing.assert_allclose(st.array(run_id, m, f"imp_{name}"), v, rtol=1e-9,
                                       atol=1e-12)
        ks = st.array(run_id, m, "topk_k")
        assert ks[-1] == bank.specs[m].width
        acc = st.array(run_id, m, "topk_acc_exact")
        for k, a in zip(ks, acc, strict=True):
            small = keep_neurons(mlp, order_of(exact)[:k])
            with torch.no_grad():
                ref = float((small(data.test.x).argmax(1) == data.test.y).float().mean())
            assert a == pytest.approx(ref)
    # keeping every neuron is the full model: the engine's own test accuracy
    met = st.metrics(run_id)
    full = met[(met.name == "acc") & (met.split == "test") & (met.epoch == 2)]
    topk = importance.topk_table(st, run_id)
    for m, acc in zip(full.model, full.value, strict=True):
        assert topk[(topk.model == m)]["full_acc"].iloc[0] == pytest.approx(acc, abs=1e-6)


def test_tables_and_verdicts_follow_the_stored_numbers(importance_run):
    store, run_id = importance_run
    agree = importance.agreement_table(store, run_id)
    assert set(agree.proxy) == {"act_std", "in_norm", "out_norm", "taylor", "contribution",
                                "taylor2"}
    assert len(agree) == 4 * 6
    st = Store(store)
    row = agree[(agree.model == 3) & (agree.proxy == "taylor")].iloc[0]
    ex, tay = st.array(run_id, 3, "imp_exact"), st.array(run_id, 3, "imp_taylor")
    assert row.kendall == pytest.approx(stats.kendalltau(ex, tay).statistic)
    assert row.spearman == pytest.approx(stats.spearmanr(ex, tay).statistic)
    v = importance.closest_proxy(agree)
    summary = importance.proxy_summary(agree)
    assert v.numbers["best"] == summary.proxy.iloc[0]
    assert v.numbers["kendall"][v.numbers["best"]] == summary.kendall.max()
    assert v.holds == (summary.kendall.max() >= importance.TAU_GOOD)
    topk = importance.topk_table(st, run_id)
    cuts = importance.cut_summary(topk)
    assert len(cuts) == 4 * len(importance.ORDERINGS) - 4  # no gate proxy without gates
    best = importance.best_cut(topk)
    means = cuts.groupby("ordering")["mean_acc"].mean()
    assert best.holds == bool(means["exact"] >= means.max() - 1e-12)
    gain = importance.inference_gain(topk)
    wide = cuts[cuts.width == 24].groupby("ordering")["k_keep"].mean()
    assert gain.numbers["k_keep"]["exact"] == pytest.approx(wide["exact"])
    assert gain.holds == bool(wide["exact"] < wide["random"])
    # the study's tables and verdicts are these functions of the stored runs
    tables = importance.STUDY.tables(st, newest(st, [run_id]))
    pd.testing.assert_frame_equal(tables["synthetic"]["agree"], agree)
    pd.testing.assert_frame_equal(tables["synthetic"]["topk"], topk)
    verdicts = importance.STUDY.verdicts(tables)["synthetic"]
    assert [x.holds for x in verdicts] == [v.holds, best.holds, gain.holds]


def test_report_sections_draw_from_the_store(importance_run, tmp_path):
    store, run_id = importance_run
    (rendered,) = study_sections(importance.STUDY, Store(store), [run_id], tmp_path)
    sec = rendered.section
    assert sec.error == ""
    assert sec.title == "Neuron importance: synthetic" and len(sec.verdicts) == 3
    assert len(rendered.figures) == 3 and all(p.exists() and p.stat().st_size > 1000
                                              for _, p in rendered.figures)
    assert [r["run_id"] for r in rendered.runs] == [run_id]
    assert "2 epochs" in sec.budget and "2 seeds" in sec.budget


def _engine(store, data, exp, hooks) -> Engine:
    cfg = replace(exp.config, study=importance.STUDY.label(exp.name), dataset="synthetic",
                  device="cpu")
    return Engine(exp.specs, cfg, store, data=data, hooks=hooks)


def test_a_finished_run_is_reused_and_the_hook_enters_the_fingerprint(importance_run, data,
                                                                       monkeypatch):
    store, run_id = importance_run
    before = Store(store).runs()
    again = importance.run("synthetic", "quick", store=store, data=data, device="cpu", **SMALL)
    assert again["scores"] == run_id
    pd.testing.assert_frame_equal(Store(store).runs(), before)
    exp = importance.experiment(importance.STUDY.profile("quick", **SMALL))
    assert _engine(store, data, exp, list(exp.hooks)).run_id == run_id
    other = _engine(store, data, exp, [ImportanceHook(max_samples=50)])
    assert other.run_id != run_id
    # editing the scoring code the hook calls (not only the hook's own module) retrains
    real = identity._module_source

    def edited(name: str) -> str:
        src = real(name)
        return src + "\nEDITED = 1\n" if name == "widthlab.metrics.importance" else src

    monkeypatch.setattr(identity, "_module_source", edited)
    assert _engine(store, data, exp, list(exp.hooks)).run_id != run_id


def test_gated_models_are_scored_with_their_gates(tmp_path, data):
    specs = [ModelSpec((12,), seed=0), ModelSpec((6,), seed=1)]
    cfg = TrainConfig(dataset="synthetic", epochs=1, batch_size=32, device="cpu",
                      stats_epochs="none", eval_splits=("test",), study="importance")
    hook = ImportanceHook(topk="none")
    run_id = train(specs, cfg, tmp_path, data=data, hooks=[hook],
                   modifiers=[lambda: NeuronGate(1e-3, lr=0.05)])
    st = Store(tmp_path)
    state = st.latest_checkpoint(run_id)[1]["bank"]
    gate = state["modifiers.0.gate"]
    assert not torch.allclose(gate, torch.ones_like(gate))  # the gates trained
    bank = load_bank(st, run_id, strict_modifiers=False)
    for m in range(2):
        a, b = bank.slices[m]
        np.testing.assert_allclose(st.array(run_id, m, "imp_gate"), gate[a:b].abs().numpy(),
                                   rtol=1e-6)
        exact = exact_importance(bank.export(m), data.val.x, data.val.y, scale=gate[a:b])
        np.testing.assert_allclose(st.array(run_id, m, "imp_exact"), exact, atol=1e-12)


def test_profiles_and_errors():
    exp = importance.experiment(importance.STUDY.profile("quick"))
    specs, cfg = exp.specs, exp.config
    assert len(specs) == 6 and cfg.epochs == 3 and importance.STUDY.label(exp.name) == \
        "importance:scores"
    assert cfg.train_size == 10_000
    (full,) = importance.STUDY.experiments(importance.STUDY.profile("full"), "mnist")
    assert full.config.epochs == 15 and full.config.train_size is None
    assert len(full.specs) == 3 * len({s.width for s in full.specs})
    assert full.hooks[0].record == "last" and full.hooks[0].topk == "last"
    with pytest.raises(UsageError, match="profile"):
        importance.STUDY.profile("huge")
    with pytest.raises(UsageError, match="record must be"):
        ImportanceHook(record="sometimes")
    with pytest.raises(UsageError, match="widths must be"):
        importance.STUDY.profile("quick", widths=[0, 16])
    with pytest.raises(UsageError, match="max_samples"):
        importance.STUDY.profile("quick", max_samples=0)


@pytest.mark.realdata
def test_cli_command_on_mnist(real_cache, tmp_path, capsys):
    from widthlab.cli import main

    store = str(tmp_path / "runs")
    assert main(["study", "importance", "--dataset", "mnist", "--widths", "16,32", "--seeds",
                 "1", "--epochs", "1", "--device", "cpu", "--store", store, "-q"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    agree = importance.agreement_table(store, run_id)
    assert set(agree.width) == {16, 32}
