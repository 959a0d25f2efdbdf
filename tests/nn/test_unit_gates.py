"""Gates on units-core groups (streams, heads, FFN, channels): a gate of 0 equals removing
the unit, shrink_ removes dead units through widthlab.units.remove_units (optimizer state
kept), fold_gates_ leaves a plain model of the learned sizes."""


import copy

import pytest
import torch
import torch.nn.functional as F

from widthlab.errors import UsageError
from widthlab.nn.gpt import GPT, GPTConfig
from widthlab.nn.resnet import ResNet, ResNetConfig
from widthlab.nn.surgery import UnitGate, fold_gates_, gate_layers, shrink_, size_penalty
from widthlab.nn.surgery.unit_gates import unit_gates
from widthlab.units import build_graph, remove_units, resize_to_state_, size_attrs

RCFG = ResNetConfig(stage_widths=(4, 6), blocks=1, image_size=8)
RGROUPS = ["stream:stages.0.0", "stream:stages.1.0", "stages.0.0.conv1:out",
           "stages.1.0.conv1:out"]
RDEAD = {"stream:stages.0.0": [1], "stream:stages.1.0": [0, 4], "stages.0.0.conv1:out": [2],
         "stages.1.0.conv1:out": [1, 3, 5]}
GCFG = GPTConfig(n_layer=2, n_head=4, n_embd=16, n_ffn=24, block_size=8, vocab_size=11)
GGROUPS = ["stream:model", "blocks.0.attn:heads", "blocks.1.attn:heads", "blocks.0.mlp.fc:out",
           "blocks.1.mlp.fc:out"]
GDEAD = {"stream:model": [0, 5, 6, 11], "blocks.0.attn:heads": [1], "blocks.1.attn:heads": [3],
         "blocks.0.mlp.fc:out": [2, 3, 7], "blocks.1.mlp.fc:out": [0, 9, 23]}


def _resnet():
    torch.manual_seed(0)
    return ResNet(RCFG).double(), torch.randn(6, 1, 8, 8, dtype=torch.float64)


def _gpt():
    torch.manual_seed(0)
    return GPT(GCFG).double(), torch.randint(0, 11, (3, 8))


def _kill(gates, dead):
    """Dead in evaluation and in every training sample (hard concrete: log_alpha -50)."""
    with torch.no_grad():
        for g in gates:
            g.gate[dead[g.key]] = -1.0 if g.kind.name == "l1" else -50.0


def _loss(model, x):
    out = model(x)
    return out.square().mean() + 1e-3 * size_penalty(model)


def _train(model, opt, x, steps):
    for _ in range(steps):
        opt.zero_grad()
        _loss(model, x).backward()
        opt.step()


@pytest.mark.parametrize("net,kind,optim", [("resnet", "l1", "adam"), ("resnet", "l1", "sgd"),
                                            ("gpt", "l1", "adam"),
                                            ("gpt", "hard_concrete", "sgd")])
