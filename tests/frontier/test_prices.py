"""price_per_mac_: each gate's price is the multiply-adds one more unit of its group costs,
from ResNetConfig's own arithmetic (one unit added to that width), before and after a shrink."""

import pytest
import torch

from widthlab.errors import UsageError
from widthlab.frontier.prices import price_per_mac_
from widthlab.nn.resnet import ResNet, ResNetConfig
from widthlab.nn.surgery import gate_layers, shrink_
from widthlab.units import build_graph


def _plus_one(cfg: ResNetConfig, key: str) -> ResNetConfig:
    stages, blocks = list(cfg.stage_widths), [list(r) for r in cfg.block_widths]
    if key.startswith("stream:"):
        stages[int(key.split(".")[1])] += 1
    else:  # "stages.<s>.<b>.conv1:out"
        _, s, b = key.split(":")[0].split(".")[:3]
        blocks[int(s)][int(b)] += 1
    return ResNetConfig(stage_widths=tuple(stages), blocks=cfg.blocks, image_size=cfg.image_size,
                        block_widths=tuple(map(tuple, blocks)))


def _check(model, x, prices, scale):
    cfg = model.current_config()
    for key, price in prices.items():
        want = scale * (_plus_one(cfg, key).macs() - cfg.macs()) / cfg.macs()
        assert price == pytest.approx(want, rel=1e-12), key


def test_prices_follow_the_config_arithmetic_through_a_shrink():
    torch.manual_seed(0)
    cfg = ResNetConfig(stage_widths=(4, 6), blocks=2, image_size=8)
    model, x = ResNet(cfg), torch.randn(2, 1, 8, 8)
    gates = gate_layers(model, groups=[g.name for g in build_graph(model, x).groups], example=x)
    prices = price_per_mac_(model, x, scale=100.0)
    assert len(prices) == len(gates) == 6
    _check(model, x, prices, 100.0)
    assert all(g.price_scale == prices[g.key] for g in gates)
    with torch.no_grad():
        gates[0].gate[[0, 2]] = -1.0  # two units of the first group die
        gates[-1].gate[1] = -1.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    shrink_(model, opt)
    assert model.current_config() != cfg
    _check(model, x, price_per_mac_(model, x, scale=100.0), 100.0)


def test_prices_need_unit_gates():
    model, x = ResNet(ResNetConfig(stage_widths=(4,), blocks=1, image_size=8)), None
    with pytest.raises(UsageError, match="gate_layers"):
        price_per_mac_(model, x)


class _TwoInputs(torch.nn.Module):
    """An MLP whose forward takes two tensors (x, and a scale of its hidden layer)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(5, 8), torch.nn.Linear(8, 3)

    def forward(self, x, s):
        return self.fc2(torch.relu(self.fc1(x)) * s)


def test_prices_of_keyed_gates_and_a_tuple_example():
    """A gate keyed by another name than its group (the transformers callback's FFN under
    its module name) is priced; a tuple example divides by its first tensor's batch."""
    from widthlab.nn.surgery.unit_gates import gate_groups

    torch.manual_seed(0)
    model, x = _TwoInputs(), (torch.randn(4, 5), torch.ones(4, 1))
    (gate,) = gate_groups(model, ["fc1:out"], x, kind="l1", keys={"fc1:out": "hidden"})
    prices = price_per_mac_(model, x, scale=1.0)
    # one hidden unit: 5 MACs in, 3 out, of (5 * 8 + 8 * 3) per sample
    assert prices == {"hidden": pytest.approx((5 + 3) / (5 * 8 + 8 * 3), rel=1e-12)}
    assert gate.price_scale == prices["hidden"]
