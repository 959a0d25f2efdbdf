"""The optimizer study end to end on a synthetic problem: stored batch losses drive the
envelopes, spike counts and verdicts; a second call trains nothing."""

import numpy as np
import pytest

from tests.engine.child_run import synthetic
from widthlab.cli import main
from widthlab.errors import UsageError
from widthlab.metrics.spikes import find_spikes
from widthlab.report.builder import study_sections
from widthlab.store import Store
from widthlab.studies import optimizer

TINY = optimizer.OptimizerProfile(replicates=2, epochs=4, train_size=None, width=16, x0_start=8.0,
                         x0_lrs=(1.0, 0.1), penalty=1e-3)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store = tmp_path_factory.mktemp("opt") / "store"
    ids = optimizer.run("synthetic", TINY, store=store, data=synthetic(), device="cpu").ids()
    return store, ids


def test_one_run_per_optimizer_and_variant(study):
    store, ids = study
    st = Store(store)
    labels = sorted(st.get_run(r)["study"] for r in ids)
    assert len(ids) == 9 and len(set(ids)) == 9
    assert "optimizer:adamax-flexible-lr0.1" in labels and "optimizer:sgd-static" in labels
    cfg = st.get_run(ids[-1])["config"]
    assert cfg["optimizer"] == "sgd" and cfg["momentum"] == 0.9 and cfg["record_batch_loss"]
    again = optimizer.run("synthetic", TINY, store=store, data=synthetic(), device="cpu")
    assert again.ids() == ids and len(st.runs()) == 9


def test_tables_recompute_from_the_stored_batch_losses(study):
    store, ids = study
    st = Store(store)
    env = optimizer.envelope_table(st, ids)
    spikes = optimizer.spike_table(st, ids, factor=1.5, window=5)
    for r in ids[:3]:
        per_model = [np.concatenate([st.array(r, m, "batch_loss", epoch=e) for e in range(1, 5)])
                     for m in (0, 1)]
        steps = len(per_model[0]) // 4
        row = env[(env.run_id == r) & (env.epoch == 3)].iloc[0]
        maxes = [x[2 * steps:3 * steps].max() for x in per_model]
        assert row.loss_max == pytest.approx(np.median(maxes), rel=1e-12)
        got = spikes[spikes.run_id == r].sort_values("epoch").spikes.to_numpy()
        want = np.zeros(4, int)
        for x in per_model:
            np.add.at(want, find_spikes(x, 1.5, 5) // steps, 1)
        np.testing.assert_array_equal(got, want)


def test_report_has_figures_and_the_three_verdicts(study, tmp_path):
    store, ids = study
    (rendered,) = study_sections(optimizer.STUDY, Store(store), ids, tmp_path)
    sec = rendered.section
    assert len(rendered.figures) == 2 and all(p.is_file() for _, p in rendered.figures)
    assert not sec.error and "4 epochs" in sec.budget
    claims = {v.claim for v in sec.verdicts}
    assert claims == {"with Adam, loss spikes appear late in training",
                      "AdaMax reduces late spikes",
                      "the effect depends on the flexible layer's x0 learning rate"}


def test_bad_options_are_named(tmp_path):
    with pytest.raises(UsageError, match="optimizer"):
        optimizer.run("synthetic", TINY, store=tmp_path, optimizers=["rmsprop"],
                      data=synthetic())
    with pytest.raises(UsageError, match="unknown setting"):
        optimizer.run("synthetic", "quick", store=tmp_path, widths=3)
    assert main(["study", "optimizer", "--optimizers", "adam", "--epochs", "0"]) == 2
