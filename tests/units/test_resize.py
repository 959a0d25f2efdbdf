"""resize_to_state_: a freshly built model brought to a shrunk model's saved shapes loads its
state_dict and then is that model (same outputs, same size attributes, module by module), its
parameters keep their identity, an optimizer resumes from the saved optimizer state as the
shrunk model's does; shapes no module can have are refused, naming the tensor, before any
change."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from tests.units.helpers import half
from tests.units.models import GPT, GPTConfig, MobileNetish, ResNet, ViTish
from widthlab.errors import UsageError
from widthlab.units import build_graph, remove_units, resize_to_state_, size_attrs

pytestmark = pytest.mark.usefixtures("one_thread")

PLAIN = (int, float, bool, str, tuple)


def _attrs(model: nn.Module) -> dict:
    """Every module's plain public attributes (the sizes among them)."""
    return {name: {k: v for k, v in vars(m).items()
                   if not k.startswith("_") and isinstance(v, PLAIN)}
            for name, m in model.named_modules()}


def _batch(kind, x, seed):
    g = torch.Generator().manual_seed(seed)
    if kind is GPT:
        return torch.randint(0, GPTConfig().vocab_size, x.shape, generator=g)
    return torch.randn(x.shape, generator=g)


def _build(kind):
    torch.manual_seed(0)
    if kind is GPT:
        return GPT(GPTConfig()), torch.randint(0, GPTConfig().vocab_size, (2, 9))
    return kind(), torch.randn(2, 3, 8, 8)


def _step(model, opt, x):
    opt.zero_grad()
    model(x).float().square().mean().backward()
    opt.step()


@pytest.mark.parametrize("kind", [ResNet, MobileNetish, GPT, ViTish])
def test_a_fresh_model_resized_then_loaded_is_the_shrunk_model(kind):
    model, x = _build(kind)
    model.eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _step(model, opt, x)
    graph = build_graph(model, x)
    cut = 0
    for g in list(graph.groups):
        try:
            remove_units(model, graph, g, half(g.size), optimizer=opt)
            cut += 1
        except UsageError:  # e.g. heads tied to the stream: left whole
            pass
    assert cut >= 2
    _step(model, opt, _batch(kind, x, 1))  # optimizer state at the shrunk shapes
    buf = io.BytesIO()  # through a file, as a checkpoint: weights-only loadable
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "sizes": size_attrs(model)}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    state, saved_opt, sizes = saved["model"], saved["opt"], saved["sizes"]

    fresh, _ = _build(kind)
    fresh.eval()
    before = {id(p) for p in fresh.parameters()}
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-2)  # built before: still works
    changed = resize_to_state_(fresh, state, sizes)
    assert changed and {id(p) for p in fresh.parameters()} == before
    fresh.load_state_dict(state)
    assert _attrs(fresh) == _attrs(model)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    fresh_opt.load_state_dict(saved_opt)
    for seed in (2, 3):
        batch = _batch(kind, x, seed)
        _step(model, opt, batch)
        _step(fresh, fresh_opt, batch)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, groups=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, groups=4), nn.Flatten(), nn.Linear(8, 5))


def _shrunk_state():
    s = {k: v.clone() for k, v in _net().state_dict().items()}
    for k in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        s[k] = s[k][:6]
    s["3.weight"], s["3.bias"] = s["3.weight"][:6, :, :, :], s["3.bias"][:6]
    s["5.weight"] = s["5.weight"][:, :6]
    return s


def test_attributes_follow_the_saved_shapes():
    net = _net()
    resize_to_state_(net, _shrunk_state())
    assert (net[0].out_channels, net[1].num_features) == (6, 6)
    # a grouped conv keeps its channels per group: 8/4 -> 6/3
    assert (net[3].in_channels, net[3].out_channels, net[3].groups) == (6, 6, 3)
    assert (net[5].in_features, net[5].out_features) == (6, 5)
    net.load_state_dict(_shrunk_state())
    assert net(torch.randn(2, 3, 5, 5)).shape == (2, 5)


@pytest.mark.parametrize(("edit", "names"), [
    (lambda s: s.update({"5.bias": torch.zeros(4)}), ["5.bias", "(5,)"]),
    (lambda s: s.update({"3.weight": torch.zeros(5, 2, 3, 3), "3.bias": torch.zeros(5)}),
     ["3", "channels per group"]),
    (lambda s: s.update({"0.weight": torch.zeros(6, 3, 2, 2)}), ["0.weight", "(6, 3, 3, 3)"]),
    (lambda s: s.update({"5.weight": torch.zeros(5, 6, 1)}), ["5.weight", "rank"]),
    (lambda s: s.pop("1.running_var"), ["1.running_var", "no tensor"]),
    (lambda s: s.update({"1.running_mean": torch.zeros(7)}), ["1.running_mean", "(6,)"]),
])
def test_shapes_no_module_can_have_are_refused_before_any_change(edit, names):
    net = _net()
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    attrs = _attrs(net)
    state = _shrunk_state()
    edit(state)
    with pytest.raises(UsageError) as err:
        resize_to_state_(net, state)
    for name in names:
        assert name in str(err.value)
    assert _attrs(net) == attrs
    for k, v in net.state_dict().items():
        assert torch.equal(v, reference[k]), k


def test_a_size_the_model_lacks_is_refused():
    net = _net()
    with pytest.raises(UsageError, match="5.n_head"):
        resize_to_state_(net, _shrunk_state(), {"5": {"n_head": 2}})
    assert net[0].weight.shape[0] == 8
