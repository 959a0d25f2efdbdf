"""The bank equals its models trained alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from widthlab.engine.optim import BankOptimizer
from widthlab.errors import UsageError
from widthlab.nn.bank import MLP, MLPBank, ModelSpec
from widthlab.nn.modifiers import NeuronGate


def batches(n_steps, batch=32, d=784, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        x = torch.randn(batch, d, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        yield x, y


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def test_init_matches_manual_seed_nn_linear():
    """A bank member starts exactly where torch.manual_seed + nn.Linear-style init starts."""
    bank = MLPBank([ModelSpec((16,), seed=3), ModelSpec((8, 4), seed=5)])
    for m, spec in enumerate(bank.specs):
        ref = MLP([784, *spec.hidden, 10], seed=spec.seed)
        for (name, view, _), (rname, p) in zip(bank.model_params(m), ref.named_parameters(),
                                              strict=True):
            assert name == rname
            torch.testing.assert_close(view, p.detach(), rtol=0, atol=0)
        bound = 1 / 784 ** 0.5
        assert ref.layers[0].weight.abs().max() <= bound
        assert ref.layers[0].weight.std() > 0.9 * bound / 3 ** 0.5


def test_forward_and_loss_match_each_model():
    specs = [ModelSpec((5,), seed=0), ModelSpec((7,), seed=1), ModelSpec((5,), seed=2),
             ModelSpec((6, 3), seed=4)]
    bank = MLPBank(specs, chunk=4)  # chunk smaller than a model: split GEMMs
    x, y = next(batches(1))
    logits = bank(x)
    assert logits.shape == (32, 4, 10)
    losses = bank.loss(x, y)
    for m in range(4):
        ref = bank.export(m)
        torch.testing.assert_close(logits[:, m], ref(x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(losses[m], F.cross_entropy(ref(x), y), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chunk", [1024, 5])
def test_bank_training_equals_training_alone(chunk):
    """Acceptance: 3 models in the bank vs the same 3 alone, 50 Adam steps, 1e-5 relative."""
    specs = [ModelSpec((16,), seed=0), ModelSpec((45,), seed=1, weight_decay=1e-2),
             ModelSpec((16,), seed=2, lr=3e-3)]
    bank = MLPBank(specs, chunk=chunk)
    opt = BankOptimizer(bank, lr=1e-3)
    refs = [MLP([784, *s.hidden, 10], seed=s.seed) for s in specs]
    ref_opts = [torch.optim.Adam(r.parameters(), lr=s.lr or 1e-3, weight_decay=s.weight_decay)
                for r, s in zip(refs, specs, strict=True)]
    for x, y in batches(50):
        bank.zero_grad()
        bank.loss(x, y).sum().backward()
        opt.step()
        for r, o in zip(refs, ref_opts, strict=True):
            o.zero_grad()
            F.cross_entropy(r(x), y).backward()
            o.step()
    for m, ref in enumerate(refs):
        for (name, view, _), (_, p) in zip(bank.model_params(m), ref.named_parameters(),
                                          strict=True):
            assert rel_err(view, p.detach()) < 1e-5, (m, name)
        # and they really moved
        assert rel_err(view, MLP([784, *specs[m].hidden, 10], seed=specs[m].seed)
                       .layers[-1].bias.detach()) > 1e-2


def test_gradient_buffers_are_persistent():
    bank = MLPBank([ModelSpec((8,), seed=0)])
    ptrs = [p.grad.data_ptr() for p in bank.trainable()] + [bank.w0_grad.data_ptr()]
    opt = BankOptimizer(bank)
    for x, y in batches(3):
        bank.zero_grad()
        bank.loss(x, y).sum().backward()
        opt.step()
    assert ptrs == [p.grad.data_ptr() for p in bank.trainable()] + [bank.w0_grad.data_ptr()]
    assert bank.w0_grad.abs().sum() > 0


def test_gated_bank_with_own_lr_and_penalty_equals_alone():
    """A modifier (per-neuron gates, own lr, L1 penalty) trains as the model alone would."""
    specs = [ModelSpec((12,), seed=0), ModelSpec((20,), seed=1)]
    l1 = [1e-2, 1e-3]
    bank = MLPBank(specs)
    bank.add_modifier(NeuronGate(l1, lr=1e-2))
    opt = BankOptimizer(bank, lr=1e-3)
    refs, ref_opts, gates = [], [], []
    for s in specs:
        r = MLP([784, *s.hidden, 10], seed=s.seed)
        g = torch.ones(s.hidden[0], requires_grad=True)
        refs.append(r)
        gates.append(g)
        ref_opts.append(torch.optim.Adam([{"params": r.parameters()},
                                          {"params": [g], "lr": 1e-2}], lr=1e-3))
    for x, y in batches(30):
        bank.zero_grad()
        bank.loss(x, y).sum().backward()
        opt.step()
        for r, g, o, lam in zip(refs, gates, ref_opts, l1, strict=True):
            o.zero_grad()
            h = F.relu(r.layers[0](x)) * g
            (F.cross_entropy(r.layers[1](h), y) + lam * g.abs().sum()).backward()
            o.step()
    for m in range(2):
        params = bank.model_params(m)
        assert rel_err(params[-1][1], gates[m].detach()) < 1e-5
        assert rel_err(params[0][1], refs[m].layers[0].weight.detach()) < 1e-5
    assert (bank.modifiers[0].gate != 1).all()


def test_bad_specs_raise_clear_errors():
    with pytest.raises(UsageError, match="positive"):
        ModelSpec((0,))
    with pytest.raises(UsageError, match="at least one"):
        MLPBank([])
    bank = MLPBank([ModelSpec((4,))])
    with pytest.raises(UsageError, match=r"\(B, 784\)"):
        bank(torch.zeros(3, 10))
