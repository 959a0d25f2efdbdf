"""The engine: determinism, resume after kill -9, divergence isolation, statistics, timings."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.children import kill_at, spawn
from tests.engine.child_run import CONFIG, SPECS, synthetic
from widthlab.engine.trainer import Engine, TrainConfig, epoch_order, evaluate, train
from widthlab.errors import UsageError
from widthlab.nn.bank import ModelSpec
from widthlab.store import Store

CHILD = Path(__file__).with_name("child_run.py")


def run_child(store: Path, *args: str, wait: bool = True) -> subprocess.Popen:
    return spawn(CHILD, store, *args, wait=wait)


def dump(store: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Every stored number of the store's only run: metrics, arrays, models."""
    s = Store(store)
    (run_id,) = s.runs()["run_id"]
    metrics = s.metrics(run_id).sort_values(["model", "epoch", "split", "name"])
    with sqlite3.connect(s.db_path) as con:
        arrays = {row[:3]: bytes(row[3]) for row in con.execute(
            "SELECT model, epoch, name, data FROM arrays WHERE run_id=?", (run_id,))}
    models = s.models(run_id)[["model", "status", "failed_epoch"]]
    return metrics.reset_index(drop=True), arrays, models


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    store = tmp_path_factory.mktemp("ref") / "store"
    run_child(store)
    return dump(store)


def test_same_config_gives_bitwise_identical_results(tmp_path, reference_run):
    run_child(tmp_path / "store")
    metrics, arrays, _ = dump(tmp_path / "store")
    pd.testing.assert_frame_equal(metrics, reference_run[0], check_exact=True)
    assert arrays == reference_run[1]
    assert len(arrays) == 4 * 4 * 3 + 4 * 4 * 2  # models x epochs x (mean, std, dead, pre_*)


@pytest.mark.parametrize("hang", [["--hang-at-step", "30"], ["--hang-at-step", "3"],
                                  ["--hang-before-commit", "2"]],
                         ids=["mid-epoch-2", "mid-epoch-1", "before-commit"])
