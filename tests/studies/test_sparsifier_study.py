"""The sparsifier study end to end on a synthetic problem (tables recomputed from the stored
metrics and checked against the trained banks), its verdicts against scipy/numpy on hand-made
tables, and the report sections."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.engine.child_run import synthetic
from widthlab.cli import main
from widthlab.engine import load_bank
from widthlab.errors import UsageError
from widthlab.report.builder import study_sections
from widthlab.store import Store
from widthlab.studies import sparsifier as sp
from widthlab.studies.base import Derived, newest

SMALL = dict(prices=[0.0, 3e-3, 1e-2], starts=[16, 32, 64], start_prices=[1e-2], seeds=2,
             epochs=4, batch_size=32, train_size=None)
N_TRAIN = 1280  # 40 steps per epoch: the quick profile's gates (lr 1e-2) die from epoch 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Both experiments and the static references, for two 'datasets' (synthetic data under
    the real names, so the comparison section is drawn)."""
    store = tmp_path_factory.mktemp("sparsifier")
    ids = {}
    for name, seed in (("mnist", 0), ("fashion-mnist", 1)):
        data = replace(synthetic(n_train=N_TRAIN, seed=seed), name=name)
        ids[name] = sp.run(name, "quick", store=store, data=data, device="cpu", **SMALL)
    return store, ids


def test_tables_recompute_from_the_store_and_the_banks(study):
    store, ids = study
    st = Store(store)
    run_id = ids["mnist"]["lambda-sweep"]
    assert run_id.startswith("sparsifier.lambda-sweep-mnist-")
    assert st.get_run(run_id)["study"] == "sparsifier:lambda-sweep"
    table = sp.summarize(st, run_id)
    assert table["price"].tolist() == [0.0, 0.0, 3e-3, 3e-3, 1e-2, 1e-2]
    assert (table["start"] == 500).all() and table["seed"].tolist() == [0, 1] * 3
    # the final widths are the physical widths of the trained bank and its live gates
    prof = sp.STUDY.profile("quick", **{k: SMALL[k] for k in ("prices", "seeds")})
    bank = load_bank(st, run_id, modifiers=sp.experiment("lambda-sweep", prof).modifiers)
    gate = bank.modifiers[0].gate.detach()
    for m, (a, b) in enumerate(bank.slices):
        assert table.loc[m, "width"] == b - a == int((gate[a:b] > 0).sum())
    assert (table["width"][table.price == 0] == 500).all()
    assert (table["width"][table.price == 1e-2] < table["width"][table.price == 3e-3].max()).all()
    met = st.metrics(run_id)
    last = met[(met.epoch == 4) & (met.name == "acc")]
    for split in ("train", "test"):
        want = last[last.split == split].sort_values("model")["value"].to_numpy()
        np.testing.assert_array_equal(table[f"{split}_acc"].to_numpy(), want)
    # static references: one model per (final width, seed) of both experiments
    assert set(ids["mnist"].runs) == {*sp.EXPERIMENTS, "static"}
    (static_id,) = sp.static_runs(st, run_id)
    assert ids["mnist"]["static"] == static_id
    assert st.get_run(static_id)["study"] == "sparsifier-static"
    assert sp.static_runs(st, ids["mnist"]["start-width"]) == [static_id]
    models = st.models(static_id)
    widths = pd.concat([sp.final_widths(st, ids["mnist"][e]) for e in sp.EXPERIMENTS])
    widths = widths[widths.width > 0]
    assert sorted(zip(models.width, models.seed, strict=True)) == sorted(
        {(int(w), int(s)) for w, s in zip(widths.width, widths.seed, strict=True)})
    sm = st.metrics(static_id)
    sm = sm[(sm.epoch == 4) & (sm.name == "acc") & (sm.split == "test")].set_index("model")
    for row in table[table.width > 0].itertuples():
        m = models[(models.width == row.width) & (models.seed == row.seed)]["model"].item()
        assert row.static_test_acc == sm.loc[m, "value"]
    assert st.get_run(static_id)["config"]["epochs"] == 4  # trained the same way


def test_curves_and_per_lambda_means(study):
    store, ids = study
    run_id = ids["fashion-mnist"]["start-width"]
    curve = sp.curves(store, run_id)
    assert sorted(curve.epoch.unique()) == [1, 2, 3, 4] and len(curve) == 6 * 4
    table = sp.summarize(store, run_id)
    last = curve[curve.epoch == 4].sort_values("model")
    np.testing.assert_array_equal(last.alive_width.to_numpy(), table.width.to_numpy())
    for _, grp in curve.groupby("model"):
        assert (np.diff(grp.sort_values("epoch").alive_width) <= 0).all()
    means = sp.per_price(table)
    assert means["start"].tolist() == [16, 32, 64] and (means["seeds"] == 2).all()
    for row in means.itertuples():
        sel = table[(table.start == row.start) & (table.price == row.price)]
        assert row.width == pytest.approx(sel.width.mean())
        assert row.test_acc == pytest.approx(sel.test_acc.mean())


