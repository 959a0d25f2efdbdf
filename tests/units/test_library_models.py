"""Library models (Hugging Face transformers, torchvision) through the units core, from tiny
configs: shrunk models equal the same class built at the smaller config (the test builds it and
copies the kept slices), their configs state the new sizes, and torchvision's convnets equal
the masked model. Skipped where the libraries are not installed (they are a dev extra)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tests.units.helpers import blocks, half, kept, n_params, zero_inputs
from widthlab.units import build_graph
from widthlab.units.remove import remove_units

pytestmark = pytest.mark.usefixtures("one_thread")


def _import(module: str, attr: str | None = None):
    try:  # PyPI's torchvision is a CUDA build: define its operator schemas first
        from widthlab._compat import ensure_torchvision_importable

        ensure_torchvision_importable()
    except ImportError:
        pass
    try:
        mod = __import__(module, fromlist=["_"])
        if attr is not None:
            getattr(mod, attr)  # transformers imports lazily: fail here, not in the test
        return mod
    except ImportError as e:  # not installed; a broken install fails the test instead
        pytest.skip(f"{module} not importable: {type(e).__name__}")


def _copy(dst, src, *index) -> None:
    out = src
    for dim, idx in enumerate(index):
        if idx is not None:
            out = out.index_select(dim, idx)
    with torch.no_grad():
        dst.copy_(out)


def _shrink_all(model, graph) -> None:
    for g in list(graph.groups):
        remove_units(model, graph, g, half(g.size))


def test_hf_gpt2_conv1d_equals_the_smaller_gpt2_and_reloads(tmp_path):
    tf = _import("transformers", "GPT2LMHeadModel")
    kw = dict(vocab_size=50, n_positions=16, n_layer=2, attn_pdrop=0.0, resid_pdrop=0.0,
              embd_pdrop=0.0)
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=16, n_head=4, n_inner=32, **kw)).eval()
    x = torch.randint(0, 50, (2, 7))
    graph = build_graph(model, x, use_cache=False)
    assert sorted((g.kind, g.size) for g in graph.groups) == [
        ("ffn", 32), ("ffn", 32), ("heads", 4), ("heads", 4), ("stream", 16)]
    original = tf.GPT2LMHeadModel(model.config).eval()
    original.load_state_dict(model.state_dict())
    _shrink_all(model, graph)
    c = model.config
    assert (c.n_embd, c.n_head, c.n_inner) == (8, 2, 16)
    ref = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=8, n_head=2, n_inner=16, **kw)).eval()
    ks, kf, kh = kept(16, half(16)), kept(32, half(32)), half(4)
    kh = [h for h in range(4) if h not in kh]
    rows = torch.tensor([p * 16 + i for p in range(3) for i in blocks(kh, 4)])
    t, r = original.transformer, ref.transformer
    _copy(r.wte.weight, t.wte.weight, None, ks)
    _copy(r.wpe.weight, t.wpe.weight, None, ks)
    _copy(r.ln_f.weight, t.ln_f.weight, ks)
    _copy(r.ln_f.bias, t.ln_f.bias, ks)
    for a, b in zip(r.h, t.h, strict=True):
        for ln in ("ln_1", "ln_2"):
            _copy(getattr(a, ln).weight, getattr(b, ln).weight, ks)
            _copy(getattr(a, ln).bias, getattr(b, ln).bias, ks)
        _copy(a.attn.c_attn.weight, b.attn.c_attn.weight, ks, rows)  # Conv1D: (in, out)
        _copy(a.attn.c_attn.bias, b.attn.c_attn.bias, rows)
        _copy(a.attn.c_proj.weight, b.attn.c_proj.weight, torch.tensor(blocks(kh, 4)), ks)
        _copy(a.attn.c_proj.bias, b.attn.c_proj.bias, ks)
        _copy(a.mlp.c_fc.weight, b.mlp.c_fc.weight, ks, kf)
        _copy(a.mlp.c_fc.bias, b.mlp.c_fc.bias, kf)
        _copy(a.mlp.c_proj.weight, b.mlp.c_proj.weight, kf, ks)
        _copy(a.mlp.c_proj.bias, b.mlp.c_proj.bias, ks)
    assert n_params(model) == n_params(ref)
    assert_close(model(x).logits, ref(x).logits, atol=1e-5, rtol=0)
    model.save_pretrained(tmp_path)
    again = tf.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert_close(again(x).logits, ref(x).logits, atol=1e-5, rtol=0)


def test_hf_llama_grouped_kv_heads_equal_the_smaller_llama():
    tf = _import("transformers", "LlamaForCausalLM")
    kw = dict(vocab_size=50, num_hidden_layers=2, head_dim=4, max_position_embeddings=32)
    torch.manual_seed(1)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(
        hidden_size=16, intermediate_size=24, num_attention_heads=4, num_key_value_heads=2,
        **kw)).eval()
    x = torch.randint(0, 50, (2, 6))
    graph = build_graph(model, x, use_cache=False)
    assert sorted((g.kind, g.size) for g in graph.groups) == [
        ("ffn", 24), ("ffn", 24), ("heads", 2), ("heads", 2), ("stream", 16)]
    original = tf.LlamaForCausalLM(model.config).eval()
    original.load_state_dict(model.state_dict())
    _shrink_all(model, graph)
    c = model.config
    assert (c.hidden_size, c.intermediate_size, c.num_attention_heads,
            c.num_key_value_heads) == (8, 12, 2, 1)
    ref = tf.LlamaForCausalLM(tf.LlamaConfig(
        hidden_size=8, intermediate_size=12, num_attention_heads=2, num_key_value_heads=1,
        **kw)).eval()
    ks, kf = kept(16, half(16)), kept(24, half(24))
    q, kv = torch.arange(8, 16), torch.arange(4, 8)  # kv head 1 serves query heads 2 and 3
    m, o = ref.model, original.model
    _copy(m.embed_tokens.weight, o.embed_tokens.weight, None, ks)
    _copy(m.norm.weight, o.norm.weight, ks)
    _copy(ref.lm_head.weight, original.lm_head.weight, None, ks)
    for a, b in zip(m.layers, o.layers, strict=True):
        _copy(a.input_layernorm.weight, b.input_layernorm.weight, ks)
        _copy(a.post_attention_layernorm.weight, b.post_attention_layernorm.weight, ks)
        _copy(a.self_attn.q_proj.weight, b.self_attn.q_proj.weight, q, ks)
        _copy(a.self_attn.k_proj.weight, b.self_attn.k_proj.weight, kv, ks)
        _copy(a.self_attn.v_proj.weight, b.self_attn.v_proj.weight, kv, ks)
        _copy(a.self_attn.o_proj.weight, b.self_attn.o_proj.weight, ks, q)
        for p in ("gate_proj", "up_proj"):
            _copy(getattr(a.mlp, p).weight, getattr(b.mlp, p).weight, kf, ks)
        _copy(a.mlp.down_proj.weight, b.mlp.down_proj.weight, ks, kf)
    assert n_params(model) == n_params(ref)
    assert_close(model(x).logits, ref(x).logits, atol=1e-5, rtol=0)


def _expected_params(model, halved_in, halved_out) -> int:
    """Parameter count once every group lost half its units: a weight's count halves per
    halved side (the test knows which sides: the stem reads 3 image channels, fc's outputs
    are the classes)."""
    total = 0
    for name, p in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        f = 1.0
        if p.ndim >= 2:
            f *= 0.5 if module in halved_in else 1.0
            f *= 0.5 if module in halved_out else 1.0
        else:
            f *= 0.5 if module in halved_out else 1.0
        total += int(p.numel() * f)
    return total


def test_torchvision_resnet18_every_group_halved_equals_the_masked_model():
    tv = _import("torchvision.models")
    torch.manual_seed(2)
    model, x = tv.resnet18(num_classes=10).eval(), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.weight.normal_()
                m.bias.normal_()
    graph = build_graph(model, x)
    kinds = sorted((g.kind, g.size) for g in graph.groups)
    assert kinds == sorted([("stream", 64), ("stream", 128), ("stream", 256), ("stream", 512)]
                           + [("channels", w) for w in (64, 64, 128, 128, 256, 256, 512, 512)])
    consumers = []
    layers = [model.layer1, model.layer2, model.layer3, model.layer4]
    for i, layer in enumerate(layers):
        w = layer[0].conv2.out_channels
        # stage i's stream is read by its blocks' conv1 (block 0 of a later stage reads the
        # stage before), by the next stage's first block and downsample, or by fc
        names = [f"layer{i + 1}.{b}.conv1" for b in range(2) if b == 1 or i == 0]
        if i + 1 < 4:
            names += [f"layer{i + 2}.0.conv1", f"layer{i + 2}.0.downsample.0"]
        else:
            names += ["fc"]
        consumers += [(n, 1, half(w)) for n in names]
        consumers += [(f"layer{i + 1}.{b}.conv2", 1, half(w)) for b in range(2)]
    masked = zero_inputs(model, consumers)
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    expected = _expected_params(model, set(convs[1:]) | {"fc"}, set(convs) | set(bns))
    _shrink_all(model, graph)
    assert n_params(model) == expected
    assert_close(model(x), masked(x), atol=1e-5, rtol=0)


def test_torchvision_mobilenet_v2_depthwise_groups_halve():
    tv = _import("torchvision.models")
    torch.manual_seed(3)
    model, x = tv.mobilenet_v2(num_classes=10).eval(), torch.randn(1, 3, 32, 32)
    graph = build_graph(model, x)
    assert {g.kind for g in graph.groups} == {"stream", "channels"}
    before = n_params(model)
    out = model(x)
    _shrink_all(model, graph)
    dw = model.features[2].conv[1][0]
    assert dw.groups == dw.in_channels == dw.out_channels == 48
    assert model(x).shape == out.shape
    assert n_params(model) < before / 2.5


@pytest.mark.parametrize("name", ["BertForSequenceClassification", "ViTForImageClassification"])
def test_hf_bert_and_vit_configs_rebuild_the_cut_model(name):
    tf = _import("transformers", name)
    torch.manual_seed(4)
    kw = dict(hidden_size=16, intermediate_size=24, num_attention_heads=4, num_hidden_layers=2)
    if name.startswith("Bert"):
        config, x = tf.BertConfig(vocab_size=30, num_labels=3, **kw), torch.randint(0, 30, (2, 5))
    else:
        config = tf.ViTConfig(image_size=8, patch_size=4, num_labels=3, **kw)
        x = torch.randn(2, 3, 8, 8)
    model = getattr(tf, name)(config).eval()
    graph = build_graph(model, x)
    remove_units(model, graph, {g: half(g.size) for g in graph.groups
                                if g.kind in ("heads", "stream")})
    for g in graph.groups:
        if g.kind not in ("heads", "stream"):
            remove_units(model, graph, g, half(g.size))
    c = model.config
    assert (c.hidden_size, c.intermediate_size, c.num_attention_heads) == (8, 12, 2)
    again = getattr(tf, name)(c).eval()
    again.load_state_dict(model.state_dict(), strict=True)
    assert_close(again(x).logits, model(x).logits, atol=1e-6, rtol=0)
