"""Acceptance of issue 17: gate a user's nn.Sequential MLP and CNN, kill units, shrink_, and
check outputs, shapes and the next 20 optimizer steps against the same model with the dead
units masked (forward hooks on the reference's gates, independent of the shrinking code)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from widthlab.nn.surgery import gate_layers, model_gates, shrink_, size_penalty

OPTIMIZERS = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=5e-2, momentum=0.9),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "adamax": lambda ps: torch.optim.Adamax(ps, lr=1e-2),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.9, centered=True),
}
PRICE = 1e-3


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU(),
                         nn.Linear(10, 3))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 5, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 3))


# per gate key, the units the test kills
MLP_DEAD = {"0:in": [0, 3, 7], "0": [1, 2, 5, 11], "2": [0, 9]}
CNN_DEAD = {"0:in": [0], "0": [2, 4], "3": [1], "6:in": [0, 1, 2, 3, 4, 5, 20, 33, 79]}


def data(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 12) if kind == "mlp" else (n, 2, 8, 8)
    return (torch.randn(shape, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=g))


def step(model, opt, x, y) -> None:
    loss = F.cross_entropy(model(x), y) + PRICE * size_penalty(model)
    opt.zero_grad()
    loss.backward()
    opt.step()


def mask_hook(dead: list[int]):
    def hook(gate, args, out):
        keep = torch.ones(gate.width, dtype=out.dtype)
        keep[dead] = 0.0
        shape = [1] * out.ndim
        shape[gate.dim] = -1
        return out * keep.view(shape)
    return hook


def setup(kind: str, opt_name: str):
    """A trained gated model with the DEAD units killed, its optimizer, and the masked
    reference (deep copy, same optimizer state)."""
    torch.manual_seed(0)
    model = mlp() if kind == "mlp" else cnn()
    names = ["0", "2"] if kind == "mlp" else ["0", "3", "6"]
    ex = torch.zeros((2, 12) if kind == "mlp" else (2, 2, 8, 8))
    gate_layers(model, names[:2], inputs=False, example=ex)
    gate_layers(model, names, inputs="only", example=ex)
    model.double()
    opt = OPTIMIZERS[opt_name](model.parameters())
    for i in range(5):
        step(model, opt, *data(kind, 16, i))
    dead = MLP_DEAD if kind == "mlp" else CNN_DEAD
    with torch.no_grad():
        for gate in model_gates(model):
            gate.gate[dead[gate.key]] = -0.3
    for i in range(2):
        step(model, opt, *data(kind, 16, 10 + i))
    ref = copy.deepcopy(model)
    ref_opt = OPTIMIZERS[opt_name](ref.parameters())
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # else tensors are shared
    for gate in model_gates(ref):
        gate.register_forward_hook(mask_hook(dead[gate.key]))
    return model, opt, ref, ref_opt, dead


def keep(n: int, dead: list[int]) -> torch.Tensor:
    return torch.tensor([i for i in range(n) if i not in dead])


def expected_params(kind: str, ref: nn.Module, dead: dict) -> dict[str, torch.Tensor]:
    """The shrunk model's parameters, sliced by hand from the reference."""
    if kind == "mlp":
        ki, k0, k2 = keep(12, dead["0:in"]), keep(16, dead["0"]), keep(10, dead["2"])
        return {"0.weight": ref[0].weight[k0][:, ki], "0.bias": ref[0].bias[k0],
                "2.weight": ref[2].weight[k2][:, k0], "2.bias": ref[2].bias[k2],
                "4.weight": ref[4].weight[:, k2], "4.bias": ref[4].bias}
    ki, k0, k3 = keep(2, dead["0:in"]), keep(6, dead["0"]), keep(5, dead["3"])
    feats = [f for f in range(80) if f not in dead["6:in"] and f // 16 in k3.tolist()]
    return {"0.weight": ref[0].weight[k0][:, ki], "0.bias": ref[0].bias[k0],
            "1.weight": ref[1].weight[k0], "1.bias": ref[1].bias[k0],
            "3.weight": ref[3].weight[k3][:, k0], "3.bias": ref[3].bias[k3],
            "6.weight": ref[6].weight[:, feats], "6.bias": ref[6].bias}


def check_params(model, kind, ref, dead, tol) -> None:
    params = dict(model.named_parameters())
    for name, want in expected_params(kind, ref, dead).items():
        assert params[name].shape == want.shape, name
        torch.testing.assert_close(params[name], want, atol=tol, rtol=0, msg=name)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_shrink_equals_masked_training(kind, opt_name):
    model, opt, ref, ref_opt, dead = setup(kind, opt_name)
    removed = shrink_(model, opt)
    if kind == "cnn":  # channel 1 of conv "3" took features 16..31 with it
        assert removed == {"0:in": 1, "0": 2, "3": 1, "6:in": 8}
    else:
        assert removed == {k: len(v) for k, v in dead.items()}
    x, _ = data(kind, 32, 99)
    for mode in (False, True):  # eval (running statistics) and train (batch statistics)
        model.train(mode), ref.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x), atol=1e-6, rtol=0)
    check_params(model, kind, ref, dead, 1e-12)
    ref_params = dict(ref.named_parameters())
    smaller = 0
    for name, p in model.named_parameters():
        r = ref_params[name]
        assert all(a <= b for a, b in zip(p.shape, r.shape, strict=True)), name
        smaller += p.numel() < r.numel()
        for key, value in opt.state[p].items():
            ref_value = ref_opt.state[r][key]
            if key == "step":
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(ref_value))
            elif torch.is_tensor(value) and value.ndim:
                assert value.shape == p.shape, (name, key)
                assert value.numel() < ref_value.numel() or p.numel() == r.numel()
    assert smaller >= (8 if kind == "mlp" else 10)
    model.train(), ref.train()
    for i in range(20):
        batch = data(kind, 16, 200 + i)
        step(model, opt, *batch)
        step(ref, ref_opt, *batch)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x), ref.eval()(x), atol=1e-5, rtol=0)
        model.train(), ref.train()
    check_params(model, kind, ref, dead, 1e-5)


