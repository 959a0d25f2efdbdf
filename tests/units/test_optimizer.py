"""Adam after remove_units continues exactly as the masked model: 20 steps after the cut equal
20 steps of the model whose removed units were zeroed (with their gradients) from the start."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from tests.units.helpers import blocks, half, mask_params
from tests.units.models import GPT, GPTConfig, ResNet
from widthlab.errors import UsageError
from widthlab.units import build_graph
from widthlab.units.remove import remove_units

pytestmark = pytest.mark.usefixtures("one_thread")


def _steps(model, opt, x, loss_fn, n):
    for _ in range(n):
        opt.zero_grad()
        loss_fn(model(x)).backward()
        opt.step()


def _twin(build, masked, opt_masked):
    twin = build()
    twin.load_state_dict(masked.state_dict())
    opt = torch.optim.Adam(twin.parameters(), lr=opt_masked.param_groups[0]["lr"])
    opt.load_state_dict(copy.deepcopy(opt_masked.state_dict()))  # `step` tensors are shared
    return twin, opt


def test_adam_after_cutting_gpt_heads_and_ffn_equals_the_masked_gpt():
    torch.manual_seed(0)
    c = GPTConfig()
    masked, x = GPT(c), torch.randint(0, c.vocab_size, (2, 9))
    y = torch.randint(0, c.vocab_size, (2, 9))
    inner = c.n_head * c.head_dim
    heads = [p * inner + i for p in range(3) for i in blocks(half(c.n_head), c.head_dim)]
    spec = []
    for i in range(c.n_layer):
        b = f"transformer.h.{i}"
        spec += [(f"{b}.attn.c_attn", "weight", 0, heads), (f"{b}.attn.c_attn", "bias", 0, heads),
                 (f"{b}.attn.c_proj", "weight", 1, blocks(half(c.n_head), c.head_dim)),
                 (f"{b}.mlp.c_fc", "weight", 0, half(c.n_inner)),
                 (f"{b}.mlp.c_fc", "bias", 0, half(c.n_inner)),
                 (f"{b}.mlp.c_proj", "weight", 1, half(c.n_inner))]
    mask_params(masked, spec)
    opt_m = torch.optim.Adam(masked.parameters(), lr=1e-2)

    def loss(out):
        return F.cross_entropy(out.reshape(-1, c.vocab_size), y.reshape(-1))

    _steps(masked, opt_m, x, loss, 3)
    model, opt = _twin(lambda: GPT(c), masked, opt_m)
    graph = build_graph(model, x)
    for g in graph.groups:
        if g.kind in ("heads", "ffn"):
            remove_units(model, graph, g, half(g.size), optimizer=opt)
    state = opt.state[model.transformer.h[0].mlp.c_fc.weight]
    assert state["exp_avg"].shape == (16, 16) and int(state["step"]) == 3
    _steps(masked, opt_m, x, loss, 20)
    _steps(model, opt, x, loss, 20)
    assert_close(model(x), masked(x), atol=1e-5, rtol=0)
    kept_rows = [i for i in range(3 * inner) if i not in set(heads)]
    assert_close(model.transformer.h[1].attn.c_attn.weight,
                 masked.transformer.h[1].attn.c_attn.weight[kept_rows], atol=1e-6, rtol=0)


def test_adam_after_cutting_resnet_stream_and_channels_equals_the_masked_resnet():
    torch.manual_seed(1)
    masked, x, y = ResNet(), torch.randn(4, 3, 8, 8), torch.randn(4, 5)
    s1, s2 = half(8), half(12)
    spec = [("conv1", "weight", 0, s1), ("bn1", "weight", 0, s1), ("bn1", "bias", 0, s1)]
    for blk, (cin, cout, mid) in {"layer1.0": (s1, s1, half(6)), "layer1.1": (s1, s1, half(6)),
                                  "layer2.0": (s1, s2, half(10)),
                                  "layer2.1": (s2, s2, half(10))}.items():
        spec += [(f"{blk}.conv1", "weight", 1, cin), (f"{blk}.conv1", "weight", 0, mid),
                 (f"{blk}.bn1", "weight", 0, mid), (f"{blk}.bn1", "bias", 0, mid),
                 (f"{blk}.conv2", "weight", 1, mid), (f"{blk}.conv2", "weight", 0, cout),
                 (f"{blk}.bn2", "weight", 0, cout), (f"{blk}.bn2", "bias", 0, cout)]
    spec += [("layer2.0.downsample.0", "weight", 1, s1), ("layer2.0.downsample.0", "weight", 0, s2),
             ("layer2.0.downsample.1", "weight", 0, s2), ("layer2.0.downsample.1", "bias", 0, s2),
             ("fc", "weight", 1, s2)]
    mask_params(masked, spec)
    opt_m = torch.optim.Adam(masked.parameters(), lr=1e-2)

    def loss(out):
        return F.mse_loss(out, y)

    _steps(masked, opt_m, x, loss, 3)
    model, opt = _twin(ResNet, masked, opt_m)
    graph = build_graph(model, x)
    for g in list(graph.groups):
        remove_units(model, graph, g, half(g.size), optimizer=opt)
    _steps(masked, opt_m, x, loss, 20)
    _steps(model, opt, x, loss, 20)
    assert_close(model(x), masked(x), atol=1e-5, rtol=0)
    masked.eval()
    model.eval()
    assert_close(model(x), masked(x), atol=1e-5, rtol=0)


def test_optimizer_state_of_another_shape_is_refused_before_any_change():
    torch.manual_seed(2)
    model, x = ResNet(), torch.randn(2, 3, 8, 8)
    opt = torch.optim.Adam(model.parameters())
    F.mse_loss(model(x), torch.zeros(2, 5)).backward()
    opt.step()
    opt.state[model.layer1[0].conv1.weight]["exp_avg"] = torch.zeros(3)
    graph = build_graph(model, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UsageError, match="exp_avg.*optimizer=None"):
        remove_units(model, graph, "layer1.0.conv1:out", [0, 1], optimizer=opt)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert graph["layer1.0.conv1:out"].size == 6
