"""Convnets shrunk by the units core: every group found, about half of every group removed, the
parameter count of the class built at the new widths, and outputs equal to the masked model
(the removed units' consumers zeroed by the test)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tests.units.helpers import blocks, half, n_params, zero_inputs
from tests.units.models import ConcatNet, MobileNetish, ResNet, SENet, ShuffleNetish
from widthlab.units import build_graph
from widthlab.units.remove import remove_units

pytestmark = pytest.mark.usefixtures("one_thread")


def _shake_bn(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so masking is tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()


def _shrink_all(model, graph):
    for g in list(graph.groups):
        remove_units(model, graph, g, half(g.size))


RESNET_CONSUMERS = {
    "stream:layer1": ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1",
                      "layer2.0.downsample.0"],
    "layer1.0.conv1:out": ["layer1.0.conv2"], "layer1.1.conv1:out": ["layer1.1.conv2"],
    "layer2.0.conv1:out": ["layer2.0.conv2"], "layer2.1.conv1:out": ["layer2.1.conv2"],
    "stream:layer2": ["layer2.1.conv1", "fc"],
}


def test_resnet_stream_and_block_channels():
    torch.manual_seed(0)
    model, x = ResNet(), torch.randn(2, 3, 8, 8)
    _shake_bn(model)
    model.eval()
    graph = build_graph(model, x)
    sizes = {g.name: (g.kind, g.size) for g in graph.groups}
    assert sizes == {"stream:layer1": ("stream", 8), "stream:layer2": ("stream", 12),
                     "layer1.0.conv1:out": ("channels", 6),
                     "layer1.1.conv1:out": ("channels", 6),
                     "layer2.0.conv1:out": ("channels", 10),
                     "layer2.1.conv1:out": ("channels", 10)}
    stream = graph["stream:layer1"]
    assert {(s.module, s.name) for s in stream.slices} >= {
        ("bn1", "running_mean"), ("layer1.1.bn2", "weight"), ("layer2.0.conv1", "weight"),
        ("layer2.0.downsample.0", "weight")}
    assert not stream.mixers  # BatchNorm is per channel
    masked = zero_inputs(model, [(c, 1, half(graph[g].size))
                                 for g, cs in RESNET_CONSUMERS.items() for c in cs])
    _shrink_all(model, graph)
    assert n_params(model) == n_params(ResNet(4, 6, (3, 3, 5, 5)))
    assert model.layer2[0].downsample[1].num_features == 6
    assert model.layer2[0].downsample[1].running_var.shape == (6,)
    assert_close(model(x), masked(x), atol=1e-5, rtol=0)


def test_mobilenet_depthwise_keeps_channel_and_group_together():
    torch.manual_seed(1)
    model, x = MobileNetish(), torch.randn(2, 3, 8, 8)
    _shake_bn(model)
    model.eval()
    graph = build_graph(model, x)
    assert {g.name: (g.kind, g.size) for g in graph.groups} == {
        "stream:block": ("stream", 8), "block.expand.0:out": ("channels", 16)}
    dw = next(s for s in graph["block.expand.0:out"].slices if s.module == "block.dw.0")
    assert dw.dim == 0 and dw.units.tolist() == list(range(16))
    masked = zero_inputs(model, [("block.project.0", 1, half(16)),
                                 ("block.expand.0", 1, half(8)), ("head", 1, half(8))])
    _shrink_all(model, graph)
    conv = model.block.dw[0]
    assert (conv.in_channels, conv.out_channels, conv.groups) == (8, 8, 8)
    assert n_params(model) == n_params(MobileNetish(4, 8))
    assert_close(model(x), masked(x), atol=1e-5, rtol=0)


def test_concat_offsets_and_flatten_blocks():
    torch.manual_seed(2)
    model, x = ConcatNet(), torch.randn(2, 3, 4, 4)
    graph = build_graph(model, x)
    assert {g.name: g.size for g in graph.groups} == {"left:out": 10, "mix:out": 5}
    fc = next(s for s in graph["mix:out"].slices if s.module == "fc")
    assert fc.units.tolist() == [i // 16 for i in range(80)]  # a channel's 16 pixels
    masked = zero_inputs(model, [("mix", 1, half(10)), ("fc", 1, blocks(half(5), 16))])
    _shrink_all(model, graph)
    # units 0, 2, 4 of the left branch's 6 and 6, 8 of the right branch's 4 are gone
    assert n_params(model) == n_params(ConcatNet(3, 2, 2))
    assert_close(model(x), masked(x), atol=1e-5, rtol=0)


def test_squeeze_excitation_scale_joins_the_channels():
    torch.manual_seed(3)
    model, x = SENet(), torch.randn(2, 3, 6, 6)
    graph = build_graph(model, x)
    assert {g.name: g.size for g in graph.groups} == {"conv:out": 8, "fc1:out": 4}
    assert {(s.module, s.dim) for s in graph["conv:out"].slices} >= {("fc2", 0), ("fc1", 1)}
    masked = zero_inputs(model, [("fc1", 1, half(8)), ("head", 1, half(8)),
                                 ("fc2", 1, half(4))])
    _shrink_all(model, graph)
    assert n_params(model) == n_params(SENet(4, 2))
    assert_close(model(x), masked(x), atol=1e-5, rtol=0)


def test_shufflenet_split_and_shuffle_keep_a_product_of_units():
    torch.manual_seed(4)
    model, x = ShuffleNetish(), torch.randn(2, 3, 6, 6)
    _shake_bn(model)
    model.eval()
    graph = build_graph(model, x)
    stream = graph["stem.0:out"]
    # the chunk pairs channel j with j + 4; the shuffle interleaves halves: two units of four
    assert (stream.size, stream.unit_width) == (2, 4)
    assert next(s for s in stream.slices if s.module == "stem.0").units.tolist() == \
        [0, 1, 0, 1, 0, 1, 0, 1]
    drop = {g.name: half(g.size) for g in graph.groups}
    # after one shuffle, the second unit's branch output j pairs with position j of the first
    # unit's output: channels 0 and 1 there are stem channel 0's and branch channel 0's
    assert next(s for s in stream.slices if s.module == "units.1.branch.5").units.tolist() == \
        [0, 0, 1, 1]
    # the test zeroes the removed units where they are made (the stem's and the branches'
    # last BatchNorm: relu(0) = 0 all the way) and the branch-inner channels' consumers
    masked = zero_inputs(model, [("units.0.branch.5", 1, [0, 2]),
                                 ("units.1.branch.5", 1, [0, 2])])
    for m, idx in ((masked.stem[1], [0, 2, 4, 6]), (masked.units[0].branch[6], [0, 2]),
                   (masked.units[1].branch[6], [0, 1])):
        with torch.no_grad():
            m.weight[idx] = 0.0
            m.bias[idx] = 0.0
    for g in list(graph.groups):
        remove_units(model, graph, g, drop[g.name])
    assert n_params(model) == n_params(ShuffleNetish(4))
    assert_close(model(x), masked(x), atol=1e-5, rtol=0)


class GNNet(torch.nn.Module):
    def __init__(self, c: int = 8, groups: int = 4):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, c, 3, padding=1)
        self.gn = torch.nn.GroupNorm(groups, c)
        self.fc = torch.nn.Linear(c, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.gn(self.conv(x))).mean((2, 3)))


def test_group_norm_moves_its_groups_whole_and_stays_exact():
    torch.manual_seed(5)
    model, x = GNNet(), torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        model.gn.weight.normal_()
        model.gn.bias.normal_()
    graph = build_graph(model, x)
    g = graph["conv:out"]
    # a unit is one norm group of two channels: statistics of the others do not change
    assert (g.size, g.unit_width, g.mixers) == (4, 2, ())
    masked = zero_inputs(model, [("fc", 1, [0, 1, 4, 5])])
    remove_units(model, graph, g, [0, 2])
    assert (model.gn.num_groups, model.gn.num_channels) == (2, 4)
    assert n_params(model) == n_params(GNNet(4, 2))
    assert_close(model(x), masked(x), atol=1e-5, rtol=0)
