"""Transformers shrunk by the units core equal the same class built at the smaller config with
the kept slices copied in by the test (the reference is not built by widthlab)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from tests.units.helpers import blocks, half, kept, n_params
from tests.units.models import GPT, GPTConfig, LlamaConfig, LlamaLike, NanoGPT, ViTish
from widthlab.errors import UsageError
from widthlab.units import build_graph
from widthlab.units.remove import remove_units

pytestmark = pytest.mark.usefixtures("one_thread")


def _units(graph, group: str, module: str, name: str, dim: int) -> list[int]:
    s = next(s for s in graph[group].slices if (s.module, s.name, s.dim) == (module, name, dim))
    return s.units.tolist()


def _cut_coupled(model, graph) -> None:
    """Half of every group; the stream and the heads in one call (their code reads the head
    width off the stream: k heads go with k * head_dim stream units)."""
    coupled = {g: half(g.size) for g in graph.groups if g.kind in ("stream", "heads")}
    remove_units(model, graph, coupled)
    for g in graph.groups:
        if g.kind not in ("stream", "heads"):
            remove_units(model, graph, g, half(g.size))


def _copy(dst: torch.Tensor, src: torch.Tensor, *index) -> None:
    out = src
    for dim, idx in enumerate(index):
        if idx is not None:
            out = out.index_select(dim, idx)
    with torch.no_grad():
        dst.copy_(out)


def test_gpt_groups_and_shrink_equal_the_smaller_gpt():
    torch.manual_seed(0)
    c = GPTConfig()
    model, x = GPT(c).eval(), torch.randint(0, c.vocab_size, (2, 9))
    graph = build_graph(model, x)
    names = [g.name for g in graph.groups]
    assert sorted(names) == sorted(["stream:model"] + [f"transformer.h.{i}.attn:heads"
                                                       for i in range(2)]
                                   + [f"transformer.h.{i}.mlp.c_fc:out" for i in range(2)])
    kinds = {g.name: (g.kind, g.size, g.unit_width) for g in graph.groups}
    assert kinds["stream:model"] == ("stream", 16, 1)
    assert kinds["transformer.h.0.attn:heads"] == ("heads", 4, 3 * 6)
    assert graph["transformer.h.0.attn:heads"].head_dim == 6
    assert kinds["transformer.h.1.mlp.c_fc:out"] == ("ffn", 32, 1)
    # the unit order the test relies on: heads, channels and features in index order
    inner = c.n_head * c.head_dim
    assert _units(graph, "transformer.h.0.attn:heads", "transformer.h.0.attn.c_attn", "weight",
                  0) == [i // c.head_dim % c.n_head for i in range(3 * inner)]
    assert _units(graph, "stream:model", "transformer.wte", "weight", 1) == list(range(16))
    assert "layer_norm in transformer.h.0.ln_1" in graph["stream:model"].mixers
    original = GPT(c).eval()
    original.load_state_dict(model.state_dict())
    for g in list(graph.groups):
        remove_units(model, graph, g, half(g.size))
    small = GPTConfig(n_head=2, n_embd=8, n_inner=16)
    ref = GPT(small).eval()
    ks, kf, kh = kept(16, half(16)), kept(32, half(32)), kept(4, half(4))
    rows = torch.tensor([part * inner + i for part in range(3) for i in blocks(kh, 6)])
    cols = torch.tensor(blocks(kh, 6))
    t, r = original.transformer, ref.transformer
    _copy(r.wte.weight, t.wte.weight, None, ks)
    _copy(r.wpe.weight, t.wpe.weight, None, ks)
    for ln in ("ln_f",):
        _copy(getattr(r, ln).weight, getattr(t, ln).weight, ks)
        _copy(getattr(r, ln).bias, getattr(t, ln).bias, ks)
    for a, b in zip(r.h, t.h, strict=True):
        for ln in ("ln_1", "ln_2"):
            _copy(getattr(a, ln).weight, getattr(b, ln).weight, ks)
            _copy(getattr(a, ln).bias, getattr(b, ln).bias, ks)
        _copy(a.attn.c_attn.weight, b.attn.c_attn.weight, rows, ks)
        _copy(a.attn.c_attn.bias, b.attn.c_attn.bias, rows)
        _copy(a.attn.c_proj.weight, b.attn.c_proj.weight, ks, cols)
        _copy(a.attn.c_proj.bias, b.attn.c_proj.bias, ks)
        _copy(a.mlp.c_fc.weight, b.mlp.c_fc.weight, kf, ks)
        _copy(a.mlp.c_fc.bias, b.mlp.c_fc.bias, kf)
        _copy(a.mlp.c_proj.weight, b.mlp.c_proj.weight, ks, kf)
        _copy(a.mlp.c_proj.bias, b.mlp.c_proj.bias, ks)
    assert model.transformer.h[0].attn.n_head == 2
    assert model.lm_head.weight is model.transformer.wte.weight
    assert n_params(model) == n_params(ref)
    assert_close(model(x), ref(x), atol=1e-5, rtol=0)
    assert {g.name: g.size for g in graph.groups}["transformer.h.0.attn:heads"] == 2


def test_llama_like_gqa_swiglu_equal_the_smaller_model():
    torch.manual_seed(1)
    c = LlamaConfig()
    model, x = LlamaLike(c).eval(), torch.randint(0, c.vocab_size, (2, 7))
    graph = build_graph(model, x)
    kinds = {g.name: (g.kind, g.size) for g in graph.groups}
    assert kinds == {"stream:layers": ("stream", 16),
                     "layers.0.self_attn:heads": ("heads", 2),  # one unit per kv head
                     "layers.1.self_attn:heads": ("heads", 2),
                     "layers.0.mlp.gate_proj:out": ("ffn", 24),
                     "layers.1.mlp.gate_proj:out": ("ffn", 24)}
    # a kv head and the two query heads it serves are one unit; SwiGLU couples gate and up
    assert _units(graph, "layers.0.self_attn:heads", "layers.0.self_attn.q_proj", "weight",
                  0) == [i // 16 for i in range(32)]
    assert _units(graph, "layers.0.mlp.gate_proj:out", "layers.0.mlp.up_proj", "weight",
                  0) == list(range(24))
    original = LlamaLike(c).eval()
    original.load_state_dict(model.state_dict())
    for g in list(graph.groups):
        remove_units(model, graph, g, half(g.size))
    ref = LlamaLike(LlamaConfig(hidden_size=8, intermediate_size=12, num_heads=2,
                                num_kv_heads=1)).eval()
    ks, kf = kept(16, half(16)), kept(24, half(24))
    q, kv = torch.arange(16, 32), torch.arange(8, 16)  # kv head 1 and query heads 2, 3
    _copy(ref.embed_tokens.weight, original.embed_tokens.weight, None, ks)
    _copy(ref.norm.weight, original.norm.weight, ks)
    _copy(ref.lm_head.weight, original.lm_head.weight, None, ks)
    for a, b in zip(ref.layers, original.layers, strict=True):
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
    assert model.layers[0].input_layernorm.normalized_shape == (8,)
    assert_close(model(x), ref(x), atol=1e-5, rtol=0)


class Encoder(nn.Module):
    """Features in, a batch_first nn.TransformerEncoder on a d_model stream, logits out."""

    def __init__(self, d_model: int = 16, nhead: int = 4, ff: int = 24):
        super().__init__()
        self.embed = nn.Linear(6, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)))


def test_transformer_encoder_equal_the_smaller_encoder():
    torch.manual_seed(2)
    model, x = Encoder().eval(), torch.randn(2, 5, 6)
    graph = build_graph(model, x)
    kinds = {g.name: (g.kind, g.size, g.unit_width) for g in graph.groups}
    assert kinds["encoder.layers.0.self_attn:heads"] == ("heads", 4, 12)
    assert graph["encoder.layers.0.self_attn:heads"].head_dim == 4
    assert kinds["encoder.layers.1.linear1:out"] == ("ffn", 24, 1)
    assert [g.kind for g in graph.groups].count("stream") == 1
    stream = next(g for g in graph.groups if g.kind == "stream")
    assert _units(graph, stream.name, "embed", "weight", 0) == list(range(16))
    original = Encoder().eval()
    original.load_state_dict(model.state_dict())
    _cut_coupled(model, graph)
    ref = Encoder(8, 2, 12).eval()
    ks, kf, kh = kept(16, half(16)), kept(24, half(24)), kept(4, half(4))
    rows = torch.tensor([part * 16 + i for part in range(3) for i in blocks(kh, 4)])
    _copy(ref.embed.weight, original.embed.weight, ks)
    _copy(ref.embed.bias, original.embed.bias, ks)
    _copy(ref.head.weight, original.head.weight, None, ks)
    _copy(ref.head.bias, original.head.bias)
    for a, b in zip(ref.encoder.layers, original.encoder.layers, strict=True):
        _copy(a.self_attn.in_proj_weight, b.self_attn.in_proj_weight, rows, ks)
        _copy(a.self_attn.in_proj_bias, b.self_attn.in_proj_bias, rows)
        _copy(a.self_attn.out_proj.weight, b.self_attn.out_proj.weight, ks,
              torch.tensor(blocks(kh, 4)))
        _copy(a.self_attn.out_proj.bias, b.self_attn.out_proj.bias, ks)
        for ln in ("norm1", "norm2"):
            _copy(getattr(a, ln).weight, getattr(b, ln).weight, ks)
            _copy(getattr(a, ln).bias, getattr(b, ln).bias, ks)
        _copy(a.linear1.weight, b.linear1.weight, kf, ks)
        _copy(a.linear1.bias, b.linear1.bias, kf)
        _copy(a.linear2.weight, b.linear2.weight, ks, kf)
        _copy(a.linear2.bias, b.linear2.bias, ks)
    attn = model.encoder.layers[0].self_attn
    assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (8, 2, 4)
    assert n_params(model) == n_params(ref)
    assert_close(model(x), ref(x), atol=1e-5, rtol=0)


def test_nanogpt_heads_and_stream_cut_by_matching_counts_equal_the_smaller_nanogpt():
    """nanoGPT reads the head width off the stream (view(B, T, n_head, C // n_head)): the
    trace cannot see that count, so heads and stream are cut by matching counts (half of
    each); the result is nanoGPT at half the config."""
    torch.manual_seed(3)
    c = GPTConfig(n_embd=16, n_head=4, n_inner=64)
    model, x = NanoGPT(c).eval(), torch.randint(0, c.vocab_size, (2, 9))
    graph = build_graph(model, x)
    assert sorted((g.kind, g.size) for g in graph.groups) == [
        ("ffn", 64), ("ffn", 64), ("heads", 4), ("heads", 4), ("stream", 16)]
    original = NanoGPT(c).eval()
    original.load_state_dict(model.state_dict())
    # one at a time, the head width read off the stream breaks the forward: refused, unchanged
    heads = next(g for g in graph.groups if g.kind == "heads")
    with pytest.raises(UsageError, match="forward fails.*nothing was changed"):
        remove_units(model, graph, heads, half(4))
    assert heads.size == 4 and model.transformer.h[0].attn.n_head == 4
    assert_close(model(x), original(x), atol=0, rtol=0)
    _cut_coupled(model, graph)
    assert (model.transformer.h[0].attn.n_head, model.transformer.h[0].attn.n_embd) == (2, 8)
    ref = NanoGPT(GPTConfig(n_embd=8, n_head=2, n_inner=32)).eval()
    ks, kf, kh = kept(16, half(16)), kept(64, half(64)), kept(4, half(4))
    rows = torch.tensor([part * 16 + i for part in range(3) for i in blocks(kh, 4)])
    t, r = original.transformer, ref.transformer
    _copy(r.wte.weight, t.wte.weight, None, ks)
    _copy(r.wpe.weight, t.wpe.weight, None, ks)
    _copy(r.ln_f.weight, t.ln_f.weight, ks)
    _copy(r.ln_f.bias, t.ln_f.bias, ks)
    for a, b in zip(r.h, t.h, strict=True):
        for ln in ("ln_1", "ln_2"):
            _copy(getattr(a, ln).weight, getattr(b, ln).weight, ks)
            _copy(getattr(a, ln).bias, getattr(b, ln).bias, ks)
        _copy(a.attn.c_attn.weight, b.attn.c_attn.weight, rows, ks)
        _copy(a.attn.c_attn.bias, b.attn.c_attn.bias, rows)
        _copy(a.attn.c_proj.weight, b.attn.c_proj.weight, ks, torch.tensor(blocks(kh, 4)))
        _copy(a.attn.c_proj.bias, b.attn.c_proj.bias, ks)
        _copy(a.mlp.c_fc.weight, b.mlp.c_fc.weight, kf, ks)
        _copy(a.mlp.c_fc.bias, b.mlp.c_fc.bias, kf)
        _copy(a.mlp.c_proj.weight, b.mlp.c_proj.weight, ks, kf)
        _copy(a.mlp.c_proj.bias, b.mlp.c_proj.bias, ks)
    assert n_params(model) == n_params(ref)
    assert_close(model(x), ref(x), atol=1e-5, rtol=0)


def test_vit_positions_are_not_units_and_half_of_everything_is_the_half_vit():
    torch.manual_seed(4)
    model, x = ViTish().eval(), torch.randn(2, 3, 8, 8)
    graph = build_graph(model, x)
    assert sorted((g.kind, g.size) for g in graph.groups) == [
        ("ffn", 32), ("ffn", 32), ("heads", 4), ("heads", 4), ("stream", 16)]
    stream = next(g for g in graph.groups if g.kind == "stream")
    owned = {(s.module, s.name, s.dim) for g in graph.groups for s in g.slices}
    assert ("", "pos", 2) in owned and ("", "cls", 2) in owned
    assert ("", "pos", 1) not in owned  # one position per token: never a unit
    assert ("patch", "weight", 0) in {(s.module, s.name, s.dim) for s in stream.slices}
    _cut_coupled(model, graph)
    assert n_params(model) == n_params(ViTish(8, 2, 16))
    assert model(x).shape == (2, 3)