def test_shrink_equals_masked_training(net, kind, optim):
    build, groups, dead = ((_resnet, RGROUPS, RDEAD) if net == "resnet"
                           else (_gpt, GGROUPS, GDEAD))
    models = []
    for _ in range(2):
        model, x = build()
        gates = gate_layers(model, groups=groups, example=x, kind=kind, seed=3)
        _kill(gates, dead)
        opt = (torch.optim.Adam(model.parameters(), lr=1e-2) if optim == "adam"
               else torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9))
        _train(model, opt, x, 3)
        models.append((model, opt))
    (masked, mopt), (shrunk, sopt) = models
    n_before = sum(p.numel() for p in shrunk.parameters())
    removed = shrink_(shrunk, sopt)
    assert removed == {k: len(v) for k, v in dead.items()}
    assert sum(p.numel() for p in shrunk.parameters()) < n_before
    masked.eval(), shrunk.eval()
    torch.testing.assert_close(shrunk(x), masked(x), atol=1e-5, rtol=0)
    masked.train(), shrunk.train()
    _train(masked, mopt, x, 20)
    _train(shrunk, sopt, x, 20)
    masked.eval(), shrunk.eval()
    torch.testing.assert_close(shrunk(x), masked(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("net", ["resnet", "gpt"])
def test_zero_gate_equals_remove_units(net):
    """Independent reference: the plain model cut by widthlab.units.remove_units."""
    build, groups, dead = ((_resnet, RGROUPS, RDEAD) if net == "resnet"
                           else (_gpt, GGROUPS, GDEAD))
    gated, x = build()
    _kill(gate_layers(gated, groups=groups, example=x), dead)  # live gates relu(1) = 1
    plain, _ = build()
    graph = build_graph(plain, x)
    remove_units(plain, graph, {graph[k]: v for k, v in dead.items()})
    gated.eval(), plain.eval()
    torch.testing.assert_close(gated(x), plain(x), atol=1e-10, rtol=0)


def _random_gates(gates):
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for g in gates:
            g.gate.copy_(torch.rand(g.gate.shape, generator=gen, dtype=g.gate.dtype) + 0.5)


def test_fold_resnet_loads_into_resnet_at_learned_sizes():
    model, x = _resnet()
    gates = gate_layers(model, groups=RGROUPS, example=x)
    _random_gates(gates)
    _kill(gates, RDEAD)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, x, 2)
    model.eval()
    want = model(x)
    assert fold_gates_(model, opt) == {k: len(v) for k, v in RDEAD.items()}
    assert not any(isinstance(m, UnitGate) for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(len(p) for p in (g["params"] for g in opt.param_groups))
    cfg = model.current_config()
    assert cfg.stage_widths == (3, 4) and cfg.block_widths == ((3,), (3,))
    fresh = ResNet(cfg).double().eval()
    fresh.load_state_dict(model.state_dict())  # strict: no gate keys left
    torch.testing.assert_close(fresh(x), want, atol=1e-10, rtol=0)


def test_fold_gpt_hard_concrete_loads_into_gpt_at_learned_sizes():
    model, x = _gpt()
    gates = gate_layers(model, groups=GGROUPS, example=x, kind="hard_concrete", seed=1)
    _random_gates(gates)  # log_alpha in (0.5, 1.5): eval gates strictly inside (0, 1)
    _kill(gates, GDEAD)
    model.eval()
    want = model(x)
    fold_gates_(model)
    fresh = GPT(GPTConfig(n_layer=2, n_head=3, n_embd=12, n_ffn=21, block_size=8,
                          vocab_size=11)).double().eval()
    fresh.load_state_dict(model.state_dict())
    assert fresh.head.weight is fresh.tok.weight
    torch.testing.assert_close(fresh(x), want, atol=1e-10, rtol=0)
    torch.testing.assert_close(model(x), want, atol=1e-10, rtol=0)


def test_groups_refusals():
    model, x = _gpt()
    with pytest.raises(UsageError, match="example"):
        gate_layers(model, groups=["stream:model"])
    with pytest.raises(UsageError, match="no group 'nope'"):
        gate_layers(model, groups=["nope"], example=x)
    with pytest.raises(UsageError, match="either names"):
        gate_layers(model, ["head"], groups=["stream:model"], example=x)
    assert not hasattr(model, "widthlab_unit_gates")


def test_fold_name_gated_layers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 6),
                                torch.nn.ReLU(), torch.nn.Linear(6, 2)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    gates = gate_layers(model, ["0", "2"], example=x[:2])
    _random_gates(gates)
    _kill(gates, {"0": [1, 4], "2": [0]})
    want = model(x)
    assert fold_gates_(model) == {"0": 2, "2": 1}
    plain = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.ReLU(), torch.nn.Linear(5, 5),
                                torch.nn.ReLU(), torch.nn.Linear(5, 2)).double()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain(x), want, atol=1e-12, rtol=0)


def test_resume_shrunk_checkpoint_and_deepcopy():
    model, x = _gpt()
    gates = gate_layers(model, groups=GGROUPS, example=x, kind="hard_concrete", seed=2)
    _kill(gates, GDEAD)
    shrink_(model)
    twin = copy.deepcopy(model)
    fresh, _ = _gpt()
    gate_layers(fresh, groups=GGROUPS, example=x, kind="hard_concrete", seed=2)
    resize_to_state_(fresh, model.state_dict(), size_attrs(model))
    fresh.load_state_dict(model.state_dict())  # noise generator state included
    for m in (model, twin, fresh):
        m.train()
    want = model(x)  # one noise sample each, from the same generator state
    torch.testing.assert_close(fresh(x), want, atol=1e-10, rtol=0)
    torch.testing.assert_close(twin(x), want, atol=1e-10, rtol=0)
    for m in (model, fresh):  # the resumed gates follow the re-traced groups: shrink again
        with torch.no_grad():
            next(g for g in unit_gates(m) if g.key == "blocks.1.mlp.fc:out").gate[4] = -50.0
        assert shrink_(m)["blocks.1.mlp.fc:out"] == 1
    model.eval(), fresh.eval()
    assert fresh.blocks[1].mlp.fc.out_features == 20
    torch.testing.assert_close(fresh(x), model(x), atol=1e-10, rtol=0)


