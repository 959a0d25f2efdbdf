"""The growth study on a synthetic problem: final widths are the trained banks' widths, the
static references pair by width and seed, spreads and verdicts recompute from the table, the
CSV has one row per model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from tests.engine.child_run import synthetic
from widthlab.cli import main
from widthlab.engine import load_bank
from widthlab.store import Store
from widthlab.studies import growth
from widthlab.studies.base import newest

SMALL = dict(starts=(4, 32), lambdas=(1e-3, 3e-2), inits=("gradmax", "none"), seeds=1,
             epochs=2, train_size=None, every=5, grace=5, max_new=16)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    torch.set_num_threads(1)
    store = Store(tmp_path_factory.mktemp("growth"))
    data = replace(synthetic(n_train=640, seed=2), name="mnist")
    return store, growth.run("mnist", "quick", store=store, data=data, device="cpu", **SMALL)


def test_final_widths_are_the_trained_widths(study):
    store, runs = study
    assert set(runs.runs) == {"grow", "static"}
    t = growth.final_table(store, runs["grow"])
    assert len(t) == 8 and set(t.init) == {"gradmax", "none"}
    prof = growth.STUDY.profile("quick", **SMALL)
    bank = load_bank(store, runs["grow"], modifiers=growth.experiment(prof).modifiers)
    widths = [b - a for a, b in bank.slices]
    np.testing.assert_array_equal(t.final_width.to_numpy(int), widths)
    none = t[t.init == "none"]  # the plain sparsifier never grows
    assert (none.final_width <= none.start_width).all()


def test_static_pairs_spreads_and_verdicts(study):
    store, runs = study
    tables = growth.STUDY.tables(store, newest(store, [runs["grow"]]))
    m = tables["mnist"]["models"]
    sm = store.models(runs["static"])
    assert sorted(zip(sm.width, sm.seed, strict=True)) == sorted(
        {(int(w), int(s)) for w, s in zip(m.final_width, m.seed, strict=True) if w > 0})
    sp = tables["mnist"]["spreads"]
    for row in sp.itertuples():
        g = m[(m.init == row.init) & (m.lam == row.lam)].groupby("start_width").final_width
        per = g.mean()
        want = max(per.max() - per.mean(), per.mean() - per.min()) / per.mean()
        assert row.spread == pytest.approx(want)
    v = growth.STUDY.verdicts(tables)["mnist"]
    g = sp[sp.init == "gradmax"]
    assert v[0].holds == bool((g.spread <= 0.2).all())
    diff = (m[m.init == "gradmax"].test_acc - m[m.init == "gradmax"].static_acc).mean()
    assert v[1].numbers["mean"] == pytest.approx(diff) and v[1].holds == (diff >= -0.003)


def test_cli_csv_has_one_row_per_model(tmp_path, study, capsys):
    store, runs = study
    # the same runs through the CLI: found done, nothing trained; the CSV per dataset
    data = tmp_path / "syn.npz"
    d = synthetic(n_train=640, seed=2)
    np.savez(data, x=d.train.x.numpy(), y=d.train.y.numpy())
    args = ["study", "growth", "--data", str(data), "--starts", "4,32", "--lambdas", "1e-3",
            "--inits", "gradmax", "--seeds", "1", "--epochs", "1", "--train-size", "none",
            "--store", str(tmp_path / "s"), "--device", "cpu", "--csv", str(tmp_path / "csv"),
            "-q"]
    assert main(args) == 0
    table = pd.read_csv(tmp_path / "csv" / "growth-syn.csv")
    assert list(table.columns[:6]) == ["start_width", "lam", "seed", "init", "final_width",
                                       "test_acc"]
    assert len(table) == 2 and "train_flops" in table and (table.train_flops > 0).all()
