"""The frontier study on a stored width sweep: the stored frontiers equal a fresh computation
on the trained banks, the verdicts use the sweep's own plateau, the report draws them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.engine.child_run import synthetic
from widthlab.engine import load_bank
from widthlab.frontier import frontier_of_bank
from widthlab.metrics.variance import accuracy_plateau
from widthlab.report.builder import study_sections
from widthlab.store import Store
from widthlab.studies import frontier, variance
from widthlab.studies.base import newest


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    store = Store(tmp_path_factory.mktemp("frontier"))
    out = {}
    for name, seed in (("mnist", 0), ("fashion-mnist", 1)):
        data = replace(synthetic(n_train=1280, seed=seed), name=name)
        sweep = variance.run(name, "quick", store=store, data=data, device="cpu",
                             widths=(4, 8, 16, 32, 64), seeds=(0, 1), epochs=3, batch_size=64,
                             train_size=None)
        out[name] = (sweep, frontier.run(name, "quick", store=store, data=data, device="cpu",
                                         upstream={"variance": sweep}), data)
    return store, out


def test_stored_frontiers_equal_a_fresh_cut_of_the_trained_bank(runs):
    store, out = runs
    sweep, fr, data = out["mnist"]
    table = frontier.model_table(store, fr["frontiers"])
    assert sorted(table.width) == [4, 8, 16, 32, 64] and (table.seed == 0).all()
    bank = load_bank(store, sweep["sweep"])
    models = store.models(sweep["sweep"])
    for row in table.itertuples():
        m = int(models[(models.width == row.width) & (models.seed == 0)].model.item())
        fresh = frontier_of_bank(bank, m, (data.val.x, data.val.y), (data.test.x, data.test.y))
        assert row.recommended_obs == fresh.recommend(0.005)
        np.testing.assert_allclose(row.full_acc, fresh.table.acc.iloc[-1], rtol=0, atol=1e-12)


def test_verdicts_use_the_sweeps_own_plateau(runs):
    store, out = runs
    ids = [out[d][1]["frontiers"] for d in out]
    tables = frontier.STUDY.tables(store, newest(store, ids))
    t = tables["mnist"]
    met = store.metrics(out["mnist"][0]["sweep"])
    acc = met[(met.name == "acc") & (met.split == "test") & (met.epoch == 3)]
    width = store.models(out["mnist"][0]["sweep"]).set_index("model").width
    per = acc.assign(w=acc.model.map(width)).groupby("w").value.mean()
    assert t["plateau"] == accuracy_plateau(per.index.to_numpy(), per.to_numpy(), 0.005)
    verdicts = frontier.STUDY.verdicts(tables)
    assert set(verdicts) == {"mnist", "fashion-mnist", "mnist-vs-fashion"}
    v = verdicts["mnist"][0]
    over = t["models"][t["models"].width > t["plateau"]]
    if len(over):
        ratio = over.groupby("width").recommended_obs.median().median() / t["plateau"]
        assert v.numbers["ratio"] == pytest.approx(ratio)
        assert v.holds == (0.5 <= ratio <= 2)
    else:
        assert not v.holds and "no trained width above" in v.text


def test_report_sections(runs, tmp_path):
    store, out = runs
    ids = [out[d][1]["frontiers"] for d in out]
    rendered = study_sections(frontier.STUDY, store, ids, tmp_path)
    titles = [r.section.title for r in rendered]
    assert titles[0].startswith("How many neurons does this trained layer need? MNIST")
    assert titles[-1] == "How many neurons: MNIST versus FashionMNIST"
    assert all(not r.section.error for r in rendered)
    assert len(rendered[0].figures) == 2
    assert "3 epochs, 10 models (2 seeds)" in rendered[0].section.budget