def test_hf_gpt2_every_group_gated_shrunk_and_folded():
    """Hugging Face Conv1D (x @ weight: the read dim is 0), every group incl. the stream."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=16, n_inner=64, vocab_size=30,
                                  n_positions=8,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    x = torch.randint(0, 30, (2, 8))
    graph = build_graph(model, x)
    dead = {g.name: list(range(0, g.size, 3)) for g in graph.groups}
    dead.update({g.name: [0] for g in graph.groups if g.kind == "heads"})
    dead["stream:transformer"] = [0, 3, 6, 9]  # the class needs n_embd = heads * head_dim
    plain = copy.deepcopy(model)
    remove_units(plain, graph, {graph[k]: v for k, v in dead.items()})
    gates = gate_layers(model, groups=[g.name for g in graph.groups], example=x)
    _kill(gates, dead)
    torch.testing.assert_close(model(x).logits, plain(x).logits, atol=1e-10, rtol=0)
    _random_gates(gates)
    _kill(gates, dead)
    want = model(x).logits
    fold_gates_(model)
    fresh = transformers.GPT2LMHeadModel(model.config).double().eval()
    fresh.load_state_dict(model.state_dict())
    assert (fresh.config.n_head, fresh.config.n_embd, plain.config.n_embd) == (3, 12, 12)
    torch.testing.assert_close(fresh(x).logits, want, atol=1e-10, rtol=0)


def test_stream_units_alone_go_where_the_head_width_is_not_read_off_the_stream():
    """widthlab's GPT reads its head width off qkv: a stream unit alone is removed."""
    model, x = _gpt()
    gates = gate_layers(model, groups=GGROUPS, example=x)
    _kill(gates, {"stream:model": [2], "blocks.0.attn:heads": [], "blocks.1.attn:heads": [],
                  "blocks.0.mlp.fc:out": [5], "blocks.1.mlp.fc:out": []})
    model.eval()
    want = model(x)
    removed = shrink_(model)
    assert removed["stream:model"] == 1 and removed["blocks.0.mlp.fc:out"] == 1
    assert model.blocks[0].mlp.fc.out_features == 23 and model.tok.weight.shape[1] == 15
    torch.testing.assert_close(model(x), want, atol=1e-10, rtol=0)


