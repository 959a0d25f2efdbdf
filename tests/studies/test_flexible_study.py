"""The flexible-layer study end to end on a tiny synthetic problem: every step trains through
the engine (the derived steps from the runs they read), the tables agree with the stored
numbers, the report draws its figures and verdicts from the store; the verdict criteria on
hand-made tables; the library's float64 scaler against numpy.

Example::

    .venv/bin/python -m pytest -q tests/studies/test_flexible_study.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hs

from tests.engine.child_run import synthetic
from widthlab.cli import main
from widthlab.engine import identity, trainer
from widthlab.engine.trainer import load_bank
from widthlab.errors import UsageError
from widthlab.nn.bank import init_mlp
from widthlab.nn.flexible import cutoff_scale_array
from widthlab.report.builder import study_sections
from widthlab.store import Store
from widthlab.studies import flexible as fx
from widthlab.studies.base import Derived, newest
from widthlab.studies.steps import step_code

TINY = dict(n=8, train_size=None, epochs=2, starts_step=4, penalties=(1e-2, 1e-5),
            replicates=1, minima_models=1, minima_epochs=2, pretrain_levels=(0, 1, 2),
            pretrain_models=1, pretrain_epochs=2, size_only_epochs=1, batch_size=64)
HELPERS = ("frontier-static", "pretrain-1", "pretrain-2")  # runs not reported on their own


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study(one_thread, tmp_path_factory):
    store = tmp_path_factory.mktemp("flex")
    data = synthetic(n_train=320, n_test=200)
    ids = fx.run("synthetic", "quick", store=store, data=data, device="cpu", **TINY)
    return Store(store), ids, data


def test_every_experiment_is_one_stored_run(study):
    st, ids, data = study
    assert set(ids.runs) == {*fx.RUNS, *HELPERS}  # reported runs and their helper runs
    assert ids["frontier-static"] == fx.find_static(st, ids["frontier"])
    counts = {"convergence": 2 * 3, "frontier": 2 * 2, "frontier-static": 2 * 2 + 2,
              "minima": 2, "pretrain-1": 3, "pretrain-2": 3, "pretrained": 3, "size-only": 2}
    labels = {"frontier-static": "flexible-static:frontier",
              "pretrain-1": "flexible-static:pretrain", "pretrain-2": "flexible-static:pretrain"}
    for key, run_id in ids.runs.items():
        info = st.get_run(run_id)
        assert info["status"] == "done"
        assert len(st.models(run_id)) == counts[key]
        assert info["study"] == labels.get(key, f"flexible:{key}")
    # a second call reuses every finished run
    again = fx.run("synthetic", "quick", store=st, data=data, device="cpu", **TINY)
    assert again == ids


def test_tables_match_the_stored_numbers(study):
    st, ids, _ = study
    met = st.metrics(ids["frontier"])
    x0 = met[(met.name == "x0") & (met.epoch == 2)].set_index("model").value
    table = fx.frontier_table(st, ids["frontier"])
    for row in table.itertuples():
        assert row.x0 == x0[row.model]
        assert row.final_width == min(max(x0[row.model], 0.0), 8.0)
    static_id = fx.find_static(st, ids["frontier"])
    twins = st.models(static_id)
    for row in twins.itertuples():
        if "twin_of" in row.options:
            expected = int(np.clip(round(x0[row.options["twin_of"]]), 1, 8))
            assert row.width == expected
            acc = table.loc[table.model == row.options["twin_of"], "static_test_acc"].item()
            sm = st.metrics(static_id)
            assert acc == sm[(sm.model == row.model) & (sm.split == "test") & (sm.name == "acc")
                             & (sm.epoch == 2)].value.item()
        else:
            assert row.options["best"] is True and row.width == 8
    conv = fx.convergence_table(st, ids["convergence"])
    assert sorted(set(conv.start)) == [0.0, 4.0, 8.0] and set(conv.arm) == {"l2", "none"}
    assert (conv.loc[conv.arm == "none"].index.size == 3)


def test_plateau_scaler_is_the_stored_cutoff_in_float64(study):
    st, ids, _ = study
    plat = fx.plateau_table(st, ids["frontier"])
    x0 = fx.model_table(st, ids["frontier"]).set_index("model")["x0"]
    i = plat["i"].to_numpy()
    ref = 1.0 / (1.0 + np.exp(-(x0.loc[plat.model].to_numpy() - i)))  # k = 1 (the profile's)
    np.testing.assert_allclose(plat["scaler"].to_numpy(), ref, rtol=1e-14, atol=1e-300)
    zone = np.where(ref > 0.993, "on", np.where(ref < 0.007, "off", "gray"))
    assert (plat["zone"].to_numpy() == zone).all()
    arrays = st.arrays(ids["frontier"], "out_abs")
    for m, grp in plat.groupby("model"):
        np.testing.assert_array_equal(grp["out_abs"].to_numpy(), arrays[m])


@settings(max_examples=60, deadline=None)
@given(x0=hs.floats(-1e3, 1e3), k=hs.floats(1e-3, 1e2), n=hs.integers(1, 300))
def test_cutoff_scale_array_is_the_float64_sigmoid(x0, k, n):
    i = np.arange(n, dtype=np.float64)
    z = np.clip(k * (x0 - i), -700, 700)
    ref = np.where(z >= 0, 1.0 / (1.0 + np.exp(-z)), np.exp(z) / (1.0 + np.exp(z)))
    got = cutoff_scale_array(x0, k, n)
    assert got.dtype == np.float64 and got.shape == (n,)
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-300)


def test_size_only_starts_where_minima_ended_with_frozen_weights(study):
    st, ids, _ = study
    mm = st.metrics(ids["minima"])
    end = mm[(mm.name == "x0") & (mm.epoch == 2)].sort_values("model").value.tolist()
    assert fx.stored_cutoff(st, ids["size-only"]).x0_init == end
    assert fx.start_x0(st, ids["size-only"]).tolist() == end
    assert st.get_run(ids["size-only"])["config"]["init_from"] == ids["minima"]
    before = load_bank(st, ids["minima"], strict_modifiers=False)
    after = load_bank(st, ids["size-only"], strict_modifiers=False)
    for m in range(2):
        for a, b in zip(before.export(m).parameters(), after.export(m).parameters(),
                        strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0)  # lr 0: weights frozen
    grads = fx.epoch_table(st, ids["size-only"])["size_grad"]
    assert grads.notna().all() and (grads != 0).any()


def test_pretraining_chain_gives_each_level_its_epochs(study):
    st, ids, _ = study
    chain = [r for r in st.runs().itertuples() if r.study == "flexible-static:pretrain"]
    assert len(chain) == 2  # levels 1 and 2: two one-epoch stages
    assert [r.run_id for r in chain] == [ids["pretrain-1"], ids["pretrain-2"]]
    assert fx.pretrain_chain(st, ids["pretrained"]) == [ids["pretrain-1"], ids["pretrain-2"]]
    assert st.get_run(ids["pretrain-2"])["config"]["init_from"] == ids["pretrain-1"]
    first, second = (load_bank(st, r.run_id) for r in chain)
    init = init_mlp([20, 8, 10], 0)
    # level 0 never moves; level 1 stops after the first stage; level 2 trains in both
    torch.testing.assert_close(second.export(0).layers[0].weight, init[0][0], rtol=0, atol=0)
    torch.testing.assert_close(second.export(1).layers[0].weight,
                               first.export(1).layers[0].weight, rtol=0, atol=0)
    assert not torch.equal(first.export(1).layers[0].weight, init[0][0])
    assert not torch.equal(second.export(2).layers[0].weight, first.export(2).layers[0].weight)
    assert st.get_run(ids["pretrained"])["config"]["init_from"] == chain[1].run_id
    flex = fx.stored_cutoff(st, ids["pretrained"])
    assert flex.x0_init == 0.0 and flex.penalty_init == 0.0


def test_random_activation_probe_and_minima_records(study):
    st, ids, _ = study
    e = fx.epoch_table(st, ids["minima"])
    assert (e["size_grad_random_activation"] == 0).all()
    assert (e["size_grad_scaler"] != 0).any()
    assert set(e.slope) == {"deterministic", "random"}
    assert {"batch_loss_min", "batch_loss_max", "loss_running", "size_grad_std"} <= set(e)
    assert fx.stored_cutoff(st, ids["minima"]).random_init == [False, True]


def test_report_sections_draw_figures_and_verdicts_from_the_store(study, tmp_path):
    st, ids, _ = study
    reported = [ids[k] for k in fx.RUNS]
    rendered = study_sections(fx.STUDY, st, reported, tmp_path / "figs")
    sections = [r.section for r in rendered]
    titles = [s.title for s in sections]
    assert len(sections) == 5 and titles[0].startswith("Flexible layers: convergence")
    for exp, r in zip(fx.RUNS, rendered, strict=True):
        s = r.section
        assert not s.error
        assert s.verdicts and r.figures and r.runs and s.journal
        assert s.journal == fx.JOURNAL_BY_EXPERIMENT[exp]  # beside the right section
        assert ids[exp] in s.run_ids
        for caption, path in r.figures:
            assert path.exists() and path.stat().st_size > 1000 and caption
        for v in s.verdicts:
            assert v.text.startswith("synthetic: ") and isinstance(v.holds, bool)
    frontier = rendered[1]
    assert len(frontier.figures) == 3  # two arms and the plateau
    claims = {v.claim for v in frontier.section.verdicts}
    assert any("output weights" in c for c in claims)
    # the frontier section also lists the static helper run, pretrained its pretraining chain
    assert any(r["study"] == "flexible-static:frontier" for r in frontier.runs)
    assert [ids["pretrain-1"], ids["pretrain-2"]] == rendered[3].section.run_ids[:2]
    # the tables are the study's pure functions of the stored runs
    tables = fx.STUDY.tables(st, newest(st, reported))
    pd.testing.assert_frame_equal(tables["synthetic"]["frontier"],
                                  fx.frontier_table(st, ids["frontier"]))


# ------------------------------------------------------------------------------ verdicts
def test_convergence_verdict_criteria():
    starts = [0.0, 50.0, 100.0, 150.0]
    same = pd.DataFrame({"arm": "none", "start": starts, "final_width": [70, 72, 71, 69.5],
                         "test_acc": [0.95, 0.951, 0.949, 0.95]})
    v = fx.convergence_verdicts(same)
    assert v[0].holds and v[0].numbers["span"] == pytest.approx(2.5)
    follows = same.assign(final_width=[60, 100, 140, 180], test_acc=[0.90, 0.91, 0.92, 0.93])
    v = fx.convergence_verdicts(follows)
    assert not v[0].holds and v[0].numbers["ratio"] == pytest.approx(0.8)
    assert v[0].numbers["rho"] == pytest.approx(1.0)


def test_frontier_and_plateau_verdict_criteria():
    summary = pd.DataFrame({
        "arm": ["l2"] * 3 + ["none"] * 3, "penalty": [1e-3, 1e-5, 1e-7] * 2,
        "final_width": [30, 55, 56, 40, 100, 104], "test_acc": [0.91, 0.93, 0.93, 0.92, 0.95,
                                                                0.951],
        "static_test_acc": [0.912, 0.935, 0.93, 0.918, 0.94, 0.94]})
    best = pd.DataFrame({"arm": ["l2", "none"], "train_acc": [0.99, 0.99],
                         "test_acc": [0.95, 0.95]})
    v = {(x.claim, x.numbers.get("arm")): x for x in fx.frontier_verdicts(summary, best)}
    ratio = [x for (c, _), x in v.items() if c.startswith("removing L2")][0]
    assert ratio.holds and ratio.numbers["ratio"] == pytest.approx(104 / 56)
    reach = {a: x for (c, a), x in v.items() if c.startswith("the flexible network reaches")}
    assert not reach["l2"].holds and reach["none"].holds
    plateau = {a: x for (c, a), x in v.items() if c.startswith("the width reaches a plateau")}
    assert not plateau["l2"].holds  # 30 -> 56: 46% spread among the three smallest penalties
    n = 100
    init = 10 / (2 * np.sqrt(n))
    table = pd.DataFrame({"arm": ["l2", "l2", "none", "none"], "zone": ["on", "off"] * 2,
                          "out_abs": [2 * init, 0.01 * init, 2 * init, 0.9 * init]})
    pv = fx.plateau_verdict(table, n)
    assert pv.holds and pv.numbers["off_l2"] == pytest.approx(0.01)
    assert not fx.plateau_verdict(table.assign(out_abs=init), n).holds


def test_minima_pretrained_and_size_only_verdict_criteria():
    rows = []
    for slope, widths in (("deterministic", [40, 60, 70, 76]), ("random", [38, 55, 64, 70])):
        for epoch, w in enumerate(widths, start=1):
            rows.append({"model": 0 if slope == "deterministic" else 1, "epoch": epoch,
                         "slope": slope, "width_now": w, "size_grad_std": 1e-3,
                         "loss_running": 0.3 / epoch, "size_grad_random_activation": 0.0,
                         "size_grad_scaler": -1e-3})
    v = fx.minima_verdicts(pd.DataFrame(rows))
    assert [x.holds for x in v] == [True, True, True]
    assert v[1].numbers["growth"] == pytest.approx(76 - 60)
    pre = pd.DataFrame({"epoch": [3] * 3, "pretrain": [0, 5, 10], "width_now": [90, 70, 60],
                        "loss_running": [0.1, 0.1, 0.1]})
    assert fx.pretrained_verdict(pre).holds
    assert not fx.pretrained_verdict(pre.assign(width_now=[60, 70, 65])).holds
    size = pd.DataFrame({"model": [0, 0, 1, 1], "epoch": [1, 2, 1, 2],
                         "size_grad": [1e-4, 2e-4, 3e-4, -1e-4], "x0": [49, 48, 70, 69]})
    sv = fx.size_only_verdict(size, pd.Series([50.0, 71.0]))
    assert sv.holds and sv.numbers["median_delta"] == pytest.approx(-2.0)
    assert sv.numbers["positive_share"] == pytest.approx(0.75)


def test_profiles_follow_the_journal_and_errors_name_the_fix():
    full = fx.STUDY.profile("full")
    assert full.n == 500 and len(range(0, full.n + 1, full.starts_step)) == 21
    assert len(full.penalties) == 11
    assert full.penalties[0] == pytest.approx(10 ** -2.5)
    assert full.penalties[-1] == pytest.approx(10 ** -7.5)
    assert (full.replicates, full.minima_models, full.minima_epochs) == (7, 30, 30)
    assert full.pretrain_levels == (0, 5, 10) and full.x0_lr == 1.0 and full.k == 1.0
    assert fx.STUDY.profile("quick", n=50).n == 50
    with pytest.raises(UsageError, match="unknown setting"):
        fx.STUDY.profile("quick", width=3)
    with pytest.raises(UsageError, match="unknown profile"):
        fx.STUDY.profile("huge")
    with pytest.raises(UsageError, match="penalties"):
        fx.STUDY.profile("quick", penalties=[-1.0])
    with pytest.raises(UsageError, match="experiment"):
        fx.run("mnist", only=["nope"])


def test_steps_and_what_a_selection_also_runs():
    quick, full = fx.STUDY.profile("quick"), fx.STUDY.profile("full")
    names = [s.name for s in fx.STUDY.experiments(full, "mnist")]
    assert names == ["convergence", "frontier", "frontier-static", "minima", "pretrain-5",
                     "pretrain-10", "pretrained", "size-only"]
    derived = {s.name for s in fx.steps(full) if isinstance(s, Derived)}
    assert derived == {"frontier-static", "pretrain-5", "pretrain-10", "pretrained", "size-only"}
    assert fx.selected(quick, ["convergence"]) == ["convergence"]
    assert fx.selected(quick, ["frontier"]) == ["frontier", "frontier-static"]
    assert fx.selected(quick, ["size-only"]) == ["minima", "size-only"]
    assert fx.selected(full, ["pretrained"]) == ["pretrain-5", "pretrain-10", "pretrained"]
    assert fx.selected(full, ["pretrain-10", "convergence"]) == ["convergence", "pretrain-5",
                                                                 "pretrain-10"]
    no_chain = fx.STUDY.profile("quick", pretrain_levels=[0])
    assert fx.selected(no_chain, ["pretrained"]) == ["pretrained"]
    with pytest.raises(UsageError, match="plateau"):
        fx.selected(quick, ["plateau"])
    # the job key hashes the code computing stored numbers, never the report's drawing
    code = identity.closure([r for s in fx.steps(quick) for r in step_code(s)],
                            skip=identity.PRESENTATION)
    assert {"widthlab.studies.flexible.config", "widthlab.studies.flexible.hooks",
            "widthlab.nn.flexible", "widthlab.engine.trainer"} <= set(code)
    assert not [m for m in code if m.rsplit(".", 1)[-1] in ("figures", "verdicts", "sections")]


def test_cli_runs_an_experiment_and_prints_verdicts(tmp_path, monkeypatch, capsys):
    tiny = fx.STUDY.profile("quick", **TINY)
    monkeypatch.setitem(fx.PROFILES, "quick", tiny)
    monkeypatch.setattr(trainer, "load_splits", lambda name, **kw: synthetic(n_train=320,
                                                                             n_test=200))
    store = str(tmp_path / "runs")
    args = ["study", "flexible", "--experiment", "convergence", "--dataset", "mnist",
            "--device", "cpu", "--store", store]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("flexible.convergence-synthetic-")
    assert any("holds" in line and "convergence" in line for line in out)
    assert main(["study", "flexible", "--experiment", "nope", "--store", store]) == 2
