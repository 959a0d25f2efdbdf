"""TokenRun: a GPT trained on token windows through the one lifecycle. Equal to nn.gpt_train's
own loop step for step; gates priced and shrunk with AdamW state kept; kill -9 mid-chunk then
resume bitwise identical (a shrunk gated model, CPU)."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.children import assert_same_numbers, kill_at, run_numbers, spawn
from tests.engine.child_token_run import CONFIG, GPT_CFG, corpus, make_run
from widthlab.engine.lifecycle import Trainable, run_trainable
from widthlab.engine.token_run import TokenConfig, TokenRun, ffn_params
from widthlab.errors import UsageError
from widthlab.nn.gpt import GPTConfig
from widthlab.nn.gpt_train import GPTTrain, evaluate_gpt, train_gpt
from widthlab.store import Store
from widthlab.studies.transformer.models import current_widths, gpt_model

CHILD = Path(__file__).with_name("child_token_run.py")
TIMED = {"step_time"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    store = tmp_path_factory.mktemp("ref") / "store"
    spawn(CHILD, store, one_thread=True)
    return run_numbers(store, TIMED)


def test_gated_run_shrinks_and_counts_ffn_parameters(reference):
    assert isinstance(make_run(), Trainable)
    met, ckpt = reference
    weights = ckpt["model"]
    wide = met.pivot_table(index="epoch", columns="name", values="value")
    ffn = wide[[c for c in wide if c.endswith(":out")]].sum(axis=1)
    assert list(wide.index) == [1, 2, 3, 4]
    assert ffn.iloc[-1] < ffn.iloc[0] <= 2 * 24  # units were removed during training
    # FFN parameters = (fc row + proj column) per unit, no biases
    assert (wide["ffn_params"] == ffn * 2 * GPT_CFG["n_embd"]).all()
    assert (wide["price"].to_numpy() == [0, 1e-3, 0, 0]).all()  # on for steps 10-19
    assert weights["blocks.0.mlp.fc.weight"].shape[0] == int(
        wide["blocks.0.mlp.fc:out"].iloc[-1])


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    store = tmp_path_factory.mktemp("fold") / "store"
    spawn(CHILD, store, "--fold", one_thread=True)
    return run_numbers(store, TIMED)


def kill_mid_chunk_3(tmp_path, *args: str) -> Store:
    store = tmp_path / "store"
    p = spawn(CHILD, store, "--hang-at-step", "25", *args, wait=False, one_thread=True)
    kill_at(p, tmp_path / "hang")  # 10 steps a chunk: mid chunk 3
    st = Store(store)
    (run_id,) = st.runs()["run_id"]
    assert st.get_run(run_id)["epochs_done"] == 2
    return st


def resume(store: Path, *args: str) -> tuple[pd.DataFrame, dict]:
    spawn(CHILD, store, *args, one_thread=True)
    (run_id,) = Store(store).runs()["run_id"]
    assert Store(store).get_run(run_id)["status"] == "done"
    return run_numbers(store, TIMED)


def test_kill_9_mid_chunk_then_resume_is_bitwise_identical(tmp_path, reference):
    kill_mid_chunk_3(tmp_path)
    assert_same_numbers(resume(tmp_path / "store"), reference)


def test_fold_at_trains_a_plain_model_at_fixed_widths_and_resumes_bitwise(tmp_path, folded,
                                                                         reference):
    met, ckpt = folded
    weights = ckpt["model"]
    wide = met.pivot_table(index="epoch", columns="name", values="value")
    gated = reference[0].pivot_table(index="epoch", columns="name", values="value")
    pd.testing.assert_series_equal(wide.loc[1], gated.loc[1], check_exact=True)  # before it
    ffn = wide[[c for c in wide if c.endswith(":out")]].sum(axis=1)
    assert ffn[2] == gated[[c for c in gated if c.endswith(":out")]].sum(axis=1)[2] < 48
    assert (ffn.loc[2:] == ffn[2]).all() and (wide["ffn_params"] == ffn * 2 * 16).all()
    # the fold keeps the shrunk model's function: its val loss after chunk 2 is the gated
    # one's; then a plain model trains on (other numbers than the gated run's)
    val = met[met.split == "val"].set_index("epoch").value
    gated_val = reference[0][reference[0].split == "val"].set_index("epoch").value
    assert val[1] == gated_val[1] and val[2] == pytest.approx(gated_val[2], rel=1e-5)
    assert (val.loc[3:] != gated_val.loc[3:]).all()
    assert not [k for k in weights if "gate" in k]
    assert weights["blocks.1.mlp.fc.weight"].shape[0] == wide.loc[4, "blocks.1.mlp.fc:out"]
    # kill -9 after the fold: the checkpoint holds the plain model and AdamW over it alone,
    # with every kept weight's moments carried over (20 steps each)
    st = kill_mid_chunk_3(tmp_path, "--fold")
    (run_id,) = st.runs()["run_id"]
    epoch, ckpt = st.latest_checkpoint(run_id)
    assert ckpt["state"]["folded"] == {k: int(wide.loc[4, k]) for k in ckpt["state"]["folded"]}
    opt = ckpt["opt"]
    plain = gpt_model({**GPT_CFG, "vocab_size": corpus().vocab_size}, 0)
    assert len(opt["param_groups"]) == 2
    assert len(opt["state"]) == len(list(plain.parameters()))
    assert {float(s["step"]) for s in opt["state"].values()} == {20.0}
    assert_same_numbers(resume(tmp_path / "store", "--fold"), folded)


def test_dense_run_equals_train_gpt_step_for_step(tmp_path):
    data = corpus()
    cfg = {**GPT_CFG, "vocab_size": data.vocab_size}
    tc = TokenConfig(steps=12, chunk=4, batch_size=4, lr=3e-3, warmup_steps=3, eval_windows=None)
    run = TokenRun(functools.partial(gpt_model, cfg, 3), data, tc, label="tok:dense")
    run_trainable(run, tmp_path / "s")
    plain = GPTTrain(batch_size=4, lr=3e-3, warmup_steps=3)  # tc's optimisation settings
    model, hist = train_gpt(GPTConfig(**cfg), data, 12, plain, seed=3, data_seed=0)
    for a, b in zip(run.model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    met = Store(tmp_path / "s").metrics(run.run_id).set_index(["epoch", "split", "name"]).value
    for e in (1, 2, 3):
        chunk = [h["train_loss"] for h in hist[4 * (e - 1):4 * e]]
        assert met[(e, "train", "loss")] == pytest.approx(sum(chunk) / 4, rel=1e-6)
    assert met[(3, "val", "loss")] == pytest.approx(
        evaluate_gpt(model, data.val, cfg["block_size"]), rel=1e-9)
    assert met[(3, "train", "ffn_params")] == ffn_params(model) == 2 * 2 * 24 * 16


def test_static_widths_cut_a_fresh_model():
    cfg = {**GPT_CFG, "vocab_size": 11}
    w = {"blocks.0.mlp.fc:out": 7, "blocks.1.mlp.fc:out": 24, "blocks.1.attn:heads": 1}
    m = gpt_model(cfg, 0, widths=w)
    assert current_widths(m) == {"blocks.0.mlp.fc:out": 7, "blocks.0.attn:heads": 4,
                                 "blocks.1.mlp.fc:out": 24, "blocks.1.attn:heads": 1}
    full = gpt_model(cfg, 0)  # kept units are the first ones, weights untouched
    assert torch.equal(m.blocks[0].mlp.fc.weight, full.blocks[0].mlp.fc.weight[:7])
    assert m(torch.zeros(1, 5, dtype=torch.long)).shape == (1, 5, 11)
    with pytest.raises(UsageError, match="cannot cut group"):
        gpt_model(cfg, 0, widths={"blocks.0.mlp.fc:out": 0})


def test_config_refusals():
    with pytest.raises(UsageError, match="multiple of chunk"):
        TokenConfig(steps=10, chunk=3)
    with pytest.raises(UsageError, match="fold_at"):
        TokenConfig(steps=100, chunk=10, price_until=0.5, fold_at=0.4)  # price still on
    with pytest.raises(UsageError, match="fold_at"):
        TokenConfig(steps=100, chunk=25, price_until=0.5, fold_at=0.6)  # mid chunk
    with pytest.raises(UsageError, match="price_from"):
        TokenConfig(price_from=0.8, price_until=0.2)
    with pytest.raises(UsageError, match="no epoch hooks"):
        make_run(cfg=CONFIG).__class__(lambda: None, corpus(), CONFIG, hooks=[print])
