"""Fused GPTs are K separate runs: the same losses and weights after several AdamW steps."""

from __future__ import annotations

import pytest
import torch

from widthlab.data.text import tokenize
from widthlab.errors import UsageError
from widthlab.nn import FusedGPT, GPTConfig, GPTTrain, build_gpt, train_fused, train_gpt

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "To be, or not to be, that is the question: Whether 'tis nobler in the mind " * 20
SHAPE = dict(n_layer=2, n_head=2, n_embd=16, n_ffn=24, block_size=8)


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _compare(cfg, tc, seeds, steps, atol, data_seeds=None):
    corpus = tokenize(TEXT, name="t", source="test")
    fused, hist = train_fused(cfg, corpus, steps, tc, seeds=seeds, data_seeds=data_seeds)
    for i, seed in enumerate(seeds):
        model, ref = train_gpt(cfg, corpus, steps, tc, seed=seed,
                               data_seed=0 if data_seeds is None else data_seeds[i])
        got = [r["train_loss"][i] for r in hist]
        want = [r["train_loss"] for r in ref]
        assert got == pytest.approx(want, abs=atol)
        mine = fused.export(i)
        for (name, p), q in zip(model.named_parameters(), mine.parameters(), strict=True):
            torch.testing.assert_close(q, p, rtol=0, atol=atol, msg=name)
    return fused, corpus


@pytest.mark.parametrize("extra", [dict(), dict(bias=True, tie_weights=False)])
def test_fused_equals_separate_runs_float32(extra):
    cfg = GPTConfig(**SHAPE, vocab_size=tokenize(TEXT, name="t", source="t").vocab_size, **extra)
    tc = GPTTrain(batch_size=4, lr=3e-3, warmup_steps=2, grad_clip=0.5)
    _compare(cfg, tc, [0, 1, 2], 6, 1e-5)


def test_fused_equals_separate_runs_float64_with_own_batches(float64):
    cfg = GPTConfig(**SHAPE, vocab_size=tokenize(TEXT, name="t", source="t").vocab_size)
    tc = GPTTrain(batch_size=4, lr=3e-3, warmup_steps=2, grad_clip=0.5)
    fused, corpus = _compare(cfg, tc, [4, 7], 5, 1e-10, data_seeds=[3, 9])
    assert fused.params["tok.weight"].dtype == torch.float64


def test_clipping_is_per_model():
    cfg = GPTConfig(**SHAPE, vocab_size=20)
    fused = FusedGPT(cfg, [0, 1], GPTTrain(grad_clip=0.0))
    x = torch.randint(20, (2, 4, 8), generator=torch.Generator().manual_seed(0))
    fused.losses(x, x).sum().backward()
    fused.params["tok.weight"].grad[1] *= 100.0  # model 1's gradient is much larger
    want = []
    for i in range(2):
        grads = [p.grad[i].clone() for p in fused.params.values()]
        want.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    norms = fused.clip_(1.0)
    torch.testing.assert_close(norms, torch.stack(want))
    after = [torch.sqrt(sum(p.grad[i].pow(2).sum() for p in fused.params.values()))
             for i in range(2)]
    assert float(after[1]) == pytest.approx(1.0, rel=1e-5)
    assert float(after[0]) == pytest.approx(min(1.0, float(norms[0])), rel=1e-5)


def test_fused_logits_are_each_models_logits():
    cfg = GPTConfig(**SHAPE, vocab_size=20, bias=True)
    fused = FusedGPT(cfg, [2, 5])
    x = torch.randint(20, (3, 8), generator=torch.Generator().manual_seed(1))
    logits = fused.logits(x)  # (2, 3, 8, 20)
    for i, seed in enumerate([2, 5]):
        torch.testing.assert_close(logits[i], build_gpt(cfg, seed)(x), rtol=0, atol=1e-5)


def test_device_argument_places_the_stacked_weights():
    fused = FusedGPT(GPTConfig(**SHAPE, vocab_size=20), [0, 1], device="meta")
    assert {p.device.type for p in fused.params.values()} == {"meta"}
    assert fused.params["blocks.0.mlp.fc.weight"].shape == (2, 24, 16)


def test_fused_errors():
    cfg = GPTConfig(**SHAPE, vocab_size=20)
    with pytest.raises(UsageError, match="dropout 0"):
        FusedGPT(GPTConfig(**SHAPE, vocab_size=20, dropout=0.1), [0, 1])
    fused = FusedGPT(cfg, [0, 1])
    with pytest.raises(UsageError, match="leading axis of 2"):
        fused.logits(torch.zeros(3, 4, 8, dtype=torch.long))
    with pytest.raises(UsageError, match="one per seed"):
        train_fused(cfg, tokenize(TEXT, name="t", source="t"), 1, seeds=[0, 1], data_seeds=[0])


def test_checkpoint_resume_is_bitwise(tmp_path):
    cfg = GPTConfig(**SHAPE, vocab_size=20)
    tc = GPTTrain(batch_size=4, warmup_steps=1)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(20, (4, 9), generator=gen) for _ in range(5)]
    straight = FusedGPT(cfg, [0, 1], tc)
    for s, b in enumerate(batches):
        straight.step(b[:, :-1], b[:, 1:], lr=1e-3 * (s + 1))
    first = FusedGPT(cfg, [0, 1], tc)
    for s, b in enumerate(batches[:3]):
        first.step(b[:, :-1], b[:, 1:], lr=1e-3 * (s + 1))
    torch.save(first.state_dict(), tmp_path / "ckpt.pt")
    resumed = FusedGPT(cfg, [0, 1], tc)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt"))
    for s, b in enumerate(batches[3:], start=3):
        resumed.step(b[:, :-1], b[:, 1:], lr=1e-3 * (s + 1))
    for name, p in straight.params.items():
        assert torch.equal(p, resumed.params[name]), name
    with pytest.raises(UsageError, match="does not fit"):
        FusedGPT(cfg, [0, 2], tc).load_state_dict(first.state_dict())
