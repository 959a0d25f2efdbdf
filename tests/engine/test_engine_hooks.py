"""Engine extensions the studies build on: warm starts, per-batch losses, hooks, Adamax/SGD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.engine.child_run import synthetic
from widthlab.engine.events import EpochContext
from widthlab.engine.trainer import Engine, TrainConfig, epoch_order, load_bank, train
from widthlab.errors import UsageError
from widthlab.nn.bank import MLP, ModelSpec
from widthlab.nn.modifiers import Modifier
from widthlab.store import MetricRow, Store

SPECS = [ModelSpec((8,), seed=0), ModelSpec((16,), seed=1)]


def cfg(**kw) -> TrainConfig:
    base = dict(dataset="synthetic", epochs=2, batch_size=64, device="cpu", stats_epochs="none",
                eval_splits=("test",))
    return TrainConfig(**{**base, **kw})


def reference_batch_losses(spec, data, epochs, batch_size, make_opt):
    """A naive loop: one MLP alone, the engine's batch order, its per-batch losses."""
    mlp = MLP([data.train.x.shape[1], *spec.hidden, 10], seed=spec.seed)
    opt = make_opt(mlp.parameters())
    out = []
    for epoch in range(1, epochs + 1):
        order = epoch_order(len(data.train), 0, epoch, torch.device("cpu"))
        for i in range(0, len(data.train), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(mlp(data.train.x[idx]), data.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
    return np.array(out), mlp


@pytest.mark.parametrize("kind,make", [
    ("adamax", lambda p: torch.optim.Adamax(p, lr=2e-3)),
    ("sgd", lambda p: torch.optim.SGD(p, lr=2e-3, momentum=0.9)),
    ("adam", lambda p: torch.optim.Adam(p, lr=2e-3)),
])
def test_batch_losses_match_a_model_trained_alone(tmp_path, kind, make):
    data = synthetic()
    run_id = train(SPECS, cfg(optimizer=kind, lr=2e-3, momentum=0.9 if kind == "sgd" else 0.0,
                              record_batch_loss=True), tmp_path, data=data, progress=False)
    st = Store(tmp_path)
    for m, spec in enumerate(SPECS):
        ref, mlp = reference_batch_losses(spec, data, 2, 64, make)
        got = np.concatenate([st.array(run_id, m, "batch_loss", epoch=e) for e in (1, 2)])
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-6)
        met = st.metrics(run_id)
        row = met[(met.model == m) & (met.epoch == 2) & (met.name == "batch_loss_max")]
        assert float(row.value.iloc[0]) == pytest.approx(ref[len(ref) // 2:].max(), rel=2e-5)
        exported = load_bank(st, run_id).export(m)
        for a, b in zip(exported.parameters(), mlp.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_init_from_starts_from_the_finished_runs_weights(tmp_path):
    """A warm start begins from the finished run's trained weights, bit for bit."""
    data = synthetic()
    first = train(SPECS, cfg(epochs=1), tmp_path, data=data, progress=False)
    eng = Engine(SPECS, cfg(epochs=1, init_from=first, data_seed=1), tmp_path, data=data,
                 progress=False)
    src = load_bank(tmp_path, first)
    for m in range(len(SPECS)):
        for a, b in zip(eng.bank.export(m).parameters(), src.export(m).parameters(),
                        strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    cold = Engine(SPECS, cfg(epochs=1, data_seed=1), tmp_path, data=data, progress=False)
    assert eng.run_id != cold.run_id  # the warm start is part of the fingerprint


def test_init_from_errors_name_the_problem(tmp_path):
    data = synthetic()
    with pytest.raises(UsageError, match="not a finished run"):
        Engine(SPECS, cfg(init_from="nope"), tmp_path, data=data, progress=False)
    first = train(SPECS, cfg(epochs=1), tmp_path, data=data, progress=False)
    with pytest.raises(UsageError, match="same models"):
        Engine(SPECS[:1], cfg(init_from=first), tmp_path, data=data, progress=False)


class CountingModifier(Modifier):
    """Scale 1; counts the engine's calls and reports them each epoch."""

    def build(self, bank):
        self.w = torch.nn.Parameter(torch.ones(bank.n_hidden))
        self.steps, self.backwards = [], 0

    def scale(self):
        return self.w

    def model_params(self, m):
        a, b = self.slices[m]
        return [("w", self.w.detach()[a:b], self.w.grad[a:b])]

    def before_step(self, step):
        self.steps.append(step)

    def after_backward(self):
        assert self.w.grad is not None and bool(self.w.grad.abs().sum() > 0)
        self.backwards += 1

    def epoch_records(self):
        return [(m, "calls", len(self.steps)) for m in range(self.n_models)] + [
            (0, "w_first", self.w.detach()[:3].numpy().copy())]


def test_modifier_hooks_and_epoch_records_are_stored(tmp_path):
    data = synthetic()
    mods = []

    def make():
        mods.append(CountingModifier())
        return mods[-1]

    run_id = train(SPECS, cfg(epochs=2), tmp_path, modifiers=[make], data=data, progress=False)
    per_epoch = -(-len(data.train) // 64)
    assert mods[-1].steps == list(range(2 * per_epoch))
    assert mods[-1].backwards == 2 * per_epoch
    st = Store(tmp_path)
    met = st.metrics(run_id)
    calls = met[met.name == "calls"].sort_values(["epoch", "model"]).value.tolist()
    assert calls == [per_epoch, per_epoch, 2 * per_epoch, 2 * per_epoch]
    assert st.array(run_id, 0, "w_first", epoch=2).shape == (3,)


def test_epoch_hooks_store_rows_and_enter_the_fingerprint(tmp_path):
    data = synthetic()
    seen = []

    def hook(ctx: EpochContext):
        seen.append((ctx.epoch, ctx.last, ctx.alive, ctx.cfg.epochs, len(ctx.data.train),
                     ctx.bank.n_models))
        return [MetricRow(m, ctx.epoch, "test", "hook_value", 10.0 * ctx.epoch + m)
                for m in range(ctx.bank.n_models)]

    run_id = train(SPECS, cfg(), tmp_path, data=data, progress=False, hooks=[hook])
    n = len(data.train)
    assert seen == [(1, False, (True, True), 2, n, 2), (2, True, (True, True), 2, n, 2)]
    met = Store(tmp_path).metrics(run_id)
    vals = met[met.name == "hook_value"].sort_values(["epoch", "model"]).value.tolist()
    assert vals == [10.0, 11.0, 20.0, 21.0]
    plain = Engine(SPECS, cfg(), tmp_path, data=data, progress=False)
    assert plain.run_id != run_id