def test_rerunning_reuses_every_finished_run(study):
    store, ids = study
    before = Store(store).runs()
    data = replace(synthetic(n_train=N_TRAIN, seed=0), name="mnist")
    again = sp.run("mnist", "quick", store=store, data=data, device="cpu", **SMALL)
    assert again == ids["mnist"]
    pd.testing.assert_frame_equal(Store(store).runs(), before)


def test_report_sections_have_figures_and_the_three_verdicts(study, tmp_path):
    store, ids = study
    run_ids = [r for d in ids.values() for e, r in d.runs.items() if e != "static"]
    rendered = study_sections(sp.STUDY, Store(store), run_ids, tmp_path)
    sections = [r.section for r in rendered]
    assert [s.title for s in sections] == [
        "Sparsifier networks: MNIST", "Sparsifier networks: FashionMNIST",
        "Sparsifier networks: MNIST versus FashionMNIST"]
    claims = [v.claim for s in sections for v in s.verdicts]
    assert sum("static network of its width" in c for c in claims) == 2
    assert sum("starting width" in c for c in claims) == 2
    assert claims[-1] == "FashionMNIST keeps more neurons than MNIST at each lambda"
    for r in rendered:
        for _, path in r.figures:
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(rendered[0].figures) == 3 and len(rendered[0].runs) == 3
    assert "4 epochs" in sections[0].budget and "2 seeds" in sections[0].budget
    # the tables are the study's pure functions of the stored runs
    tables = sp.STUDY.tables(Store(store), newest(Store(store), run_ids))
    pd.testing.assert_frame_equal(tables["mnist"]["sweep"],
                                  sp.summarize(store, ids["mnist"]["lambda-sweep"]))


# ----------------------------------------------------------------------------- verdicts
def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["price", "start", "seed", "width", "test_acc",
                                       "static_test_acc"]).assign(status="ok")


def test_fashion_verdict_compares_mean_widths_per_lambda():
    mnist = frame([(0, 500, 0, 500, .9, np.nan), (1e-3, 500, 0, 40, .9, .9),
                   (1e-3, 500, 1, 60, .9, .9), (1e-2, 500, 0, 10, .8, .8)])
    fashion = frame([(0, 500, 0, 500, .8, np.nan), (1e-3, 500, 0, 55, .8, .8),
                     (1e-3, 500, 1, 56, .8, .8), (1e-2, 500, 0, 12, .7, .7)])
    v = sp.fashion_keeps_more(mnist, fashion)
    assert v.holds and v.numbers == {"price": [1e-3, 1e-2], "fashion": [55.5, 12.0],
                                     "mnist": [50.0, 10.0]}
    fashion.loc[3, "width"] = 9
    v = sp.fashion_keeps_more(mnist, fashion)
    assert not v.holds and "1 of 2 prices" in v.text


def test_start_width_verdict_uses_anova_with_replicates_else_the_spread():
    rows = [(1e-3, s, k, w, .9, .9) for s, ws in ((250, (40, 44)), (500, (60, 58)),
                                               (1000, (80, 85))) for k, w in enumerate(ws)]
    v = sp.start_width_matters(frame(rows))
    p = stats.f_oneway([40, 44], [60, 58], [80, 85]).pvalue
    assert v.holds and v.numbers[1e-3]["p"] == pytest.approx(p, rel=1e-12)
    flat = [(1e-3, s, k, w, .9, .9) for s, ws in ((250, (50, 54)), (500, (52, 51)),
                                               (1000, (53, 50))) for k, w in enumerate(ws)]
    v = sp.start_width_matters(frame(flat))
    assert not v.holds and v.numbers[1e-3]["p"] > 0.05
    one = frame([(1e-3, 250, 0, 50, .9, .9), (1e-3, 2000, 0, 55, .9, .9)])
    v = sp.start_width_matters(one)  # spread 5/52.5 < 20%
    assert not v.holds and v.numbers[1e-3]["spread"] == pytest.approx(5 / 52.5)
    assert sp.start_width_matters(frame([(1e-3, 250, 0, 20, .9, .9),
                                         (1e-3, 2000, 0, 90, .9, .9)])).holds


