"""The ordering-stability study end to end on a synthetic problem: stability and fidelity
rows recomputed from the stored records (scipy/numpy), the sorted-layer comparison from the
stored metrics, and the report sections."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.engine.child_run import synthetic
from widthlab.errors import UsageError
from widthlab.report.builder import study_sections
from widthlab.store import Store
from widthlab.studies import ordering
from widthlab.studies.ordering import analysis as an

SMALL = dict(batch_size=32, lr=5e-3, device="cpu")
STABILITY = dict(widths=[16, 32], seeds=1, epochs=4, train_size=None, **SMALL)
# every stored ordering but "gate" (no gates here), plus the derived "exact_abs"
N_ORDERINGS = len(an.ORDERINGS)
VARIANT_STEPS = [ordering.VARIANT_PREFIX + v for v in ordering.VARIANTS]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return synthetic(n_train=640, n_val=200, n_test=300)


@pytest.fixture(scope="module")
def ordering_run(tmp_path_factory, data):
    store = tmp_path_factory.mktemp("ord")
    runs = ordering.run("synthetic", "quick", store=store, data=data, only=["stability"],
                        **STABILITY)
    assert set(runs.runs) == {"stability"}
    return store, runs["stability"]


def test_stability_rows_recompute_from_the_stored_records(ordering_run, data):
    store, run_id = ordering_run
    st = Store(store)
    assert st.get_run(run_id)["study"] == "ordering:stability"
    # the study's run() gives the same (reused) stability run
    before = st.runs()
    again = ordering.run("synthetic", "quick", store=store, data=data, only=["stability"],
                         **STABILITY)
    assert dict(again.runs) == {"stability": run_id}
    pd.testing.assert_frame_equal(st.runs(), before)
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
    assert ex.stable == (ex.kendall_tau >= an.STABLE_TAU and
                         ex.topk_churn <= an.STABLE_CHURN)
    v = ordering.sorted_layer_verdict(summary)
    ok = summary[summary.stable & summary.faithful]
    assert v.holds == (len(ok) > 0)
    if v.holds:
        assert v.numbers["best"] == ok.sort_values("tau_with_exact").ordering.iloc[-1]
    (rendered,) = study_sections(ordering.STUDY, Store(store), [run_id], tmp_path)
    sec = rendered.section
    assert sec.error == "" and sec.title == "Ordering stability: synthetic"
    assert len(sec.verdicts) == 2 and len(rendered.figures) == 2
    assert all(p.exists() for _, p in rendered.figures)
    assert [x.holds for x in sec.verdicts] == [v.holds, bool(ex.stable)]


def test_profiles_and_errors(tmp_path):
    steps = ordering.STUDY.experiments(ordering.STUDY.profile("quick"), "mnist")
    assert [s.name for s in steps] == ["stability", *VARIANT_STEPS]
    stab = steps[0]
    assert {s.width for s in stab.specs} == {128, 512} and stab.config.epochs == 6
    assert stab.config.train_size == 10_000
    assert stab.hooks[0].record == "all" and stab.hooks[0].topk == "none"
    assert ordering.STUDY.label(steps[1].name) == "ordering:variant-flexible"
    assert ordering.STUDY.command == "ordering-stability"
    for step in steps[1:]:  # the sorted-layer comparison: 256 neurons, 3 penalties, 4 epochs
        assert {s.width for s in step.specs} == {256} and len(step.specs) == 3
        assert step.config.epochs == 4 and step.config.train_size == 10_000
        variant = step.name.removeprefix(ordering.VARIANT_PREFIX)
        assert {s.variant for s in step.specs} == {variant}
    assert steps[-1].modifiers[0]().lr == 1e-2  # the sparsifier's gate lr
    with pytest.raises(UsageError, match="epochs >= 2"):
        ordering.STUDY.profile("quick", epochs=1)
    with pytest.raises(UsageError, match="unknown variant"):
        ordering.STUDY.profile("quick", variants=["sorted-nothing"])
    with pytest.raises(UsageError, match="no run"):
        ordering.records(tmp_path, "nope")


@pytest.mark.realdata
def test_cli_command_on_mnist(real_cache, tmp_path, capsys):
    from widthlab.cli import main

    store = str(tmp_path / "runs")
    assert main(["study", "ordering-stability", "--dataset", "mnist", "--widths", "16",
                 "--seeds", "1", "--epochs", "2", "--experiment", "stability", "--device",
                 "cpu", "--store", store, "-q"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(ordering.stability_table(store, run_id)) == N_ORDERINGS


# ------------------------------------------------------------------------------ sorted layer
def test_sorted_layer_comparison_is_stored_and_reported(tmp_path, data):
    runs = ordering.run("synthetic", "quick", store=tmp_path, data=data, only=VARIANT_STEPS,
                        sorted_width=24, penalties=[1e-3, 1e-1], sorted_epochs=2,
                        sorted_train_size=None, **SMALL)
    assert set(runs.runs) == set(VARIANT_STEPS)
    ids = {v: runs[ordering.VARIANT_PREFIX + v] for v in ordering.VARIANTS}
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
        better = (da > an.ACC_TIE) | (dw < -an.WIDTH_TIE)
        worse = (da < -an.ACC_TIE) | (dw > an.WIDTH_TIE)
        assert v.numbers["wins"][variant]["win"] == int((better & ~worse).sum())
        assert v.numbers["wins"][variant]["loss"] == int((worse & ~better).sum())
        net[variant] = int((better & ~worse).sum()) - int((worse & ~better).sum())
    assert v.holds == (max(net.values()) > 0)
    rendered = study_sections(ordering.STUDY, st, list(ids.values()), tmp_path / "figs")
    sections = [r.section for r in rendered]
    assert [s.title for s in sections] == ["Sorted flexible layer: synthetic"]
    assert rendered[0].figures[0][1].exists()
    assert [x.holds for x in sections[0].verdicts] == [v.holds]
