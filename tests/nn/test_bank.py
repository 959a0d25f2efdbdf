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


def rel_fro(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("native", [True, False])
def test_bf16_training_path_matches_float64(monkeypatch, native):
    """Both bf16 layouts of the fused first layer (native: bf16 activations and activation
    gradients; emulated: fp32 ones) give the float64 models' logits and gradients to bf16
    precision, with fp32 gradients for the fp32 master weights.

    The reference uses the bf16 run's own ReLU decisions: a unit whose pre-activation is within
    bf16 rounding of zero may switch, which moves a whole sample's term of its gradient row
    (a few such switches are ~5% of a 64-sample gradient), so those are counted separately."""
    import widthlab.nn.bank as bank_module

    monkeypatch.setattr(bank_module, "native_bf16", lambda device: native)
    specs = [ModelSpec((37,), seed=0), ModelSpec((70, 5), seed=1), ModelSpec((37,), seed=2)]
    bank = MLPBank(specs, chunk=16)  # several chunks, a 3-row tail joined to its neighbour
    bank.compute_dtype = torch.bfloat16
    bank.init_grads()
    x, y = next(batches(1, batch=64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, a = bank.hidden(x)
        logits = bank.head(a).float()
    assert a.dtype == (torch.bfloat16 if native else torch.float32)
    bank.per_model_loss(logits, y).sum().backward()
    for m, (s0, s1) in enumerate(bank.slices):
        ref = bank.export(m).double()
        z = ref.layers[0](x.double())
        mask = a[:, s0:s1] > 0
        assert (mask != (z > 0)).double().mean() < 0.01
        h = z * mask.double()
        for layer in ref.layers[1:-1]:
            h = F.relu(layer(h))
        ref_logits = ref.layers[-1](h)
        F.cross_entropy(ref_logits, y).backward()
        assert rel_fro(logits[:, m].double(), ref_logits.detach()) < 2e-2
        for (name, _, grad), p in zip(bank.model_params(m), ref.parameters(), strict=True):
            assert grad.dtype == torch.float32, name
            assert rel_fro(grad.double(), p.grad) < 2e-2, name
