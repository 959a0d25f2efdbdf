"""WidthSizer and the integrations' errors, without training (fast)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.integrations import WidthSizer


def test_core_imports_no_trainer():
    code = ("import sys, widthlab, widthlab.nn, widthlab.units, widthlab.studies, "
            "widthlab.integrations; "
            "print(sorted(m for m in ('lightning', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("kwargs, match", [
    ({}, "give the layers"),
    ({"names": ["0"], "price": -1.0}, "price"),
    ({"names": ["0"], "every_n_steps": 0}, "every_n_steps"),
    ({"names": ["0"], "every_n_epochs": 1.5}, "every_n_epochs"),
    ({"names": ["0"], "rule": "nope"}, "rule"),
])
def test_bad_configuration_is_refused(kwargs, match):
    with pytest.raises(UsageError, match=match):
        WidthSizer(**kwargs)


def test_sizer_prices_and_shrinks_like_the_surgery_it_wraps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with pytest.raises(UsageError, match="example=x"):
        WidthSizer(["0"]).gate(model)
    s = WidthSizer(["0"], price=0.5, every_n_steps=3, example=torch.zeros(2, 4))
    assert s.gate(model) and not s.gate(model)  # gated once
    gate = model[0].widthlab_out_gate
    with torch.no_grad():
        gate.gate.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0, 2.0, -0.1]))
    loss = torch.tensor(1.0)
    assert s.add_penalty(loss, model).item() == pytest.approx(1.0 + 0.5 * 3.5)
    assert [s.due(step=k) for k in (1, 3, 6, 7)] == [False, True, True, False]
    assert not s.due(epoch=1)
    opt = torch.optim.Adam(model.parameters())
    assert s.shrink(model, opt, step=3) == {"0": 3}
    assert model[0].out_features == 3 and model[2].in_features == 3
    assert s.history == [{"step": 3, "removed": {"0": 3}, "widths": {"0": 3}}]
    fresh = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    s.gate(fresh)
    s.resize(fresh, model.state_dict(), s.sizes(model))
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(5, 4)
    assert torch.equal(fresh(x), model(x))


def test_trainer_misuse_is_explained():
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from widthlab.integrations.lightning import WidthCallback as LCallback
    from widthlab.integrations.transformers import WidthCallback as HFCallback

    cb = LCallback(["0"])
    with pytest.raises(UsageError, match="'loss'"):
        cb._priced({"logits": torch.zeros(1)}, nn.Linear(1, 1))
    with pytest.raises(UsageError, match="loss tensor"):
        cb._priced(3.0, nn.Linear(1, 1))
    with pytest.raises(UsageError, match="not an FFN module"):
        HFCallback(ffn=["0"]).gate(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(UsageError, match="no '\\*.mlp' module"):
        HFCallback().gate(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(UsageError, match="give the layers"):
        HFCallback(ffn=None)


def test_groups_are_passed_through_to_gate_layers(monkeypatch):
    import widthlab.integrations._core as core

    seen = {}

    def fake_gate_layers(model, names, **kwargs):
        seen.update(kwargs, names=names)
        return []

    monkeypatch.setattr(core, "gate_layers", fake_gate_layers)
    handle = object()
    WidthSizer(groups=[handle], kind="hard_concrete", seed=3).gate(nn.Linear(2, 2))
    assert seen["groups"] == [handle] and seen["names"] == [] and seen["seed"] == 3
    monkeypatch.undo()
    if "groups" not in core.gate_layers.__code__.co_varnames:  # before the gate family lands
        with pytest.raises(UsageError, match="groups= needs"):
            WidthSizer(groups=[handle]).gate(nn.Linear(2, 2))
