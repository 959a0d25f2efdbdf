"""The lenet study on 784-input synthetic data named like the real datasets: the stored runs are
the training records (a fresh run reproduces them), a second run trains nothing, rows and
weights recompute by hand, the verdicts follow their criteria, the report draws the section."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from widthlab.data.tensors import DatasetSplits, Split
from widthlab.engine.module_run import ModuleRun
from widthlab.nn.lenet import LENET5, LENET300
from widthlab.report.builder import study_sections
from widthlab.store import Store
from widthlab.studies import lenet
from widthlab.studies.base import newest

# 12 steps per epoch: the gates learn fast enough to die in them
SMALL = dict(prices300=(1e-4, 1e-3), prices5=(1e-4, 1e-3), epochs300=2, epochs5=2,
             train_size=None, calib_size=200, gate_lr=0.1, batch_size=50,
             gate_kinds=("l1",))  # tests/studies/test_lenet_hard_concrete.py: both kinds
STEPS = {"gated-lenet300-0.0001", "gated-lenet300-0.001", "cut-lenet300",
         "gated-lenet5-0.0001", "gated-lenet5-0.001", "cut-lenet5", "manifest"}


def data(name: str, seed: int) -> DatasetSplits:
    """A learnable 10-class task of 28x28 images: noise, and a bright row whose position is
    the class."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.randn(n, 28, 28, generator=g)
        x[torch.arange(n), 2 * y + 4, :] += 2.0
        return Split(x.reshape(n, 784), y)

    return DatasetSplits(name, split(600), split(8), split(200), 0.0, 1.0, seed)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    torch.set_num_threads(1)
    store = Store(tmp_path_factory.mktemp("lenet"))
    runs = {d: lenet.run(d, "quick", store=store, data=data(d, s), device="cpu", **SMALL)
            for d, s in (("mnist", 0), ("fashion-mnist", 1))}
    return store, runs


def test_stored_runs_are_the_training_records(study):
    store, runs = study
    assert set(runs["mnist"].runs) == STEPS
    run_id = runs["mnist"]["gated-lenet300-0.001"]
    assert store.get_run(run_id)["study"] == "lenet:gated-lenet300-0.001"
    prof = lenet.STUDY.profile("quick", **SMALL)
    fresh = lenet.gated_run(LENET300, 1e-3, data("mnist", 0), prof)  # trained again here
    met = store.metrics(run_id)
    for rec in fresh:
        got = met[met.epoch == rec["epoch"]].set_index("name")["value"]
        assert got["error"] == rec["test_error"] and got["n_params"] == rec["n_params"]
        assert tuple(int(got[f"width/{n}"]) for n in ("fc1", "fc2", "fc3")) == rec["row_widths"]
    assert fresh[-1]["row_widths"] != (784, 300, 100)  # the price removed units
    # the cut run: the dense epochs, then the cut network after its fine-tuning epoch
    cut = store.metrics(runs["mnist"]["cut-lenet300"], wide=True)
    train = cut[cut.split == "train"].set_index("epoch")
    assert list(train.index) == [1, 2, 3]
    assert train.loc[2, "width/fc2"] == 300 and train.loc[3, "width/fc2"] < 300
    decide = cut[cut.split == "decide"].iloc[0]
    assert decide["k/fc1"] == train.loc[3, "width/fc2"]
    assert decide["k/fc2"] == train.loc[3, "width/fc3"]
    assert decide["acc_after/fc2"] >= decide["acc_before/fc1"] - prof.tol - 1e-12


def test_a_second_run_trains_nothing(study, monkeypatch):
    store, runs = study

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run must not train again")

    monkeypatch.setattr(ModuleRun, "train_epoch", no_training)
    before = len(store.runs())
    again = lenet.run("mnist", "quick", store=store, data=data("mnist", 0), device="cpu",
                      **SMALL)
    assert again.runs == runs["mnist"].runs and len(store.runs()) == before
    # one more price trains that price only (the others' ids do not change)
    with pytest.raises(AssertionError, match="must not train"):
        lenet.run("mnist", "quick", store=store, data=data("mnist", 0), device="cpu",
                  **{**SMALL, "prices300": (1e-4, 1e-3, 3e-3)})
    assert len(store.runs()) == before + 1  # the new price's run, interrupted


def test_rows_weights_and_verdicts_recompute(study):
    store, runs = study
    ids = [r for rs in runs.values() for r in rs.ids()]
    tables = lenet.STUDY.tables(store, newest(store, ids))
    t = tables["mnist"]
    table = t["table"]
    pub = table[table.source == "published"]
    assert len(pub) == 6 and pub.set_index("method").loc["L0", "weights"] == 38410
    assert (tables["fashion-mnist"]["table"].source == "widthlab").all()
    mine = table[table.source == "widthlab"]
    assert len(mine) == 8  # 2 x 2 gated rows, 2 x (no gates, cut)
    for r in mine.itertuples():
        w = [int(v) for v in r.widths.split("-")]
        want = (w[0] * w[1] + w[1] * w[2] + w[2] * 10 if r.network == LENET300 else
                25 * w[0] + 25 * w[0] * w[1] + w[2] * w[3] + 10 * w[3])
        assert r.weights == want and r.total_width == sum(w)
    last = store.metrics(runs["mnist"]["gated-lenet5-0.0001"], wide=True)
    test = last[last.split == "test"].set_index("epoch")
    row = mine[mine.method == "widthlab gates, price 0.0001"].set_index("network").loc[LENET5]
    assert row.error == pytest.approx(100 * test.loc[2, "error"])  # the final epoch, not best
    v = lenet.STUDY.verdicts(tables)
    assert [len(v["mnist"]), len(v["fashion-mnist"])] == [5, 2]
    rows = t["rows"]
    g5 = rows[(rows.network == LENET5) & rows.method.str.startswith("widthlab gates")]
    assert v["mnist"][1].holds == bool(((g5.error <= 1.0) & (g5.weights < 38410)).any())
    gated = rows[rows.method.str.startswith("widthlab gates")]
    assert v["mnist"][2].holds == bool((gated.time_ratio < 1).all())
    assert v["mnist"][2].numbers["ratios"] == pytest.approx(
        list(gated.last_epoch_s / gated.first_epoch_s))


