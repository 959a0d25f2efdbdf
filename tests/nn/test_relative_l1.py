"""The scale-free L1 gate kind (``relative_l1``): its multiplier and price against numpy, its
invariance to a group-wide scale (what a BatchNorm after the gated layer cancels), and a
shrunk gated ResNet equal to the masked one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from widthlab.errors import UsageError
from widthlab.nn.resnet import ResNet, ResNetConfig
from widthlab.nn.surgery import gate_layers, get_gate_kind, model_gates, shrink_, size_penalty
from widthlab.units import build_graph


def _numpy_scale(g: np.ndarray) -> np.ndarray:
    r = np.maximum(g, 0.0)
    return r / r.max() if r.max() > 0 else r


@pytest.mark.parametrize("seed", range(5))
def test_multiplier_price_and_death_against_numpy(seed):
    g = np.random.default_rng(seed).normal(0.5, 1.0, size=9)
    kind = get_gate_kind("relative_l1")
    t = torch.tensor(g, dtype=torch.float64)
    np.testing.assert_allclose(kind.scale(t).numpy(), _numpy_scale(g), rtol=1e-15)
    np.testing.assert_allclose(kind.sample(t).numpy(), _numpy_scale(g), rtol=1e-15)
    np.testing.assert_allclose(kind.penalty_terms(t).numpy(), _numpy_scale(g), rtol=1e-15)
    assert kind.dead(t).numpy().tolist() == (g <= 0).tolist()
    assert (kind.closed(t) <= 0).all() and kind.dead(kind.closed(t)).all()
    zero = torch.tensor([-1.0, 0.0])
    assert kind.scale(zero).tolist() == [0.0, 0.0]


def test_a_group_wide_scale_moves_neither_the_price_nor_its_gradient_along_g():
    # Euler: a price homogeneous of degree 0 in g has g . grad = 0; plain L1's is sum relu(g)
    g = torch.tensor([1.3, 0.2, -0.4, 0.7, 0.05], dtype=torch.float64, requires_grad=True)
    for name, along in (("relative_l1", 0.0), ("l1", float(torch.relu(g.detach()).sum()))):
        kind = get_gate_kind(name)
        (grad,) = torch.autograd.grad(kind.penalty_terms(g).sum(), g)
        assert float(g.detach() @ grad) == pytest.approx(along, abs=1e-12)
    kind = get_gate_kind("relative_l1")
    for c in (0.01, 3.0, 250.0):
        torch.testing.assert_close(kind.penalty_terms(c * g), kind.penalty_terms(g))


def test_relative_gates_on_a_resnet_shrink_equal_masking():
    torch.manual_seed(0)
    cfg = ResNetConfig(stage_widths=(4, 6, 8), blocks=2, image_size=8)
    model = ResNet(cfg).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    gate_layers(model, groups=list(build_graph(model, x).groups), example=x, kind="relative_l1")
    gates = {g.key: g for g in model_gates(model)}
    assert all(g.kind.name == "relative_l1" for g in gates.values())
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    before = model(x).detach()
    with torch.no_grad():
        gates["stream:stages.1"].gate.mul_(7.0)  # a group-wide scale: the network is unchanged
    torch.testing.assert_close(model(x), before, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        gates["stream:stages.1"].gate[[1, 4]] = -0.5
        gates["stages.2.0.conv1:out"].gate[[0, 2, 5]] = 0.0
    masked = model(x).detach()
    assert float(size_penalty(model)) == pytest.approx(
        sum(_numpy_scale(g.gate.detach().numpy()).sum() for g in gates.values()), rel=1e-12)
    shrink_(model)
    assert model.current_config().stage_widths == (4, 4, 8)
    assert model.current_config().block_widths[2] == (5, 8)
    torch.testing.assert_close(model(x), masked, rtol=1e-10, atol=1e-10)


def test_unknown_options_are_refused():
    with pytest.raises(UsageError, match="relative_l1"):
        get_gate_kind("relative_l1", beta=1.0)
