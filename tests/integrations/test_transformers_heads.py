"""WidthCallback(heads=True): whole attention heads of a tiny Llama sized inside the real HF
Trainer on Shakespeare (units-core "heads" groups, traced once on the first batch)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import LlamaForCausalLM, TrainerCallback  # noqa: E402

from widthlab.errors import UsageError  # noqa: E402
from widthlab.integrations.transformers import WidthCallback, load_sized, save_sized  # noqa: E402
from widthlab.nn.surgery import model_gates  # noqa: E402

from .test_transformers import build, trainer  # noqa: E402

pytestmark = [pytest.mark.realdata, pytest.mark.usefixtures("one_thread")]
H0, H1 = "model.layers.0.self_attn:heads", "model.layers.1.self_attn:heads"


class Kill(TrainerCallback):
    """Before the first step, close key/value head 0 (with its 2 query heads) of ``layers``."""

    def __init__(self, layers) -> None:
        self.layers = layers

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            for g in model_gates(model):
                if g.key in self.layers:
                    g.gate[0] = -1.0


def cb(ffn=False, every=4, price=3e-4, init=0.1):
    return WidthCallback(ffn=ffn, heads=True, price=price, init=init, every_n_steps=every)


def run(model, out, c, kill, **kw):
    t = trainer(model, out, c, **kw)
    if kill:
        t.add_callback(Kill(kill))
    t.train()
    return t


def losses(t):
    return torch.tensor([r["loss"] for r in t.state.log_history if "loss" in r])


def llama(kv: int):
    model = build()
    if kv == 2:
        return model
    from transformers import LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(**{**model.config.to_dict(), "num_key_value_heads": kv})
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("kv", [2, 4])
def test_dead_heads_removed_training_equals_masked_and_from_pretrained(real_cache, tmp_path, kv):
    shrunk, masked = llama(kv), llama(kv)
    assert shrunk.config.num_key_value_heads == kv
    q_left = 16 if kv == 2 else 24  # a unit: a key/value head with its 4 // kv query heads
    # open gates at 1 (Adam moves them ~lr = 0.03 a step): only the closed heads die, so the
    # layers keep agreeing and the config can state the head counts
    c = cb(price=1e-4, init=1.0)
    t1 = run(shrunk, tmp_path / "a", c, [H0, H1])
    # the reference: the same run, nothing removed; a gate at -1 has relu(g) = 0 and no gradient
    t2 = run(masked, tmp_path / "b", cb(every=None, price=1e-4, init=1.0), [H0, H1])
    assert c.sizer.history[0]["removed"] == {H0: 1, H1: 1}  # at step 4
    assert [sum(h["removed"].values()) for h in c.sizer.history[1:]] == [0, 0]
    assert len(losses(t1)) == 12
    assert torch.allclose(losses(t1), losses(t2), atol=1e-5, rtol=0)
    attn = shrunk.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features) == (
        q_left, 8 * (kv - 1), 8 * (kv - 1))  # head_dim 8
    assert attn.o_proj.in_features == q_left and shrunk.config.hidden_size == 32
    assert (shrunk.config.num_attention_heads, shrunk.config.num_key_value_heads) == (
        q_left // 8, kv - 1)
    assert masked.model.layers[0].self_attn.q_proj.out_features == 32
    last = [r for r in t1.state.log_history if "loss" in r][-1]
    assert last["width/heads/model.layers.0.self_attn"] == q_left // 8
    assert last[f"width/{H1}"] == kv - 1
    assert "width/penalty" in last
    x = torch.arange(20).view(1, 20) % shrunk.config.vocab_size
    shrunk.eval()
    masked.eval()
    with torch.no_grad():
        gated, ref = shrunk(x).logits, masked(x).logits
        save_sized(shrunk, c, str(tmp_path / "sized"))
        folded = shrunk(x).logits
        if kv == 2:  # 2 query heads: the config states the new counts
            loaded = LlamaForCausalLM.from_pretrained(str(tmp_path / "sized")).eval()(x).logits
        else:  # 3 query heads do not divide hidden_size 32: HF refuses such a config
            loaded = load_sized(LlamaForCausalLM, str(tmp_path / "sized"))(x).logits
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(str(tmp_path / "sized"))
    assert (saved.num_attention_heads, saved.num_key_value_heads) == (
        (2, 1) if kv == 2 else (4, 4))
    assert (shrunk.config.num_attention_heads, shrunk.config.num_key_value_heads) == (
        q_left // 8, kv - 1)  # the model's own config is left as it was
    assert not model_gates(shrunk)
    # equal up to float32 rounding: the shrunk model's smaller GEMMs round differently, and
    # 12 Adam steps carry that along (1.1e-5 on logits of about 3 on an AMD EPYC)
    assert torch.allclose(gated, ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(folded, gated, atol=1e-5, rtol=0)
    assert torch.equal(loaded, folded)


def test_resume_after_head_shrink_equals_uninterrupted(real_cache, tmp_path):
    full, c = build(), cb(ffn="all")
    run(full, tmp_path / "a", c, [H0], steps=8, save_steps=4)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "a" / "checkpoint-4" / "model.safetensors"))
    assert saved["model.layers.0.self_attn.q_proj.weight"].shape[0] == 16  # shrunk, then saved
    assert saved["model.layers.1.self_attn.q_proj.weight"].shape[0] == 32
    assert any(r["removed"].get(k, 0) for r in c.sizer.history for k in r["removed"]
               if k.endswith(":out"))  # FFN units went too
    resumed = build()
    trainer(resumed, tmp_path / "b", cb(ffn="all"), steps=8).train(
        resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-4"))
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = torch.arange(20).view(1, 20) % full.config.vocab_size
    with torch.no_grad():
        ref = full.eval()(x).logits
        save_sized(full, c, str(tmp_path / "sized"))  # layers differ: the documented loader
        loaded = load_sized(LlamaForCausalLM, str(tmp_path / "sized"))(x).logits
    assert torch.allclose(loaded, ref, atol=1e-5, rtol=0)
    assert torch.equal(loaded, full(x).logits)


def test_heads_option_errors():
    with pytest.raises(UsageError, match="heads= or groups="):
        WidthCallback(heads=True, groups=["x"])
    model = build(layers=1)
    with pytest.raises(UsageError, match="no attention-head or FFN group"):
        WidthCallback(ffn=False, heads=["model.layers.7.self_attn"]).gate(
            model, torch.zeros(1, 4, dtype=torch.long))
    assert not model_gates(model)


def test_hard_concrete_heads_resume_with_their_noise(real_cache, tmp_path):
    def hc():
        return WidthCallback(ffn=False, heads=True, kind="hard_concrete", price=0.003,
                             init=-2.38, every_n_steps=4, seed=1)

    full, c = build(), hc()
    trainer(full, tmp_path / "a", c, steps=8, save_steps=4).train()
    assert c.sizer.history[0]["widths"][H0] + c.sizer.history[0]["widths"][H1] < 4
    resumed = build()
    trainer(resumed, tmp_path / "b", hc(), steps=8).train(
        resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-4"))
    a, b = full.state_dict(), resumed.state_dict()
    assert any(k.endswith("noise_state") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gpt2_fused_attention_heads_shrink_and_load(real_cache, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from widthlab.data import load_text

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=load_text("shakespeare").vocab_size, n_embd=32, n_layer=2, n_head=4,
        n_positions=32, n_inner=48, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))
    keys = ["transformer.h.0.attn:heads", "transformer.h.1.attn:heads"]
    c = cb(init=1.0)
    run(model, tmp_path / "a", c, keys, steps=4)
    assert c.sizer.history[0]["removed"] == dict.fromkeys(keys, 1)
    assert model.transformer.h[0].attn.c_attn.weight.shape == (32, 72)  # 3 heads of 8, fused
    x = torch.arange(20).view(1, 20) % model.config.vocab_size
    with torch.no_grad():
        gated = model.eval()(x).logits
        save_sized(model, c, str(tmp_path / "sized"))  # 3 heads do not divide 32
        loaded = load_sized(GPT2LMHeadModel, str(tmp_path / "sized"))(x).logits
    assert torch.allclose(loaded, gated, atol=1e-5, rtol=0)
    assert torch.equal(loaded, model(x).logits)