def test_selected_features_follow_a_removed_channel():
    """The Linear's input gate after Flatten points into the shrunk layout."""
    model, opt, ref, _, dead = setup("cnn", "adam")
    shrink_(model, opt)
    k3 = keep(5, dead["3"]).tolist()
    want = [k3.index(f // 16) * 16 + f % 16 for f in range(80)
            if f not in dead["6:in"] and f // 16 in k3]
    gate = model[6].widthlab_in_gate
    assert gate.index.tolist() == want
    assert gate.n_in == 16 * len(k3)


def test_float32_outputs_unchanged():
    torch.manual_seed(1)
    model = cnn()
    gate_layers(model, ["0", "3"], inputs=True, example=torch.zeros(2, 2, 8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(8, 2, 8, 8)
    loss = model(x).square().mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        model[1].widthlab_out_gate.gate[[0, 5]] = -1.0
        model[3].widthlab_out_gate.gate[[2]] = 0.0
    model.eval()
    with torch.no_grad():
        before = model(x)
    assert shrink_(model, opt) == {"0:in": 0, "0": 2, "3": 1}
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)
    assert model[0].weight.shape == (4, 2, 3, 3) and model[1].running_mean.shape == (4,)
    assert model[3].weight.shape == (4, 4, 3, 3) and model[6].weight.shape == (3, 64)
    assert opt.state[model[6].weight]["exp_avg_sq"].shape == (3, 64)
    assert loss.grad_fn is not None  # the graph from before the shrink is still alive
    model.train()(x).square().mean().backward()  # ... and holds no stale shapes
    opt.step()
    assert model[6].weight.grad.shape == (3, 64)