def _rows(**cols) -> pd.DataFrame:
    base = dict(network=LENET5, method="widthlab gates, price 0.001", price=1e-3,
                widths="10-20-100-50", total_width=180, weights=20000, error=0.8, epochs=10,
                first_epoch_s=2.0, last_epoch_s=1.0, time_ratio=0.5, params_first=1,
                params_last=1)
    return pd.DataFrame([{**base, **c} for c in cols.get("rows", [{}])])


def test_verdict_criteria_on_chosen_rows():
    assert lenet.lenet5_target(_rows()).holds
    assert not lenet.lenet5_target(_rows(rows=[{"error": 1.01}])).holds
    assert not lenet.lenet5_target(_rows(rows=[{"weights": 38410}])).holds
    assert not lenet.lenet300_target(_rows()).holds  # no LeNet-300-100 row at all
    ok300 = dict(network=LENET300, widths="100-60-40", total_width=200, error=1.6)
    assert lenet.lenet300_target(_rows(rows=[ok300])).holds
    assert not lenet.lenet300_target(_rows(rows=[{**ok300, "total_width": 201}])).holds
    assert not lenet.shrinking_is_cheaper(_rows(rows=[{}, {"time_ratio": 1.0}])).holds
    cut = dict(method="width_frontier cut + 1 epoch fine-tune", price=float("nan"),
               weights=30000, error=0.9, error_before_finetune=1.5)
    assert lenet.gates_beat_the_cut(_rows(rows=[{}, cut])).holds
    assert not lenet.gates_beat_the_cut(_rows(rows=[{"error": 0.95}, cut])).holds


def test_published_rows_reached_on_chosen_rows():
    """A final-epoch row reaches a published row at most at its error with at most its
    features (LeNet-300-100) or weights (LeNet-5-Caffe)."""
    r300 = dict(network=LENET300, widths="96-70-33", total_width=199, weights=9330, error=1.6)
    v = lenet.published_reached(_rows(rows=[{}, r300]))
    assert v.numbers["reached"] == ["LeNet-300-100 L0 (Louizos 2018)", "LeNet-300-100 SBP",
                                    "LeNet-300-100 VIB", "LeNet-5-Caffe L0"]
    assert not v.holds and "Reached 4 of 6" in v.text and "best epoch" in v.text
    assert "BC-GHS 5-10-76-16 at 1.0%: not reached" in v.text  # 20000 weights > its 2751
    v = lenet.published_reached(_rows(rows=[{}, {**r300, "total_width": 202}]))
    assert "VIB" not in " ".join(v.numbers["reached"])  # 202 features > VIB's 201
    assert "LeNet-300-100 RigL (end of training)" not in v.numbers["reached"]  # 1.6 > 1.48
    v = lenet.published_reached(_rows(rows=[{"weights": 38411}]))
    assert v.numbers["reached"] == [] and "Reached 0 of 2" in v.text  # LeNet-5 rows only


def test_report_section(study, tmp_path):
    store, runs = study
    ids = [r for rs in runs.values() for r in rs.ids()]
    rendered = study_sections(lenet.STUDY, store, ids, tmp_path)
    titles = [r.section.title for r in rendered]
    assert titles == ["Learned widths of LeNet-300-100 and LeNet-5-Caffe: MNIST",
                      "Learned widths of LeNet-300-100 and LeNet-5-Caffe: FashionMNIST"]
    assert all(not r.section.error and len(r.figures) == 2 for r in rendered)
    budget = rendered[0].section.budget
    assert "LeNet-300-100: 2 epochs at each of 2 prices (0.0001, 0.001" in budget
    assert "600 training samples, 200 test images, seed 0" in budget
    assert len(rendered[0].runs) == len(STEPS)


def test_lenet5_on_data_that_is_not_images_is_a_failed_model(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 10, generator=g), torch.randint(0, 3, (40,), generator=g)
    flat = DatasetSplits("flat", Split(x, y), Split(x[:0], y[:0]), Split(x, y), 0.0, 1.0, 0)
    runs = lenet.run("flat", "quick", store=tmp_path, data=flat, device="cpu",
                     **{**SMALL, "networks": (LENET5,), "prices5": (1e-3,)})
    st = Store(tmp_path)
    for step in ("gated-lenet5-0.001", "cut-lenet5"):
        m = st.models(runs[step])
        assert m.status.tolist() == ["failed"] and m.failed_epoch.tolist() == [0]
        assert "784 inputs" in m.failure.iloc[0] and st.metrics(runs[step]).empty
    t = lenet.STUDY.tables(st, newest(st, runs.ids()))["flat"]
    assert any("784 inputs" in n for n in t["notes"])
