"""ModuleConfig.dropout: dropout on the gated units, checked on real numbers (the rate of
zeros, the 1/(1-p) scale of the kept units, bitwise no-op when off, the free-epochs-only
phase, the run identity without the field, resume from a checkpoint)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from widthlab.data.tensors import DatasetSplits, Split
from widthlab.engine.module_run import ModuleRun, gate_dropout
from widthlab.engine.modules import ModuleConfig, train_module
from widthlab.errors import UsageError
from widthlab.nn.surgery import gate_layers, model_gates


def problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    return x, ((x[:, 0] - x[:, 1]) > 0).long()


def model(seed: int = 0, kind: str = "l1") -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2))
    gate_layers(net, ["0", "2"], inputs="only", kind=kind, example=torch.zeros(2, 10))
    return net


def _gate_outputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of the model's gates for ``x`` (hooks registered last: after dropout)."""
    seen: list[torch.Tensor] = []
    hooks = [g.register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
             for g in model_gates(net)]
    net(x)
    for h in hooks:
        h.remove()
    return seen


def test_gate_dropout_zeroes_units_at_the_rate_and_scales_the_rest():
    net = model(1)
    gates = model_gates(net)
    x = torch.randn(4000, 10, generator=torch.Generator().manual_seed(2))
    plain = _gate_outputs(net, x)  # L1 gates at init 1: the gate's output is its input
    assert torch.equal(plain[0], x)
    torch.manual_seed(3)
    with gate_dropout(gates, (0.0, 0.4)):
        first, second = _gate_outputs(net, x)
    assert torch.equal(first, plain[0])  # rate 0: untouched, bit for bit
    zero = second == 0
    kept = ~zero & (plain[1] != 0)
    n = int((plain[1] != 0).sum())
    rate = float((zero & (plain[1] != 0)).sum()) / n
    sigma = (0.4 * 0.6 / n) ** 0.5
    assert abs(rate - 0.4) < 5 * sigma  # Bernoulli(0.4) zeros, per element
    expected = plain[1].double() / 0.6
    torch.testing.assert_close(second[kept].double(), expected[kept], rtol=1e-6, atol=0)
    assert torch.equal(_gate_outputs(net, x)[1], plain[1])  # hooks removed on exit
    with pytest.raises(UsageError, match="one rate per gate"), gate_dropout(gates, (0.1,) * 3):
        pass
    with pytest.raises(UsageError, match="dropout rates"):
        ModuleConfig(dropout=(1.0,))
    assert ModuleConfig(dropout=0.25).dropout == (0.25,)


def _run(**kw) -> tuple[list[dict], dict]:
    net = model(4, kind="hard_concrete")
    recs = train_module(net, problem(160, 5), problem(64, 6), epochs=4, free_epochs=2,
                        fix_gates=True, price=1e-2, batch_size=32, seed=7, **kw)
    return [(r["train_loss"], r["test_error"], r["widths"]) for r in recs], net.state_dict()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dropout_off_is_bitwise_the_run_without_it_and_free_only_is_the_free_epochs():
    base, base_state = _run()
    zero, zero_state = _run(dropout=(0.0,))
    assert zero == base and _same(zero_state, base_state)
    on, on_state = _run(dropout=(0.3,))
    assert on[0] != base[0] and not _same(on_state, base_state)
    free, free_state = _run(dropout=(0.3,), dropout_free_only=True)
    assert free[:2] == base[:2]  # the priced epochs: no mask drawn
    assert free[2][0] != base[2][0] and not _same(free_state, base_state)


def test_dropout_enters_the_run_identity_only_when_set():
    hashed, _ = ModuleConfig().identity()
    assert "dropout" not in hashed and "dropout_free_only" not in hashed
    assert set(hashed) == set(ModuleConfig.hashed_fields()) - {
        "dropout", "dropout_free_only", "distill", "distill_temperature", "shift"}
    hashed, _ = ModuleConfig(dropout=(0.2,), dropout_free_only=True).identity()
    assert hashed["dropout"] == (0.2,) and hashed["dropout_free_only"] is True
    x, y = problem(64, 1)
    data = DatasetSplits("tensors", Split(x, y), Split(x[:0], y[:0]), Split(x, y), 0.0, 1.0, 0)
    ids = {ModuleRun(model(0), data, ModuleConfig(**kw), describe={"m": 1}).run_id
           for kw in ({}, {"dropout": ()}, {"dropout": (0.0,)}, {"dropout": (0.0, 0.0)},
                      {"dropout_free_only": True}, {"dropout": (0.2,)})}
    assert len(ids) == 2  # all-zero rates and free_only without dropout are no dropout
    assert ModuleConfig(dropout=(0.0,), dropout_free_only=True) == ModuleConfig()


def test_dropout_resumes_from_a_checkpoint_bitwise():
    x, y = problem(320, 8)
    data = DatasetSplits("tensors", Split(x, y), Split(x[:0], y[:0]), Split(*problem(64, 9)),
                         0.0, 1.0, 0)
    cfg = ModuleConfig(epochs=3, lr=0.02, price=0.02, gate_lr=0.2, batch_size=32,
                       dropout=(0.2, 0.5), seed=3)
    whole = ModuleRun(model(2, "hard_concrete"), data, cfg, describe={"m": 1})
    torch.manual_seed(11)
    for e in (1, 2):
        whole.train_epoch(e, lambda n: None)
    assert sum(whole.last_record["widths"].values()) < 18  # units removed: resized at resume
    buf = io.BytesIO()  # as on disk: no tensor shared with the running optimizer
    torch.save(whole.checkpoint(final=False), buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    torch.manual_seed(99)  # the global RNG elsewhere: the checkpoint carries it
    resumed = ModuleRun(model(2, "hard_concrete"), data, cfg, describe={"m": 1})
    resumed.restore(ckpt)
    resumed.train_epoch(3, lambda n: None)
    torch.set_rng_state(ckpt["rng"])
    whole.train_epoch(3, lambda n: None)
    assert resumed.last_record["train_loss"] == whole.last_record["train_loss"]
    assert _same(resumed.model.state_dict(), whole.model.state_dict())


class _Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        return self.net(x)


def test_bad_dropout_is_refused_before_the_gates_are_touched():
    """A wrong number of rates, or group gates (one output per batch: the same units would be
    dropped for every example), is refused before the fixed-gates phase freezes the gates."""
    from widthlab.engine.module_run import module_epoch

    net = model(2, kind="hard_concrete")
    x, y = problem(64, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(UsageError, match="one rate per gate"):
        module_epoch(net, opt, x, y, ModuleConfig(batch_size=32), 0.0, gen,
                     nn.functional.cross_entropy, None, fixed_gates=True, dropout=(0.1,) * 3)
    assert all(g.gate.requires_grad and g.training for g in model_gates(net))
    torch.manual_seed(0)
    grouped = _Wrapped()
    gate_layers(grouped, groups=["net.0:out"], example=torch.zeros(2, 10))
    with pytest.raises(UsageError, match="whole batch"), gate_dropout(model_gates(grouped),
                                                                       (0.2,)):
        pass
