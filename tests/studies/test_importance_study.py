"""The importance and ordering-stability studies end to end on a synthetic problem: what the
engine hook stored is recomputed from the trained weights, and the report reads the store."""

import numpy as np
import pytest
import torch
from scipy import stats

from tests.engine.child_run import synthetic
from widthlab.engine.trainer import Engine, TrainConfig, load_bank, train
from widthlab.errors import UsageError
from widthlab.metrics.importance import exact_importance, keep_neurons, proxies
from widthlab.metrics.ordering import ordering as order_of
from widthlab.nn import ModelSpec, NeuronGate
from widthlab.store import Store
from widthlab.studies import importance, ordering

SMALL = dict(batch_size=32, device="cpu", progress=False)
# every stored ordering but "gate" (no gates here), plus the derived "exact_abs"
N_ORDERINGS = len(ordering.ORDERINGS)


@pytest.fixture(scope="module")
def data():
    return synthetic(n_train=640, n_val=200, n_test=300)


@pytest.fixture(scope="module")
def importance_run(tmp_path_factory, data):
    store = tmp_path_factory.mktemp("imp")
    run_id = importance.run("synthetic", widths=[8, 24], seeds=2, epochs=2, store=store,
                            data=data, lr=5e-3, train_size=None, **SMALL)
    return store, run_id


def test_stored_scores_and_cuts_recompute_from_the_checkpoint(importance_run, data):
    store, run_id = importance_run
    st = Store(store)
    assert run_id.startswith("importance-synthetic-")
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


def test_report_sections_draw_from_the_store(importance_run, tmp_path):
    store, run_id = importance_run
    (sec,) = importance.report_sections(store, [run_id], tmp_path)
    assert sec.title == "Neuron importance: synthetic" and len(sec.verdicts) == 3
    assert len(sec.figures) == 3 and all(p.exists() and p.stat().st_size > 1000
                                         for _, p in sec.figures)


def test_a_finished_run_is_reused_and_the_hook_enters_the_fingerprint(importance_run, data):
    store, run_id = importance_run
    again = importance.run("synthetic", widths=[8, 24], seeds=2, epochs=2, store=store,
                           data=data, lr=5e-3, train_size=None, **SMALL)
    assert again == run_id
    specs, cfg = importance.config_for("synthetic", widths=[8, 24], seeds=2, epochs=2,
                                       batch_size=32, device="cpu", lr=5e-3, train_size=None)
    other = Engine(specs, cfg, store, data=data, progress=False,
                   hooks=[importance.ImportanceHook(max_samples=50)])
    assert other.run_id != run_id


