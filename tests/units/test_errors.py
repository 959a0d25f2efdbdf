"""What the units core refuses, and that it refuses before changing anything."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.units.models import ResNet
from widthlab.errors import UsageError
from widthlab.units import UnitTraceError, build_graph
from widthlab.units.remove import remove_units

pytestmark = pytest.mark.usefixtures("one_thread")


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        return torch.cumsum(self.fc(x), dim=-1)  # mixes features in an order the graph
        # does not follow


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.bn, self.out = Body(), nn.BatchNorm1d(6), nn.Linear(6, 2)

    def forward(self, x):
        return self.out(self.bn(self.body(x)))


def test_an_op_without_a_rule_on_units_is_named_with_its_module():
    model = Net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnitTraceError, match=r"aten\.cumsum.* in module 'body'"):
        build_graph(model, torch.randn(3, 4))
    # the failed trace left the model as it was (BatchNorm statistics included)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_build_graph_leaves_running_statistics_alone():
    model = ResNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_graph(model, torch.randn(2, 3, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("drop, match", [
    ([6], r"\[0, 6\)"), ([-1], r"\[0, 6\)"), (list(range(6)), "keep at least one"),
    (["a"], "integers")])
def test_bad_drop_indices_are_refused_before_any_change(drop, match):
    model, x = ResNet(), torch.randn(2, 3, 8, 8)
    graph = build_graph(model, x)
    with pytest.raises(UsageError, match=match):
        remove_units(model, graph, "layer1.0.conv1:out", drop)
    assert model.layer1[0].conv1.weight.shape[0] == 6
    assert graph["layer1.0.conv1:out"].size == 6


def test_a_stale_or_foreign_group_is_refused():
    model, x = ResNet(), torch.randn(2, 3, 8, 8)
    graph, other = build_graph(model, x), build_graph(ResNet(), x)
    with pytest.raises(UsageError, match="not a group of this graph"):
        remove_units(model, graph, other["layer1.0.conv1:out"], [0])
    with pytest.raises(KeyError, match="no group 'nope'"):
        remove_units(model, graph, "nope", [0])
    remove_units(model, other, other["layer1.0.conv1:out"], [0])  # model changes under graph
    with pytest.raises(UsageError, match="call build_graph again"):
        remove_units(model, graph, "layer1.0.conv1:out", [1])


def test_removing_twice_through_one_graph_renumbers_the_group():
    model, x = ResNet(), torch.randn(2, 3, 8, 8)
    graph = build_graph(model, x)
    g = graph["layer1.0.conv1:out"]
    w = model.layer1[0].conv1.weight.detach().clone()
    remove_units(model, graph, g, [0, 1])
    remove_units(model, graph, g, [0])  # unit 0 is now the original unit 2
    assert g.size == 3
    assert torch.equal(model.layer1[0].conv1.weight, w[3:])
    assert model.layer1[0].conv2.in_channels == 3


class OddAttention(nn.Module):
    """Heads counted in an attribute the updaters do not know (``nh``)."""

    def __init__(self, d: int = 8, nh: int = 2, hd: int = 4):
        super().__init__()
        self.nh, self.hd = nh, hd
        self.qkv, self.proj = nn.Linear(d, 3 * nh * hd), nn.Linear(nh * hd, d)
        self.norm = nn.BatchNorm1d(d)

    def forward(self, x):  # (B, T, d)
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.nh * self.hd, dim=2)
        q, k, v = (t.view(B, T, self.nh, self.hd).transpose(1, 2) for t in (q, k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        y = self.proj(y.transpose(1, 2).reshape(B, T, self.nh * self.hd))
        return self.norm(y.transpose(1, 2)).transpose(1, 2)


def test_a_cut_whose_forward_fails_is_undone_completely():
    torch.manual_seed(0)
    model, x = OddAttention().train(), torch.randn(3, 5, 8)
    opt = torch.optim.Adam(model.parameters())
    model(x).square().mean().backward()
    opt.step()
    graph = build_graph(model, x)
    heads = next(g for g in graph.groups if g.kind == "heads")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    states = {n: {k: v.clone() for k, v in opt.state[p].items()}
              for n, p in model.named_parameters()}
    with pytest.raises(UsageError, match="forward fails.*nothing was changed"):
        remove_units(model, graph, heads, [0], optimizer=opt)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n])
        assert all(torch.equal(opt.state[p][k], v) for k, v in states[n].items())
    assert (model.qkv.out_features, model.proj.in_features, heads.size) == (24, 8, 2)
    model(x).square().mean().backward()  # still trains
    opt.step()
    remove_units(model, graph, heads, [0], optimizer=opt, check=False)  # asked for: done
    assert model.qkv.weight.shape == (12, 8)


def test_ops_along_other_dims_pass_units_and_a_one_channel_conv_reads_them():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.o = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 1, 1)

        def forward(self, x):
            h = torch.relu(self.c(x)).cumsum(-1)  # along width: units pass
            n = torch.linalg.vector_norm(h, 2, dim=(2, 3))  # (B, 6): over pixels only
            return self.o(h) + n.sum(1)[:, None, None, None]

    model, x = M(), torch.randn(2, 3, 4, 4)
    graph = build_graph(model, x)
    (g,) = graph.groups
    assert (g.name, g.size) == ("c:out", 6)
    assert g.mixers == ("aten.sum.dim_IntList in <model>",)  # summing the units is flagged
    remove_units(model, graph, g, [0, 1])
    assert model.o.in_channels == 4 and model(x).shape == (2, 1, 4, 4)


def test_layer_norm_over_channels_and_pixels_keeps_channels_as_units():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.ln = nn.Conv2d(3, 6, 3, padding=1), nn.LayerNorm([6, 4, 4])
            self.o = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.o(self.ln(self.c(x)))

    model, x = M(), torch.randn(2, 3, 4, 4)
    graph = build_graph(model, x)
    (g,) = graph.groups
    assert (g.size, g.mixers) == (6, ("layer_norm in ln",))  # pixels are no units
    remove_units(model, graph, g, [0, 1])
    assert model.ln.normalized_shape == (4, 4, 4) and model(x).shape == (2, 2, 4, 4)
