"""The model zoo (tests/zoo.py): every model of issue 28's reach list builds, runs, is the model
its name says (parameter counts against torchvision's published numbers and against the
arithmetic of the small configs) and is reproducible from its seed."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("timm")
pytest.importorskip("transformers")

from tests import zoo  # noqa: E402  (after the importorskips)

pytestmark = pytest.mark.usefixtures("one_thread")

OUT_SHAPE = {name: (1, 1000) for name in zoo.BUILDERS if name.split(".")[0] in ("torchvision",
                                                                              "timm")}
OUT_SHAPE.update({
    "hf.GPT2LMHeadModel": (1, 8, zoo.VOCAB),
    "hf.LlamaForCausalLM": (1, 8, zoo.VOCAB),
    "hf.BertForSequenceClassification": (1, 3),
    "hf.ViTForImageClassification": (1, 10),
    "torch.TransformerEncoder": (1, 8, 32),
    "nanogpt": (1, 8, zoo.VOCAB),
})


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


def forward(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return zoo.output_tensor(model(*inputs))


def test_the_zoo_is_the_reach_list():
    assert set(OUT_SHAPE) == set(zoo.BUILDERS) and len(zoo.BUILDERS) == 23
    with pytest.raises(KeyError, match="choose one of"):
        zoo.build("torchvision.resnet19")


def published_params(name) -> int | None:
    """torchvision's documented parameter count of a torchvision model (its weights' meta)."""
    if not name.startswith("torchvision."):
        return None
    import torchvision

    arch = name.split(".", 1)[1]
    published = list(torchvision.models.get_model_weights(arch))[0].meta["num_params"]
    if arch == "vit_b_16":  # position embeddings for 2x2 + 1 tokens instead of 14x14 + 1
        published -= (14 * 14 - 2 * 2) * 768
    return published


@pytest.mark.parametrize("name", list(zoo.BUILDERS))
def test_builds_and_runs_reproducibly(name):
    model, inputs = zoo.build(name, seed=0)
    assert not model.training and isinstance(inputs, tuple)
    out = forward(model, inputs)
    assert tuple(out.shape) == OUT_SHAPE[name]
    assert torch.isfinite(out).all()
    again = forward(*zoo.build(name, seed=0))
    assert torch.equal(out, again)
    other_model, other_inputs = zoo.build(name, seed=1)
    other = forward(other_model, other_inputs)
    assert (out - other).abs().max() > 1e-2 * out.abs().max()
    if (published := published_params(name)) is not None:  # the model its name says
        assert n_params(other_model) == published


def test_small_config_parameter_counts_match_their_arithmetic():
    C, V, L, I = 32, zoo.VOCAB, 2, 64  # width, vocabulary, layers, FFN width
    ln = 2 * C  # a LayerNorm with bias
    # nanoGPT: tied head, FFN 4C, position table of 32
    block = ln + (C * 3 * C + 3 * C) + (C * C + C) + ln + (C * 4 * C + 4 * C) + (4 * C * C + C)
    assert n_params(zoo.build("nanogpt", informative=False)[0]) == V * C + 32 * C + L * block + ln
    # GPT-2: the same shape with FFN 64
    block = ln + (C * 3 * C + 3 * C) + (C * C + C) + ln + (C * I + I) + (I * C + C)
    assert n_params(zoo.build("hf.GPT2LMHeadModel")[0]) == V * C + 32 * C + L * block + ln
    # Llama: 4 query heads of 8, 2 kv heads, no biases, RMSNorm weights only, SwiGLU, untied head
    hd, kv = C // 4, 2
    block = C + (C * C) + 2 * (C * kv * hd) + (C * C) + C + 3 * (C * I)
    assert n_params(zoo.build("hf.LlamaForCausalLM")[0]) == V * C + L * block + C + V * C
    # nn.TransformerEncoder: in_proj 3C x C with bias, out_proj, FFN, two LayerNorms
    layer = (3 * C * C + 3 * C) + (C * C + C) + (C * I + I) + (I * C + C) + 2 * ln
    assert n_params(zoo.build("torch.TransformerEncoder")[0]) == L * layer


def test_nanogpt_is_causal():
    model, (idx,) = zoo.build("nanogpt")
    changed = idx.clone()
    changed[0, 5:] = (changed[0, 5:] + 1) % zoo.VOCAB
    a, b = forward(model, (idx,)), forward(model, (changed,))
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=1e-6)
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-4


def _zero_one_unit(name, model):
    """Zero one hidden unit deep inside the model (as an exactness test's mask would)."""
    with torch.no_grad():
        if name == "torchvision.convnext_tiny":  # first block's FFN, unit 0
            fc1 = model.features[1][0].block[3]
        elif name == "torchvision.mobilenet_v2":  # last inverted residual's expansion, unit 0
            fc1 = model.features[17].conv[0][0]
        else:  # vit_b_16: first encoder layer's MLP, unit 0
            fc1 = model.encoder.layers[0].mlp[0]
        fc1.weight[0] = 0
        if fc1.bias is not None:
            fc1.bias[0] = 0


@pytest.mark.parametrize(
    "name", ["torchvision.convnext_tiny", "torchvision.mobilenet_v2", "torchvision.vit_b_16"]
)
def test_informative_init_lets_a_hidden_unit_show_in_the_output(name):
    """With the library's init, one unit's removal moves these outputs by less than 1e-5 of
    their size (or they are all zero): an exactness test could not fail on them."""
    changes = {}
    for informative in (False, True):
        model, inputs = zoo.build(name, informative=informative)
        out = forward(model, inputs)
        _zero_one_unit(name, model)
        scale = out.abs().max()
        changes[informative] = float((forward(model, inputs) - out).abs().max() / scale) \
            if scale > 0 else 0.0
    assert changes[False] < 1e-5
    assert changes[True] > 1e-4


def test_small_configs_take_size_overrides_for_exactness_references():
    C, V, I, hd = 16, zoo.VOCAB, 24, 8  # Llama at width 16: 2 query heads, 1 kv head, FFN 24
    model, (idx,) = zoo.build_hf_llama(0, hidden_size=C, intermediate_size=I,
                                       num_attention_heads=2, num_key_value_heads=1, head_dim=hd)
    block = C + C * 2 * hd + 2 * (C * hd) + 2 * hd * C + C + 3 * (C * I)
    assert n_params(model) == V * C + 2 * block + C + V * C
    assert forward(model, (idx,)).shape == (1, 8, V)
    enc, (x,) = zoo.build_torch_transformer_encoder(0, d_model=16, nhead=2, dim_feedforward=8)
    assert x.shape == (1, 8, 16) and forward(enc, (x,)).shape == (1, 8, 16)
    gpt, _ = zoo.build_nanogpt(0, n_embd=16, n_head=2)
    assert gpt.transformer.h[0].mlp.c_fc.out_features == 64
