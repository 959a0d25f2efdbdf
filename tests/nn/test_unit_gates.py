"""Gates on units-core groups (streams, heads, FFN, channels): a gate of 0 equals removing
the unit, shrink_ removes dead units through widthlab.units.remove_units (optimizer state
kept), fold_gates_ leaves a plain model of the learned sizes."""


import pytest
import torch

from widthlab.nn.gpt import GPT, GPTConfig
from widthlab.nn.resnet import ResNet, ResNetConfig
from widthlab.nn.surgery import gate_layers, shrink_, size_penalty

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