def test_unmatched_stream_units_stay_masked_with_a_warning():
    """nanoGPT reads the head width off the stream: stream units alone cannot go."""
    from tests.units.models import GPTConfig as NanoConfig
    from tests.units.models import NanoGPT

    torch.manual_seed(0)
    model, x = NanoGPT(NanoConfig()).double(), torch.randint(0, 40, (3, 8))
    names = ["stream:model", "transformer.h.0.mlp.c_fc:out"]
    gates = gate_layers(model, groups=names, example=x)
    _kill(gates, {"stream:model": [2], "transformer.h.0.mlp.c_fc:out": [5]})
    model.eval()
    want = model(x)
    with pytest.warns(UserWarning, match="masked"):
        removed = shrink_(model)
    assert removed["stream:model"] == 0 and removed["transformer.h.0.mlp.c_fc:out"] == 1
    assert model.transformer.h[0].mlp.c_fc.out_features == 31
    torch.testing.assert_close(model(x), want, atol=1e-10, rtol=0)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(2, 6, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(6)
        self.conv2 = torch.nn.Conv2d(6, 5, 3, padding=1)
        self.fc1 = torch.nn.Linear(5 * 4 * 4, 7)
        self.fc2 = torch.nn.Linear(7, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


@pytest.mark.parametrize("inputs", [False, True])
def test_name_gated_shrink_is_one_remove_units_call_and_equals_masking(inputs, monkeypatch):
    """gate_layers(names, example=x): shrink_ removes every gate's group with ONE
    remove_units call (conv2's too, whose units fc1's selecting input gate reads); 2 Adam
    steps, shrink, 3 more equal 5 steps of the masked model (a deep copy never shrunk)."""
    import copy

    import widthlab.nn.surgery.shrink as shrink_module

    calls = []
    real = shrink_module.remove_units
    monkeypatch.setattr(shrink_module, "remove_units",
                        lambda m, g, req, **kw: (calls.append(sorted(k.name for k in req)),
                                                 real(m, g, req, **kw)))
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    torch.manual_seed(0)
    model = _Net().double()
    gates = gate_layers(model, ["conv1", "conv2", "fc1"], inputs=inputs, example=x[:2])
    _kill(gates, {"conv1": [0, 4], "conv2": [1], "fc1": [2, 3, 6], "conv1:in": [1],
                  "fc1:in": [5, 17, 40]})
    masked = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mopt = torch.optim.Adam(masked.parameters(), lr=1e-2)
    _train(model, opt, x, 2)
    _train(masked, mopt, x, 2)
    removed = shrink_(model, opt)
    _train(model, opt, x, 3)
    _train(masked, mopt, x, 3)
    assert removed["conv1"] == 2 and removed["fc1"] == 3
    assert model.conv1.weight.shape[0] == 4 and model.fc2.weight.shape[1] == 4
    assert removed["conv2"] == 1
    if inputs:  # conv2's channel 1 took entries 16..31 (17 among them): 80 - 16 - 2
        assert removed["fc1:in"] == 2 and model.fc1.weight.shape[1] == 62
    else:
        assert model.fc1.weight.shape[1] == 64
    assert calls == [sorted(["conv1:out", "conv2:out", "fc1:out"])]
    model.eval(), masked.eval()
    torch.testing.assert_close(model(x), masked(x), atol=1e-10, rtol=0)


class _TiedNoNorm(torch.nn.Module):
    """A stream without norms read by a head tied to the embedding."""

    def __init__(self):
        super().__init__()
        self.tok = torch.nn.Embedding(11, 8)
        self.mix = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 11, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx):
        x = self.tok(idx)
        x = x + torch.tanh(self.mix(x))
        return self.head(x)


def test_tied_head_read_is_gated_and_fold_refuses():
    torch.manual_seed(0)
    model, x = _TiedNoNorm().double(), torch.randint(0, 11, (2, 5))
    plain = copy.deepcopy(model)
    gates = gate_layers(model, groups=["stream:model"], example=x)
    _kill(gates, {"stream:model": [1, 6]})
    graph = build_graph(plain, x)
    remove_units(plain, graph, graph["stream:model"], [1, 6])
    torch.testing.assert_close(model(x), plain(x), atol=1e-10, rtol=0)
    with pytest.raises(UsageError, match="tied"):
        fold_gates_(model)
    assert model.head.weight.shape == (11, 8) and gates[0].width == 8  # nothing changed


def test_a_group_shrunk_to_one_unit_resumes():
    """A trace gives a dimension of size 1 no unit (it may broadcast): a resumed gate whose
    group has one unit left keeps its old group's points, sized to one."""
    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(),
                                           torch.nn.Linear(6, 3))

        def forward(self, x):
            return self.net(x)

        def __getitem__(self, i):
            return self.net[i]

    def mlp():
        torch.manual_seed(0)
        return Wrap().double()

    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(UsageError, match="wrap the model"):
        gate_layers(mlp().net, groups=["0:out"], example=x)
    model = mlp()
    (gate,) = gate_layers(model, groups=["net.0:out"], example=x, init=0.5)
    with torch.no_grad():
        gate.gate[[0, 1, 2, 4, 5]] = -1.0
    assert shrink_(model) == {"net.0:out": 5} and gate.width == 1
    fresh = mlp()
    gate_layers(fresh, groups=["net.0:out"], example=x, init=0.5)
    resize_to_state_(fresh, model.state_dict(), size_attrs(model))
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        h = torch.relu(F.linear(x, model[0].weight, model[0].bias)) * 0.5  # one unit, gate .5
        want = F.linear(h, model[2].weight, model[2].bias)
        torch.testing.assert_close(fresh(x), want, atol=1e-12, rtol=0)
        fresh.widthlab_unit_gates.g0.gate.fill_(-1.0)  # closed: the bias alone
        torch.testing.assert_close(fresh(x), model[2].bias.expand(5, 3), atol=1e-12, rtol=0)
    assert shrink_(fresh) == {"net.0:out": 0} and fresh[0].out_features == 1
