"""WidthCallback + WidthTrainer with the real Hugging Face Trainer, a tiny Llama, Shakespeare."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    TrainerCallback,
    TrainingArguments,
)

from widthlab.integrations.transformers import (  # noqa: E402
    WidthCallback,
    WidthTrainer,
    load_sized,
    save_sized,
)
from widthlab.nn.surgery import model_gates  # noqa: E402

pytestmark = [pytest.mark.realdata, pytest.mark.usefixtures("one_thread")]
SEQ, INTER = 32, 48


def data(vocab: int, n: int = 48):
    from widthlab.data import load_text

    ids = load_text("shakespeare").train[: n * SEQ].view(n, SEQ)
    return [{"input_ids": r, "labels": r} for r in ids], vocab


def build(layers: int = 2) -> LlamaForCausalLM:
    from widthlab.data import load_text

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=load_text("shakespeare").vocab_size, hidden_size=32,
                      intermediate_size=INTER, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=SEQ, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def trainer(model, out, cb, steps=12, save_steps=None):
    ds, _ = data(model.config.vocab_size)
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8,
                             learning_rate=0.03, lr_scheduler_type="linear", logging_steps=1,
                             report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
                             save_strategy="steps" if save_steps else "no",
                             save_steps=save_steps or 500, dataloader_num_workers=0)
    return WidthTrainer(model=model, args=args, train_dataset=ds, callbacks=[cb])


def cb():
    return WidthCallback(ffn="all", price=3e-4, init=0.1, every_n_steps=4)


def test_shrinks_ffn_units_logs_and_saves_pretrained(real_cache, tmp_path):
    model = build(layers=1)
    c = cb()
    t = trainer(model, tmp_path / "run", c)
    t.train()
    mlp = model.model.layers[0].mlp
    width = c.widths()["model.layers.0.mlp"]
    assert len(c.sizer.history) == 3 and width < INTER
    assert all(sum(h["removed"].values()) > 0 for h in c.sizer.history[1:])
    assert mlp.gate_proj.out_features == mlp.up_proj.out_features == width
    assert mlp.down_proj.in_features == width
    assert model.config.intermediate_size == width
    logged = [r for r in t.state.log_history if "width/model.layers.0.mlp" in r]
    assert logged[-1]["width/model.layers.0.mlp"] == width and "width/penalty" in logged[-1]
    x = torch.arange(20).view(1, 20) % model.config.vocab_size
    model.eval()
    with torch.no_grad():
        gated = model(x).logits
    save_sized(model, c, str(tmp_path / "sized"))
    with torch.no_grad():
        folded = model(x).logits
        loaded = LlamaForCausalLM.from_pretrained(str(tmp_path / "sized")).eval()(x).logits
    assert torch.allclose(folded, gated, atol=1e-5, rtol=0)
    assert torch.equal(loaded, folded)


def test_resume_after_shrink_equals_uninterrupted(real_cache, tmp_path):
    full = build()
    trainer(full, tmp_path / "a", cb(), save_steps=4).train()
    ckpt = tmp_path / "a" / "checkpoint-4"
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "model.safetensors"))  # shrunk at step 4, then saved
    assert saved["model.layers.0.mlp.up_proj.weight"].shape[0] < INTER
    resumed, c = build(), cb()
    trainer(resumed, tmp_path / "b", c).train(resume_from_checkpoint=str(ckpt))
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    assert len(c.sizer.history) == 2  # steps 8 and 12 after the resume
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a model whose layers differ in width loads with the documented loader
    x = torch.arange(20).view(1, 20) % full.config.vocab_size
    save_sized(resumed, c, str(tmp_path / "sized"))
    with torch.no_grad():
        assert torch.equal(load_sized(LlamaForCausalLM, str(tmp_path / "sized"))(x).logits,
                           resumed.eval()(x).logits)


class Mask(TrainerCallback):
    """The reference: instead of removing the units the callback would remove at step k,
    multiply their gate's output by 0 from then on (dead: ``g <= 0``, computed here)."""

    def __init__(self, every: int) -> None:
        self.every, self.masks = every, {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every:
            return
        for gate in model_gates(model):
            dead = gate.gate.detach() <= 0
            if gate.key in self.masks:
                dead |= self.masks[gate.key] == 0
            else:
                gate.register_forward_hook(lambda m, a, out: out * self.masks[m.key])
            self.masks[gate.key] = (~dead).to(gate.gate.dtype)


def test_training_after_each_shrink_equals_masking(real_cache, tmp_path):
    shrunk, masked = build(), build()
    c = cb()
    t1 = trainer(shrunk, tmp_path / "a", c)
    t1.train()
    ref = WidthCallback(ffn="all", price=3e-4, init=0.1, every_n_steps=None)
    t2 = trainer(masked, tmp_path / "b", ref)
    t2.add_callback(Mask(4))
    t2.train()
    assert sum(sum(h["removed"].values()) for h in c.sizer.history) > 0
    kept = {k: int(m.sum()) for k, m in t2.callback_handler.callbacks[-1].masks.items()}
    assert kept == c.widths()
    losses = [[r["loss"] for r in t.state.log_history if "loss" in r] for t in (t1, t2)]
    assert len(losses[0]) == 12
    assert torch.allclose(torch.tensor(losses[0]), torch.tensor(losses[1]), atol=1e-5, rtol=0)


def test_gpt2_conv1d_ffn_resumes_and_loads_with_tied_embeddings(real_cache, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from widthlab.data import load_text

    def gpt2():
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=load_text("shakespeare").vocab_size, n_embd=32, n_layer=2, n_head=4,
            n_positions=SEQ, n_inner=INTER, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))

    full, c = gpt2(), cb()
    trainer(full, tmp_path / "a", c, steps=8, save_steps=4).train()
    assert full.transformer.h[0].mlp.c_fc.nf < INTER  # Conv1D sized through the units core
    resumed = gpt2()
    trainer(resumed, tmp_path / "b", cb(), steps=8).train(
        resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-4"))
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.arange(20).view(1, 20) % full.config.vocab_size
    save_sized(full, c, str(tmp_path / "sized"))  # lm_head is tied: not in the file
    with torch.no_grad():
        assert torch.equal(load_sized(GPT2LMHeadModel, str(tmp_path / "sized"))(x).logits,
                           full.eval()(x).logits)


def test_hard_concrete_gates_resume_with_their_noise(real_cache, tmp_path):
    def hc():
        return WidthCallback(ffn="all", kind="hard_concrete", price=0.003, init=-2.38,
                             every_n_steps=4, seed=1)

    full, c = build(), hc()
    trainer(full, tmp_path / "a", c, steps=8, save_steps=4).train()
    assert c.sizer.history[0]["widths"]["model.layers.0.mlp"] < INTER  # shrunk at step 4
    resumed = build()
    trainer(resumed, tmp_path / "b", hc(), steps=8).train(
        resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-4"))
    a, b = full.state_dict(), resumed.state_dict()
    assert any(k.endswith("noise_state") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_price_counts_once_per_step_under_gradient_accumulation(real_cache, tmp_path):
    """The Trainer does not divide a loss-kwargs model's loss by the accumulation steps (the
    loss is per token of the whole step): the penalty must be divided, or the price is G x."""
    from transformers import Trainer

    model = build(layers=1)
    c = cb()
    t = trainer(model, tmp_path / "run", c)
    assert t.model_accepts_loss_kwargs
    c.sizer.penalty = lambda m: torch.tensor(1.0)
    ds, _ = data(model.config.vocab_size, n=4)
    inputs = {k: torch.stack([r[k] for r in ds]) for k in ("input_ids", "labels")}
    model.train()
    for steps in (1, 2, 4):
        t.current_gradient_accumulation_steps = steps
        n = torch.tensor(4 * (SEQ - 1) * steps)
        priced = t.compute_loss(model, inputs, num_items_in_batch=n)
        plain = Trainer.compute_loss(t, model, inputs, num_items_in_batch=n)
        assert float(priced - plain) == pytest.approx(1.0 / steps)
    plain_mean = Trainer.compute_loss(t, model, inputs)  # no item count: the Trainer divides
    assert float(t.compute_loss(model, inputs) - plain_mean) == pytest.approx(1.0)