def test_static_verdict_pairs_models_and_reports_the_t_interval():
    table = frame([(0, 500, 0, 500, .95, np.nan), (1e-3, 500, 0, 100, .91, .90),
                   (1e-3, 500, 1, 90, .90, .905), (1e-2, 500, 0, 20, .85, .84)])
    v = sp.sparsifier_vs_static(table)
    d = np.array([.01, -.005, .01])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert v.holds and v.numbers["n"] == 3 and v.numbers["wins"] == 2
    assert v.numbers["mean"] == pytest.approx(d.mean()) and v.numbers["half_ci"] == \
        pytest.approx(half)
    table["static_test_acc"] += 0.02
    assert not sp.sparsifier_vs_static(table).holds
    assert not sp.sparsifier_vs_static(table.assign(static_test_acc=np.nan)).holds


def test_profiles_and_errors(tmp_path):
    full = sp.STUDY.profile("full")
    sweep, start, static = sp.STUDY.experiments(full, "mnist")
    specs, cfg, make = start.specs, start.config, start.modifiers[0]
    assert cfg.epochs == 60 and cfg.train_size is None and cfg.shrink_every == "epoch"
    assert sorted({s.width for s in specs}) == [250, 500, 1000, 2000] and len(specs) == 24
    assert make().penalty_kind == "strict" and make().lr is None
    assert isinstance(static, Derived) and static.name == "static"
    assert {s.width for s in sweep.specs} == {500} and 0.0 in {dict(s.options)["price"]
                                                              for s in sweep.specs}
    quick = sp.STUDY.experiments(sp.STUDY.profile("quick"), "mnist")[0]
    assert quick.config.train_size == 10_000 and quick.name == "lambda-sweep"
    assert sp.STUDY.label(quick.name) == "sparsifier:lambda-sweep"
    with pytest.raises(UsageError, match="profile"):
        sp.STUDY.profile("huge")
    with pytest.raises(UsageError, match="unknown setting"):
        sp.STUDY.profile("quick", lambda_=[1.0])
    with pytest.raises(UsageError, match="experiment"):
        sp.experiment("width-sweep", sp.STUDY.profile("quick"))
    with pytest.raises(UsageError, match=">= 0"):
        sp.STUDY.profile("quick", prices=[-1.0])
    with pytest.raises(UsageError, match="no run"):
        sp.summarize(tmp_path, "nope")
    assert main(["study", "sparsifier", "--profile", "nope", "--store", str(tmp_path)]) == 2
    assert main(["study", "sparsifier", "--prices", "a,b", "--store", str(tmp_path),
                 "--dataset", "mnist"]) == 2


@pytest.mark.realdata
def test_cli_study_sparsifier_on_mnist(real_cache, tmp_path, capsys):
    store = str(tmp_path / "runs")
    args = ["study", "sparsifier", "--dataset", "mnist", "--prices", "0,1e-2",
            "--starts", "64,128", "--start-prices", "1e-2", "--epochs", "2", "--device", "cpu",
            "--store", store, "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out.split()
    assert len(out) == 3 and out[0].startswith("sparsifier.lambda-sweep-mnist-")
    table = sp.summarize(store, out[0])
    # two quick epochs of MNIST: far above chance; lambda 0 keeps all 500 neurons
    assert (table.test_acc > 0.8).all()
    assert table.width.tolist()[0] == 500 and table.width.tolist()[1] <= 500


def test_fashion_verdicts_name_the_gate_kind_and_refuse_mixed_kinds():
    from widthlab.studies.growth import verdicts as gv

    mnist = frame([(1e-3, 500, 0, 40, .9, .9), (1e-2, 500, 0, 10, .8, .8)])
    fashion = frame([(1e-3, 500, 0, 55, .8, .8), (1e-2, 500, 0, 9, .7, .7)])
    hc = ("hard_concrete", "hard_concrete")
    v = sp.fashion_keeps_more(mnist, fashion, kinds=hc)
    assert not v.holds and "hard-concrete" in v.claim and v.text.startswith("With hard-conc")
    assert "1 of 2 prices" in v.text and v.numbers["fashion"] == [55.0, 9.0]
    assert sp.fashion_keeps_more(mnist, fashion).claim == (
        "FashionMNIST keeps more neurons than MNIST at each lambda")  # L1 wording unchanged
    v = sp.fashion_keeps_more(mnist, fashion, kinds=("l1", "hard_concrete"))
    assert not v.holds and "not comparable" in v.text
    spreads = pd.DataFrame({"init": ["gradmax"] * 2, "price": [1e-3, 1e-2],
                            "mean_width": [40.0, 10.0]})
    wide = spreads.assign(mean_width=[41.0, 12.5])
    v = gv.fashion_ends_wider(spreads, wide, kinds=hc)
    assert v.holds and "hard-concrete" in v.claim and "wider at 2 of 2" in v.text
    assert not gv.fashion_ends_wider(spreads, wide, kinds=("hard_concrete", "l1")).holds