def test_gated_models_are_scored_with_their_gates(tmp_path, data):
    specs = [ModelSpec((12,), seed=0), ModelSpec((6,), seed=1)]
    cfg = TrainConfig(dataset="synthetic", epochs=1, batch_size=32, device="cpu",
                      stats_epochs="none", eval_splits=("test",), study="importance")
    hook = importance.ImportanceHook(topk="none")
    run_id = train(specs, cfg, tmp_path, data=data, progress=False, hooks=[hook],
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


# ------------------------------------------------------------------------------ ordering
@pytest.fixture(scope="module")
def ordering_run(tmp_path_factory, data):
    store = tmp_path_factory.mktemp("ord")
    run_id = ordering.run_stability("synthetic", widths=[16, 32], seeds=1, epochs=4,
                                    store=store, data=data, lr=5e-3, train_size=None, **SMALL)
    return store, run_id


def test_stability_rows_recompute_from_the_stored_records(ordering_run, data):
    store, run_id = ordering_run
    st = Store(store)
    # the study's run() gives the same (reused) stability run first
    assert ordering.run("synthetic", widths=[16, 32], seeds=1, epochs=4, store=store, data=data,
                        lr=5e-3, train_size=None, with_sorted=False, **SMALL) == [run_id]
    table = ordering.stability_table(store, run_id)
    assert len(table) == 2 * N_ORDERINGS * 3  # models x orderings x epoch pairs
    assert sorted(table.step.unique()) == [2, 3, 4]
    for row in table.sample(8, random_state=0).itertuples():
        before = st.array(run_id, row.model, f"imp_{row.ordering}", epoch=row.from_step)
        after = st.array(run_id, row.model, f"imp_{row.ordering}", epoch=row.step)
        rb, ra = np.argsort(np.argsort(-before, kind="stable")), \
            np.argsort(np.argsort(-after, kind="stable"))
        assert row.kendall_tau == pytest.approx(stats.kendalltau(rb, ra).statistic)
        assert row.mean_displacement == pytest.approx(np.abs(rb - ra).mean())
        assert row.max_displacement == np.abs(rb - ra).max()
        k = row.n // 4
        churn = 1 - len(set(np.flatnonzero(rb < k)) & set(np.flatnonzero(ra < k))) / k
        assert row.topk_churn == pytest.approx(churn)
    fid = ordering.fidelity_table(store, run_id)
    assert len(fid) == 2 * (N_ORDERINGS - 1) * 4  # models x proxies x epochs
    r = fid.iloc[5]
    ex = st.array(run_id, int(r.model), "imp_exact", epoch=int(r.epoch))
    px = st.array(run_id, int(r.model), f"imp_{r.proxy}", epoch=int(r.epoch))
    assert r.kendall == pytest.approx(stats.kendalltau(ex, px).statistic)


def test_ordering_summary_verdicts_and_report(ordering_run, tmp_path):
    store, run_id = ordering_run
    series = ordering.stability_table(store, run_id)
    summary = ordering.stability_summary(series, ordering.fidelity_table(store, run_id))
    late = series[series.step > 2]  # second half of 4 epochs
    ex = summary.set_index("ordering").loc["exact"]
    assert ex.kendall_tau == pytest.approx(late[late.ordering == "exact"].kendall_tau.mean())
    assert ex.stable == (ex.kendall_tau >= ordering.STABLE_TAU and
                         ex.topk_churn <= ordering.STABLE_CHURN)
    v = ordering.sorted_layer_verdict(summary)
    ok = summary[summary.stable & summary.faithful]
    assert v.holds == (len(ok) > 0)
    if v.holds:
        assert v.numbers["best"] == ok.sort_values("tau_with_exact").ordering.iloc[-1]
    (sec,) = ordering.report_sections(store, [run_id], tmp_path)
    assert len(sec.verdicts) == 2 and len(sec.figures) == 2
    assert all(p.exists() for _, p in sec.figures)


def test_profiles_and_errors(tmp_path):
    specs, cfg = importance.config_for("mnist", "quick", device="cpu")
    assert len(specs) == 6 and cfg.epochs == 3 and cfg.study == "importance"
    assert cfg.train_size == 20_000
    specs, cfg = ordering.config_for("mnist", "quick", device="cpu")
    assert {s.width for s in specs} == {128, 512} and cfg.epochs == 8
    assert cfg.train_size == 20_000
    with pytest.raises(UsageError, match="profile"):
        importance.config_for("mnist", "huge")
    with pytest.raises(UsageError, match="epochs >= 2"):
        ordering.config_for("mnist", epochs=1)
    with pytest.raises(UsageError, match="record must be"):
        importance.ImportanceHook(record="sometimes")
    with pytest.raises(UsageError, match="no run"):
        ordering.records(tmp_path, "nope")


@pytest.mark.realdata
def test_cli_commands_on_mnist(real_cache, tmp_path, capsys):
    from widthlab.cli import main

    store = str(tmp_path / "runs")
    assert main(["study", "importance", "--dataset", "mnist", "--widths", "16,32", "--seeds",
                 "1", "--epochs", "1", "--device", "cpu", "--store", store, "-q"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    agree = importance.agreement_table(store, run_id)
    assert set(agree.width) == {16, 32}
    assert main(["study", "ordering-stability", "--dataset", "mnist", "--widths", "16",
                 "--seeds", "1", "--epochs", "2", "--no-sorted", "--device", "cpu", "--store",
                 store, "-q"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(ordering.stability_table(store, run_id)) == N_ORDERINGS


# ------------------------------------------------------------------------------ sorted layer
def test_sorted_layer_comparison_is_stored_and_reported(tmp_path, data):
    ids = ordering.run_sorted("synthetic", width=24, penalties=[1e-3, 1e-1], epochs=2,
                              store=tmp_path, data=data, train_size=None, lr=5e-3, **SMALL)
    assert set(ids) == set(ordering.VARIANTS)
    st = Store(tmp_path)
    table = ordering.sorted_table(st, list(ids.values()))
    assert len(table) == 4 * 2 and set(table.penalty) == {1e-3, 1e-1}
    for r in table.itertuples():
        met = st.metrics(r.run_id)
        models = st.models(r.run_id)
        (m,) = [int(row.model) for row in models.itertuples()
                if row.options["penalty"] == r.penalty and row.seed == r.seed]
        last = met[(met.model == m) & (met.epoch == 2)]
        acc = last[(last.split == "test") & (last.name == "acc")].value.iloc[0]
        assert r.test_acc == pytest.approx(acc)
        if r.variant == "sparsifier":
            assert r.width == last[last.name == "alive_width"].value.iloc[0]
        else:
            x0 = last[last.name == "x0"].value.iloc[0]
            assert r.width == pytest.approx(min(max(x0, 0), 24))
    # a heavier price per neuron gives a narrower cut-off layer
    flex = table[table.variant == "flexible"].set_index("penalty")
    assert flex.loc[1e-1, "width"] < flex.loc[1e-3, "width"]
    v = ordering.sorted_verdict(table)
    net = {}
    for variant in ("sorted-act_std", "sorted-taylor"):  # a paired count, by hand
        a = table[table.variant == variant].set_index("penalty")
        b = table[table.variant == "flexible"].set_index("penalty")
        da, dw = a.test_acc - b.test_acc, (a.width - b.width) / 24
        better = (da > ordering.ACC_TIE) | (dw < -ordering.WIDTH_TIE)
        worse = (da < -ordering.ACC_TIE) | (dw > ordering.WIDTH_TIE)
        assert v.numbers["wins"][variant]["win"] == int((better & ~worse).sum())
        assert v.numbers["wins"][variant]["loss"] == int((worse & ~better).sum())
        net[variant] = int((better & ~worse).sum()) - int((worse & ~better).sum())
    assert v.holds == (max(net.values()) > 0)
    sections = ordering.report_sections(st, list(ids.values()), tmp_path / "figs")
    assert [s.title for s in sections] == ["Sorted flexible layer: synthetic"]
    assert sections[0].figures[0][1].exists()
