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

SMALL = dict(starts=(4, 32), prices=(1e-3, 3e-2), inits=("gradmax", "none"), seeds=1,
             epochs=4, train_size=None, every=2, grace=4, max_new=16, warmup=2,
             grow_until=12, settle=2)  # 4 epochs of 5 steps


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
    # the benefit rule both grew and removed; every unit is accounted for (its gates carry no
    # penalty, so units leave only by the rule)
    met = store.metrics(runs["grow"], wide=True)
    last = met[(met.split == "train") & (met.epoch == prof.epochs)].set_index("model")
    g = t[t.init == "gradmax"].set_index("model")
    assert last.loc[g.index, "grown"].sum() > 0 and last.loc[g.index, "removed"].sum() > 0
    np.testing.assert_array_equal(
        g.final_width, g.start_width + last.loc[g.index, "grown"] - last.loc[g.index, "removed"])


def test_static_pairs_spreads_and_verdicts(study):
    store, runs = study
    tables = growth.STUDY.tables(store, newest(store, [runs["grow"]]))
    assert tables["mnist"].gate_kind == "l1"
    m = tables["mnist"]["models"]
    sm = store.models(runs["static"])
    assert sorted(zip(sm.width, sm.seed, strict=True)) == sorted(
        {(int(w), int(s)) for w, s in zip(m.final_width, m.seed, strict=True) if w > 0})
    sp = tables["mnist"]["spreads"]
    for row in sp.itertuples():
        g = m[(m.init == row.init) & (m.price == row.price)].groupby("start_width").final_width
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
    args = ["study", "growth", "--data", str(data), "--starts", "4,32", "--prices", "1e-3",
            "--inits", "gradmax", "--seeds", "1", "--epochs", "1", "--train-size", "none",
            "--store", str(tmp_path / "s"), "--device", "cpu", "--csv", str(tmp_path / "csv"),
            "-q"]
    assert main(args) == 0
    table = pd.read_csv(tmp_path / "csv" / "growth-syn.csv")
    assert list(table.columns[:6]) == ["start_width", "price", "seed", "init", "final_width",
                                       "test_acc"]
    assert len(table) == 2 and "train_flops" in table and (table.train_flops > 0).all()


def test_the_profile_builds_either_rule():
    """The benefit rule prices growing models through the rule (gates unpenalised) and the
    sparsifier models through their gates; the candidate rule charges every gate lambda."""
    prof = growth.STUDY.profile("quick", **SMALL)
    lams = [lam for _, lam, _, _ in growth.grid(prof)]
    inits = [i for i, _, _, _ in growth.grid(prof)]
    exp = growth.experiment(prof)
    gate = exp.modifiers[0]()
    assert exp.config.shrink_every == prof.every and gate.rule is not None
    assert gate.price_init == lams and gate.until == prof.grow_until
    assert gate.l1_init == [lam if i == "none" else 0.0 for i, lam in zip(inits, lams,
                                                                          strict=True)]
    assert gate.rule.settle == prof.settle and gate.rule.warmup == prof.warmup
    cand = growth.experiment(prof.replace(rule="candidate"))
    gate = cand.modifiers[0]()
    assert gate.rule is None and gate.l1_init == lams and gate.min_gate == prof.min_gate
    assert cand.config.shrink_every == "epoch"
    with pytest.raises(Exception, match="unknown growth rule"):
        prof.replace(rule="magic")
