"""The GPT against a float64 numpy reference, causality, tying, parameter counts, the learning
rate schedule, the training step and the exact validation loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import erf

from widthlab.data.text import tokenize
from widthlab.errors import UsageError
from widthlab.nn import GPT, GPTConfig, GPTTrain, build_gpt, evaluate_gpt, lr_at, train_gpt
from widthlab.nn.gpt_train import make_optimizer, train_step

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(n_layer=2, n_head=2, n_embd=16, n_ffn=24, block_size=8, vocab_size=11)


def reference_logits(model: GPT, idx: np.ndarray) -> np.ndarray:
    """The forward pass written out in numpy float64: explicit heads, mask and softmax."""
    cfg = model.cfg
    P = {n: p.detach().double().numpy() for n, p in model.named_parameters()}

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + 1e-5) * P[name + ".weight"]
        return y + P[name + ".bias"] if name + ".bias" in P else y

    def lin(x, name):
        y = x @ P[name + ".weight"].T
        return y + P[name + ".bias"] if name + ".bias" in P else y

    B, T = idx.shape
    C, H = cfg.n_embd, cfg.n_head
    D = C // H
    x = P["tok.weight"][idx] + P["pos.weight"][:T]
    for i in range(cfg.n_layer):
        pre = f"blocks.{i}."
        qkv = lin(ln(x, pre + "ln1"), pre + "attn.qkv")
        out = np.zeros_like(x)
        for b in range(B):
            for h in range(H):
                q = qkv[b, :, h * D:(h + 1) * D]
                k = qkv[b, :, C + h * D:C + (h + 1) * D]
                v = qkv[b, :, 2 * C + h * D:2 * C + (h + 1) * D]
                for t in range(T):
                    s = np.array([q[t] @ k[u] / math.sqrt(D) for u in range(t + 1)])
                    w = np.exp(s - s.max())
                    w /= w.sum()
                    out[b, t, h * D:(h + 1) * D] = w @ v[:t + 1]
        x = x + lin(out, pre + "attn.proj")
        a = lin(ln(x, pre + "ln2"), pre + "mlp.fc")
        x = x + lin(0.5 * a * (1 + erf(a / math.sqrt(2))), pre + "mlp.proj")
    head = P["tok.weight"] if cfg.tie_weights else P["head.weight"]
    return ln(x, "ln_f") @ head.T


@pytest.mark.parametrize("extra", [dict(), dict(bias=True, tie_weights=False)])
def test_forward_matches_float64_reference(extra):
    model = build_gpt(GPTConfig(**TINY, **extra), seed=3).double()
    with torch.no_grad():  # non-zero biases and LayerNorm gains, so they are checked too
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn(p.shape, dtype=p.dtype) * 0.3 + (1.0 if "ln" in n else 0.0))
    idx = torch.randint(11, (3, 8), generator=torch.Generator().manual_seed(0))
    got = model(idx).detach().numpy()  # (3, 8, 11)
    np.testing.assert_allclose(got, reference_logits(model, idx.numpy()), rtol=0, atol=1e-10)


def test_causal_future_tokens_do_not_change_the_past():
    model = build_gpt(GPTConfig(**TINY), seed=0)
    idx = torch.randint(11, (2, 8), generator=torch.Generator().manual_seed(1))
    other = idx.clone()
    other[:, 5:] = (other[:, 5:] + 1) % 11
    a, b = model(idx), model(other)
    assert torch.equal(a[:, :5], b[:, :5]) and not torch.allclose(a[:, 5:], b[:, 5:])


def test_tied_head_and_parameter_count():
    V, T, C, F_, L = 11, 8, 16, 24, 2
    tied = GPT(GPTConfig(**TINY))
    untied = GPT(GPTConfig(**TINY, tie_weights=False))
    assert tied.head.weight is tied.tok.weight
    per_block = C + 3 * C * C + C * C + C + C * F_ + F_ * C  # ln1, qkv, proj, ln2, fc, proj
    assert tied.n_params() == V * C + T * C + L * per_block + C
    assert untied.n_params() == tied.n_params() + V * C
    assert tied.n_params(embeddings=False) == tied.n_params() - T * C
    biased = GPT(GPTConfig(**TINY, bias=True))
    assert biased.n_params() - tied.n_params() == L * (C + 3 * C + C + C + F_ + C) + C


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_gpt(GPTConfig(**TINY), seed=5)
    assert torch.equal(torch.rand(1), before)
    b = build_gpt(GPTConfig(**TINY), seed=5)
    c = build_gpt(GPTConfig(**TINY), seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.tok.weight, c.tok.weight)
    proj = a.blocks[0].mlp.proj.weight
    assert abs(float(proj.detach().std()) - 0.02 / math.sqrt(4)) < 0.004  # nanoGPT's scaled init


@pytest.mark.parametrize("bad, match", [
    (dict(n_embd=18, n_head=4), "not divisible"),
    (dict(n_ffn=0), "n_ffn must be >= 1"),
    (dict(dropout=1.0), "dropout"),
])
def test_config_errors(bad, match):
    with pytest.raises(UsageError, match=match):
        GPTConfig(**{**TINY, **bad})


def test_too_long_input_is_a_usage_error():
    with pytest.raises(UsageError, match="longer than block_size 8"):
        GPT(GPTConfig(**TINY))(torch.zeros(1, 9, dtype=torch.long))


def test_lr_schedule_hand_values():
    tc = GPTTrain(lr=1.0, min_lr=0.1, warmup_steps=10)
    assert lr_at(0, tc, 110) == pytest.approx(1 / 11)
    assert lr_at(9, tc, 110) == pytest.approx(10 / 11)
    assert lr_at(10, tc, 110) == pytest.approx(1.0)
    assert lr_at(60, tc, 110) == pytest.approx(0.55)  # halfway down the cosine
    assert lr_at(35, tc, 110) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, tc, 110) == lr_at(500, tc, 110) == 0.1
    assert all(lr_at(s, tc, 110) >= lr_at(s + 1, tc, 110) for s in range(10, 110))


def test_weight_decay_groups():
    model = GPT(GPTConfig(**TINY, bias=True))
    opt = make_optimizer(model, GPTTrain(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and len(decay["params"]) == 2 + 2 * 4
    assert all(p.dim() == 1 for p in no_decay["params"])


def test_training_learns_a_repeating_text():
    corpus = tokenize("abcdefg" * 300, name="abc", source="test")
    cfg = GPTConfig(**{**TINY, "vocab_size": corpus.vocab_size})
    tc = GPTTrain(batch_size=8, lr=1e-2, min_lr=1e-3, warmup_steps=5)
    model, hist = train_gpt(cfg, corpus, 60, tc, seed=0)
    assert hist[0]["train_loss"] > 1.8  # about ln 7 at the start
    assert hist[-1]["val_loss"] < 0.2  # the next letter is determined by the last one
    again, hist2 = train_gpt(cfg, corpus, 60, tc, seed=0)
    assert [r["train_loss"] for r in hist] == [r["train_loss"] for r in hist2]  # deterministic


def test_train_step_is_adamw_on_the_batch_loss():
    model = build_gpt(GPTConfig(**TINY), seed=0).double()
    twin = build_gpt(GPTConfig(**TINY), seed=0).double()
    x = torch.randint(11, (4, 8), generator=torch.Generator().manual_seed(2))
    y = torch.randint(11, (4, 8), generator=torch.Generator().manual_seed(3))
    opt = make_optimizer(model, GPTTrain(grad_clip=0.0))
    loss = train_step(model, opt, x, y, lr=0.01, grad_clip=0.0)
    ref = F.cross_entropy(twin(x).flatten(0, 1), y.flatten())
    ref.backward()
    assert loss == pytest.approx(float(ref.detach()), abs=1e-12)
    # AdamW's first step: p - lr * (wd * p) - lr * g / (|g| + eps), decay on matrices only
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        wd = 0.1 if q.dim() == 2 else 0.0
        expect = q.detach() * (1 - 0.01 * wd) - 0.01 * q.grad / (q.grad.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), expect, rtol=0, atol=1e-9, msg=name)


def test_evaluate_is_the_mean_over_every_token():
    model = build_gpt(GPTConfig(**TINY), seed=1).requires_grad_(False)
    ids = torch.randint(11, (45,), generator=torch.Generator().manual_seed(4))
    total, count = 0.0, 0
    for s in range(0, 44, 8):  # windows of 8, the last one shorter (4 tokens)
        x, y = ids[s:min(s + 8, 44)], ids[s + 1:min(s + 9, 45)]
        logp = torch.log_softmax(model(x[None]).double(), -1)[0]
        total -= float(logp[torch.arange(len(y)), y].sum())
        count += len(y)
    assert count == 44
    assert evaluate_gpt(model, ids, 8, batch_size=2) == pytest.approx(total / count, rel=1e-6)
    assert evaluate_gpt(model, ids, 8, max_windows=6) == pytest.approx(total / count, rel=1e-6)
    # 2 of 6 windows, spread out: the windows starting at 0 and 24
    want = 0.0
    for s in (0, 24):
        logp = torch.log_softmax(model(ids[None, s:s + 8]).double(), -1)[0]
        want -= float(logp[torch.arange(8), ids[s + 1:s + 9]].sum())
    assert evaluate_gpt(model, ids, 8, max_windows=2) == pytest.approx(want / 16, rel=1e-6)


def test_generate_shape_and_seed():
    model = build_gpt(GPTConfig(**TINY), seed=1)
    start = torch.zeros(2, 1, dtype=torch.long)
    a = model.generate(start, 12, top_k=5, generator=torch.Generator().manual_seed(0))
    b = model.generate(start, 12, top_k=5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 13) and torch.equal(a, b) and int(a.max()) < 11