def test_kill_9_then_resume_is_identical(tmp_path, reference_run, hang):
    store = tmp_path / "store"
    p = run_child(store, *hang, wait=False)
    kill_at(p, tmp_path / "hang-x")
    s = Store(store)
    (run_id,) = s.runs()["run_id"]
    assert s.get_run(run_id)["status"] == "interrupted"  # no live process holds it
    run_child(store)  # the same command again
    assert s.get_run(run_id)["status"] == "done"
    metrics, arrays, models = dump(store)
    pd.testing.assert_frame_equal(metrics, reference_run[0], check_exact=True)
    assert arrays == reference_run[1]
    ckpts = list((store / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1 and not list((store / "checkpoints").glob("*.tmp*"))


def test_two_processes_share_a_store(tmp_path, reference_run):
    store = tmp_path / "store"
    a = run_child(store, "--tag", "a", wait=False)
    b = run_child(store, "--lr", "2e-3", "--tag", "b", wait=False)
    for p in (a, b):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    s = Store(store)
    runs = s.runs()
    assert len(runs) == 2 and set(runs["status"]) == {"done"}
    with sqlite3.connect(s.db_path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ref_id = next(r for r in runs["run_id"]
                  if s.get_run(r)["config"]["lr"] == 1e-3)
    got = s.metrics(ref_id).sort_values(["model", "epoch", "split", "name"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), reference_run[0], check_exact=True)


def test_done_run_is_not_retrained(tmp_path):
    cfg = TrainConfig(**{**CONFIG, "epochs": 1, "stats_epochs": "none"})
    data = synthetic()
    rid = train(SPECS[:2], cfg, tmp_path, data=data, progress=False)
    before = Store(tmp_path).get_run(rid)
    rid2 = train(SPECS[:2], cfg, tmp_path, data=data, progress=False)
    assert rid2 == rid and Store(tmp_path).get_run(rid)["timings"] == before["timings"]
    rid3 = train(SPECS[:2], TrainConfig(**{**CONFIG, "epochs": 2}), tmp_path, data=data,
                 progress=False)
    assert rid3 != rid


def test_diverging_model_is_flagged_and_isolated(tmp_path):
    data = synthetic()
    cfg = TrainConfig(**{**CONFIG, "epochs": 2, "stats_epochs": "none"})
    good = [ModelSpec((8,), seed=0), ModelSpec((16,), seed=1)]
    bad = ModelSpec((8,), seed=5, lr=1e30)
    with_bad = Engine([good[0], bad, good[1]], cfg, tmp_path / "a", data=data, progress=False)
    without = Engine(good, cfg, tmp_path / "b", data=data, progress=False)
    with_bad.run()
    without.run()
    models = Store(tmp_path / "a").models(with_bad.run_id)
    assert list(models["status"]) == ["ok", "failed", "ok"]
    assert models["failed_epoch"][1] == 1 and "NaN or inf" in models["failure"][1]
    for m_with, m_without in [(0, 0), (2, 1)]:
        for (name, p, _), (_, q, _) in zip(with_bad.bank.model_params(m_with),
                                          without.bank.model_params(m_without), strict=True):
            err = ((p - q).abs().max() / q.abs().max()).item()
            assert err < 1e-6, (name, err)
    assert all(bool((p == 0).all()) for p in with_bad.opt.model_tensors[1])
    metrics = Store(tmp_path / "a").metrics(with_bad.run_id)
    assert set(metrics[metrics.epoch == 2]["model"]) == {0, 2}
    assert metrics[metrics.model != 1]["value"].notna().all()


def test_neuron_statistics_match_numpy_on_exported_models(tmp_path):
    data = synthetic()
    cfg = TrainConfig(**{**CONFIG, "epochs": 1, "stats_split": "val"})
    eng = Engine(SPECS, cfg, tmp_path, data=data, progress=False)
    eng.run()
    s = Store(tmp_path)
    x = data.val.x.double().numpy()
    for m in range(len(SPECS)):
        mlp = eng.bank.export(m)
        w = mlp.layers[0].weight.detach().double().numpy()
        b = mlp.layers[0].bias.detach().double().numpy()
        # streaming statistics are checked on the engine's own float32 pre-activations (to
        # 1e-9); those are checked against a float64 reference of the exported model (to 1e-4)
        with torch.no_grad():
            z_all, _ = eng.bank.hidden(data.val.x, track=False)
        lo, hi = eng.bank.slices[m]
        z32 = z_all[:, lo:hi].double().numpy()
        a = np.maximum(z32, 0)
        np.testing.assert_allclose(s.array(eng.run_id, m, "act_std"), a.std(0), rtol=1e-9,
                                   atol=1e-12)
        np.testing.assert_allclose(s.array(eng.run_id, m, "act_mean"), a.mean(0), rtol=1e-9,
                                   atol=1e-12)
        np.testing.assert_array_equal(s.array(eng.run_id, m, "dead"), (a <= 0).all(0))
        np.testing.assert_allclose(s.array(eng.run_id, m, "pre_cov"),
                                   np.cov(z32, rowvar=False), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(z32, x @ w.T + b, rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            acc = (mlp(data.test.x).argmax(1) == data.test.y).double().mean().item()
        got = s.metrics(eng.run_id)
        got = got[(got.model == m) & (got.split == "test") & (got.name == "acc")]["value"]
        assert got.item() == pytest.approx(acc, abs=1e-12)


def test_epoch_order_depends_only_on_seed_and_epoch():
    a = epoch_order(100, 3, 2, torch.device("cpu"))
    assert torch.equal(a, epoch_order(100, 3, 2, torch.device("cpu")))
    assert not torch.equal(a, epoch_order(100, 3, 1, torch.device("cpu")))
    assert torch.equal(a.sort().values, torch.arange(100))


def test_config_errors_are_clear():
    with pytest.raises(UsageError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(UsageError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(UsageError, match="split"):
        TrainConfig(eval_splits=("dev",))
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA"):
            TrainConfig(device="cuda")


def test_bf16_training_tracks_fp32(tmp_path):
    """bf16 autocast learns as well as fp32 on the same stream (10 classes: chance is 0.1)."""
    data = synthetic()
    acc = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(**{**CONFIG, "epochs": 3, "precision": precision,
                             "stats_epochs": "none", "lr": 1e-2})
        eng = Engine(SPECS[:2], cfg, tmp_path / precision, data=data, progress=False)
        eng.run()
        m = Store(tmp_path / precision).metrics(eng.run_id)
        acc[precision] = m[(m.split == "test") & (m.name == "acc") & (m.epoch == 3)]["value"]
    assert (acc["bf16"] > 0.35).all()
    np.testing.assert_allclose(acc["bf16"].to_numpy(), acc["fp32"].to_numpy(), atol=0.08)


def test_modifier_settings_enter_the_run_id(tmp_path):
    from widthlab.nn.modifiers import NeuronGate

    data = synthetic()
    cfg = TrainConfig(**CONFIG)

    def run_id(l1, lr=None):
        return Engine(SPECS, cfg, tmp_path, data=data, progress=False,
                      modifiers=[lambda: NeuronGate(l1, lr=lr)]).run_id

    plain = Engine(SPECS, cfg, tmp_path, data=data, progress=False).run_id
    assert run_id(0.1) == run_id(0.1)
    assert len({plain, run_id(0.1), run_id(0.2), run_id(0.1, lr=1e-2),
                run_id([0.1, 0.1, 0.1, 0.2])}) == 5


def test_evaluation_does_not_depend_on_its_batch_size(monkeypatch):
    from widthlab.engine import banks
    from widthlab.nn.bank import MLPBank

    data = synthetic()
    bank = MLPBank(SPECS, 20, 10)
    ref = evaluate(bank, data.train, batch_size=1000, stats=True, preact_cov=True)
    monkeypatch.setattr(banks, "EVAL_ELEMENTS", 7 * bank.n_hidden)  # 7-row batches
    small = evaluate(bank, data.train, batch_size=1000, stats=True, preact_cov=True)
    # the float32 GEMM rounds differently per batch shape: agreement at float32 level
    assert ref.moments.count == small.moments.count == len(data.train)
    assert torch.equal(ref.acc, small.acc)
    torch.testing.assert_close(ref.loss, small.loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(ref.moments.std(), small.moments.std(), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ref.cov.covariance(3), small.cov.covariance(3), rtol=1e-5,
                               atol=1e-8)


def test_load_bank_rebuilds_the_trained_models(tmp_path):
    from widthlab.engine import load_bank

    data = synthetic()
    cfg = TrainConfig(**{**CONFIG, "epochs": 2, "stats_epochs": "none"})
    eng = Engine(SPECS, cfg, tmp_path, data=data, progress=False)
    run_id = eng.run()
    bank = load_bank(tmp_path, run_id)
    for a, b in zip(bank.state_dict().values(), eng.bank.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    m = Store(tmp_path).metrics(run_id)
    stored = m[(m.split == "test") & (m.name == "acc") & (m.epoch == 2)]["value"].to_numpy()
    again = evaluate(bank, data.test, batch_size=cfg.eval_batch_size).acc.numpy()
    np.testing.assert_array_equal(again, stored)
    with pytest.raises(UsageError, match="no run"):
        load_bank(tmp_path, "nope")
