"""widthlab.nn.lenet: the two networks as the papers count them, gated without changing their
output, widths read off the shrunk modules, and weights from widths checked by hand."""

from __future__ import annotations

import pytest
import torch

from widthlab.errors import UsageError
from widthlab.nn.lenet import (
    LENET5,
    LENET300,
    build_lenet,
    lenet_weights,
    lenet_widths,
)
from widthlab.nn.surgery import gate_widths, model_gates, shrink_


def test_weights_from_widths_by_hand():
    # L0's rows: 266*88 + 88*33 + 33*10 and 25*20 + 25*20*25 + 45*462 + 462*10
    assert lenet_weights(LENET300, (266, 88, 33)) == 23408 + 2904 + 330 == 26642
    assert lenet_weights(LENET5, (20, 25, 45, 462)) == 500 + 12500 + 20790 + 4620 == 38410
    # the full networks: every weight of the modules, biases left out
    for net in (LENET300, LENET5):
        m = build_lenet(net, gated=False)
        n = sum(p.numel() for name, p in m.named_parameters() if name.endswith("weight"))
        assert lenet_weights(net, lenet_widths(m)) == n
    assert lenet_weights(LENET300, (784, 300, 100), n_classes=3) == 784 * 300 + 300 * 100 + 300
    with pytest.raises(UsageError, match="3 widths"):
        lenet_weights(LENET300, (1, 2))
    with pytest.raises(UsageError, match="unknown network"):
        lenet_weights("LeNet-4", (1, 2, 3))


@pytest.mark.parametrize("net", [LENET300, LENET5])
def test_gates_change_nothing_until_units_die_and_widths_follow_the_shrink(net):
    x = torch.randn(7, 784, generator=torch.Generator().manual_seed(0))
    plain, gated = build_lenet(net, 3, gated=False), build_lenet(net, 3)
    with torch.no_grad():
        torch.testing.assert_close(gated(x), plain(x), rtol=0, atol=0)
    want = {LENET300: {"fc1:in": 784, "fc2:in": 300, "fc3:in": 100},
            LENET5: {"conv1": 20, "conv2": 50, "fc1:in": 800, "fc2:in": 500}}[net]
    assert gate_widths(gated) == want and lenet_widths(gated) == tuple(want.values())
    kills = {}
    with torch.no_grad():
        for i, g in enumerate(model_gates(gated)):
            kills[g.key] = set(range(0, g.width, 3 + i))
            g.gate[sorted(kills[g.key])] = -1.0
    left = {k: want[k] - len(kills[k]) for k in want}
    if net == LENET5:  # a dead conv2 channel takes its 4x4 block of fc1's input features along
        left["fc1:in"] = sum(1 for f in range(800) if f not in kills["fc1:in"]
                             and f // 16 not in kills["conv2"])
    out = gated(x)
    shrink_(gated)
    widths = gate_widths(gated)
    assert widths == left
    assert lenet_widths(gated) == tuple(widths.values())
    with torch.no_grad():
        torch.testing.assert_close(gated(x), out, rtol=1e-5, atol=1e-6)


def test_lenet5_needs_images_and_lenet300_takes_any_inputs():
    with pytest.raises(UsageError, match="28x28.*37"):
        build_lenet(LENET5, n_in=37)
    m = build_lenet(LENET300, n_in=37, n_classes=3)
    assert m(torch.zeros(2, 37)).shape == (2, 3) and lenet_widths(m) == (37, 300, 100)
