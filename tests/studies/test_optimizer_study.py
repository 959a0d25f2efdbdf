"""The optimizer study end to end on a synthetic problem: stored batch losses drive the
envelopes, spike counts and verdicts; a second call trains nothing; the static models of the
fused run train exactly as a plain static bank."""

import numpy as np
import pytest
import torch

from tests.engine.child_run import synthetic
from widthlab.cli import main
from widthlab.engine import TrainConfig, load_bank, train
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


def test_one_run_per_optimizer_holding_every_variant(study):
    store, ids = study
    st = Store(store)
    labels = [st.get_run(r)["study"] for r in ids]
    assert labels == ["optimizer:adam", "optimizer:adamax", "optimizer:sgd"]
    models = st.models(ids[0])
    assert list(models.variant) == ["static"] * 2 + ["flexible-lr1"] * 2 + ["flexible-lr0.1"] * 2
    cfg = st.get_run(ids[-1])["config"]
    assert cfg["optimizer"] == "sgd" and cfg["momentum"] == 0.9 and cfg["record_batch_loss"]
    (cut,) = cfg["modifiers"]
    assert cut["lr"] == [0.0, 0.0, 1.0, 1.0, 0.1, 0.1]
    again = optimizer.run("synthetic", TINY, store=store, data=synthetic(), device="cpu")
    assert again.ids() == ids and len(st.runs()) == 3


def test_fused_static_models_train_as_a_plain_static_bank(study, tmp_path):
    store, ids = study
    (adam, *_) = optimizer.experiments(TINY)
    static = [s for s in adam.specs if s.variant == "static"]
    cfg = TrainConfig(**{**vars(adam.config), "study": "plain"})
    plain = train(static, cfg, tmp_path, data=synthetic())
    got, want = load_bank(store, ids[0], strict_modifiers=False), load_bank(tmp_path, plain)
    for m in range(len(static)):
        for (name, a, _), (_, b, _) in zip(got.model_params(m), want.model_params(m),
                                           strict=False):
            assert name.startswith("layers.")
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    x0 = Store(store).metrics(ids[0]).query("name == 'x0'")
    assert set(x0[x0.model < 2].value) == {optimizer.STATIC_X0}  # lr 0: the cut-off never moved


def test_tables_recompute_from_the_stored_batch_losses(study):
    store, ids = study
    st = Store(store)
    env = optimizer.envelope_table(st, ids)
    spikes = optimizer.spike_table(st, ids, factor=1.5, window=5)
    assert len(env) == 3 * 3 * 4 and set(env.replicates) == {2}  # run x variant x epoch
    for r in ids:
        for var, models in (("static", (0, 1)), ("flexible-lr0.1", (4, 5))):
            per_model = [np.concatenate([st.array(r, m, "batch_loss", epoch=e)
                                         for e in range(1, 5)]) for m in models]
            steps = len(per_model[0]) // 4
            mine = (env.run_id == r) & (env.variant == var)
            row = env[mine & (env.epoch == 3)].iloc[0]
            maxes = [x[2 * steps:3 * steps].max() for x in per_model]
            assert row.loss_max == pytest.approx(np.median(maxes), rel=1e-12)
            got = spikes[(spikes.run_id == r) & (spikes.variant == var)]
            want = np.zeros(4, int)
            for x in per_model:
                np.add.at(want, find_spikes(x, 1.5, 5) // steps, 1)
            np.testing.assert_array_equal(got.sort_values("epoch").spikes.to_numpy(), want)


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
