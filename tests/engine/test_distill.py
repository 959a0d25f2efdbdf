"""ModuleConfig.distill: knowledge distillation from a teacher's stored logits, checked on real
numbers (the loss against a float64 numpy reference, the trainer's minibatch rows against a
naive index-carrying loss, bitwise no-op when unset, the run identity, resume, refusals)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from widthlab.data.tensors import DatasetSplits, Split
from widthlab.engine.distill import distill_loss, logits_id, teacher_logits
from widthlab.engine.module_run import ModuleRun
from widthlab.engine.modules import ModuleConfig, train_module
from widthlab.errors import UsageError
from widthlab.nn.surgery import gate_layers


def problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    return x, ((x[:, 0] - x[:, 1]) > 0).long() + (x[:, 2] > 1).long()


def model(seed: int = 0, kind: str = "l1") -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    gate_layers(net, ["0", "2"], inputs="only", kind=kind, example=torch.zeros(2, 10))
    return net


def splits(n: int = 192) -> DatasetSplits:
    x, y = problem(n, 1)
    return DatasetSplits("tensors", Split(x, y), Split(x[:0], y[:0]), Split(*problem(64, 2)),
                         0.0, 1.0, 0)


def teacher_of(x: torch.Tensor, seed: int = 5) -> torch.Tensor:
    torch.manual_seed(seed)
    return teacher_logits(nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3)), x)


def reference(s: np.ndarray, y: np.ndarray, t: np.ndarray, a: float, temp: float) -> float:
    """Naive float64: a loop over the examples and classes."""
    total_ce = total_kl = 0.0
    for b in range(len(y)):
        ls = s[b] - s[b].max()
        ce = -(ls[y[b]] - np.log(np.exp(ls).sum()))
        st_ = s[b] / temp
        tt = t[b] / temp
        ps = np.exp(st_ - st_.max()) / np.exp(st_ - st_.max()).sum()
        pt = np.exp(tt - tt.max()) / np.exp(tt - tt.max()).sum()
        kl = sum(pt[c] * (np.log(pt[c]) - np.log(ps[c])) for c in range(len(pt)))
        total_ce += ce
        total_kl += kl
    n = len(y)
    return (1 - a) * total_ce / n + a * temp ** 2 * total_kl / n


@settings(max_examples=40, deadline=None)
@given(a=st.floats(0, 1), temp=st.floats(0.5, 8), seed=st.integers(0, 2 ** 16),
       scale=st.floats(0.1, 20))
def test_distill_loss_equals_a_naive_float64_reference(a, temp, seed, scale):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(7, 5, generator=g, dtype=torch.float64) * scale
    t = torch.randn(7, 5, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, 5, (7,), generator=g)
    got = float(distill_loss(s, y, t, a, temp))
    want = reference(s.numpy(), y.numpy(), t.numpy(), a, temp)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_distill_loss_gradient_reaches_the_student_only():
    s = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    distill_loss(s, torch.tensor([0, 1, 2, 0]), t, 1.0, 2.0).backward()
    assert t.grad is None and s.grad is not None
    # a = 1, the student equal to the teacher: the KL term is at its minimum, gradient 0
    s2 = t.detach().clone().requires_grad_(True)
    distill_loss(s2, torch.tensor([0, 1, 2, 0]), t, 1.0, 2.0).backward()
    assert float(s2.grad.abs().max()) < 1e-12


def _run(**kw) -> tuple[list, dict]:
    data = splits()
    cfg = ModuleConfig(epochs=3, lr=0.02, price=0.02, gate_lr=0.2, batch_size=32, seed=3,
                       free_epochs=1, **{k: v for k, v in kw.items() if k != "teacher"})
    recs = train_module(model(2, "hard_concrete"), (data.train.x, data.train.y),
                        (data.test.x, data.test.y), cfg, teacher=kw.get("teacher"))
    return [(r["train_loss"], r["test_error"], r["widths"]) for r in recs], recs


def test_the_trainer_distills_each_minibatch_rows_own_teacher_logits():
    """The trainer's distilled run equals, bit for bit, a naive run whose loss carries each
    minibatch row's index to look up its label and teacher row."""
    data = splits()
    logits = teacher_of(data.train.x)
    got, _ = _run(distill=0.7, distill_temperature=3.0, teacher=logits)
    labels = data.train.y

    def naive(out, idx):
        return distill_loss(out, labels[idx], logits[idx], 0.7, 3.0)

    cfg = ModuleConfig(epochs=3, lr=0.02, price=0.02, gate_lr=0.2, batch_size=32, seed=3,
                       free_epochs=1)
    recs = train_module(model(2, "hard_concrete"), (data.train.x, torch.arange(len(labels))),
                        (data.test.x, data.test.y), cfg, loss_fn=naive)
    assert got == [(r["train_loss"], r["test_error"], r["widths"]) for r in recs]
    plain, _ = _run()
    assert got[0][0] != plain[0][0]  # the teacher changed the training


def test_distill_unset_is_bitwise_the_run_without_it_and_out_of_the_identity():
    base, _ = _run()
    zero, _ = _run(distill=0.0, distill_temperature=9.0)
    assert zero == base
    assert ModuleConfig(distill=0, distill_temperature=9.0) == ModuleConfig()
    hashed, _ = ModuleConfig().identity()
    assert "distill" not in hashed and "distill_temperature" not in hashed
    hashed, _ = ModuleConfig(distill=1, distill_temperature=2).identity()
    assert hashed["distill"] == 1.0 and hashed["distill_temperature"] == 2.0
    data = splits()
    logits = teacher_of(data.train.x)
    other = logits.clone()
    other[0, 0] += 1e-3

    def run_id(cfg, teacher=None):
        return ModuleRun(model(0), data, cfg, describe={"m": 1}, teacher=teacher).run_id

    ids = [run_id(ModuleConfig()), run_id(ModuleConfig(distill=0.0, distill_temperature=2)),
           run_id(ModuleConfig(distill=0.5), logits), run_id(ModuleConfig(distill=0.5), other),
           run_id(ModuleConfig(distill=0.5, distill_temperature=2), logits)]
    assert ids[0] == ids[1] and len(set(ids)) == 4
    assert logits_id(logits) == logits_id(logits.clone()) != logits_id(other)


def test_distilled_run_resumes_from_a_checkpoint_bitwise():
    data = splits(320)
    logits = teacher_of(data.train.x)
    cfg = ModuleConfig(epochs=3, lr=0.02, price=0.02, gate_lr=0.2, batch_size=32, seed=3,
                       distill=0.5, distill_temperature=2.0)
    whole = ModuleRun(model(2, "hard_concrete"), data, cfg, describe={"m": 1}, teacher=logits)
    for e in (1, 2):
        whole.train_epoch(e, lambda n: None)
    buf = io.BytesIO()
    torch.save(whole.checkpoint(final=False), buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = ModuleRun(model(2, "hard_concrete"), data, cfg, describe={"m": 1},
                        teacher=logits.clone())
    resumed.restore(ckpt)
    resumed.train_epoch(3, lambda n: None)
    whole.train_epoch(3, lambda n: None)
    assert resumed.last_record["train_loss"] == whole.last_record["train_loss"]
    a, b = resumed.model.state_dict(), whole.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_distillation_is_refused():
    data = splits()
    logits = teacher_of(data.train.x)
    for kw in ({"distill": 1.5}, {"distill": -0.1}, {"distill": 0.5, "distill_temperature": 0},
               {"distill": 0.5, "distill_temperature": float("inf")}):
        with pytest.raises(UsageError, match="distill"):
            ModuleConfig(**kw)
    with pytest.raises(UsageError, match="needs the teacher"):
        ModuleRun(model(0), data, ModuleConfig(distill=0.5), describe={"m": 1})
    with pytest.raises(UsageError, match="distill is 0"):
        ModuleRun(model(0), data, ModuleConfig(), describe={"m": 1}, teacher=logits)
    with pytest.raises(UsageError, match="one row per training example"):
        ModuleRun(model(0), data, ModuleConfig(distill=0.5), describe={"m": 1},
                  teacher=logits[:-1])


class _Lazy:
    def __init__(self, logits: torch.Tensor, tag: str):
        self.logits, self.tag, self.calls = logits, tag, 0

    def describe(self) -> dict:
        return {"teacher": self.tag}

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return self.logits


def test_a_callable_teacher_is_computed_once_at_the_first_epoch_and_identified_by_describe():
    data = splits()
    logits = teacher_of(data.train.x)
    cfg = ModuleConfig(epochs=2, lr=0.02, price=0.02, gate_lr=0.2, batch_size=32, seed=3,
                       distill=0.5)
    lazy = _Lazy(logits, "a")
    run = ModuleRun(model(2, "hard_concrete"), data, cfg, describe={"m": 1}, teacher=lazy)
    ids = {run.run_id, ModuleRun(model(2), data, cfg, describe={"m": 1},
                                 teacher=_Lazy(logits, "a")).run_id}
    assert lazy.calls == 0 and len(ids) == 1  # the id needs no logits
    assert run.run_id != ModuleRun(model(2), data, cfg, describe={"m": 1},
                                   teacher=_Lazy(logits, "b")).run_id
    eager = ModuleRun(model(2, "hard_concrete"), data, cfg, describe={"m": 1}, teacher=logits)
    for e in (1, 2):
        run.train_epoch(e, lambda n: None)
        eager.train_epoch(e, lambda n: None)
        assert run.last_record["train_loss"] == eager.last_record["train_loss"]
    assert lazy.calls == 1
    bad = ModuleRun(model(2), data, cfg, describe={"m": 1}, teacher=_Lazy(logits[:5], "c"))
    with pytest.raises(UsageError, match="one row per training example"):
        bad.train_epoch(1, lambda n: None)
    with pytest.raises(UsageError, match="distill is 0"):
        ModuleRun(model(2), data, ModuleConfig(), describe={"m": 1}, teacher=lazy)


class _Drawing(_Lazy):
    def __call__(self) -> torch.Tensor:
        torch.rand(100)  # e.g. a teacher trained here: torch's global generator moves
        return super().__call__()


def test_a_callable_teacher_leaves_the_runs_own_random_draws_alone():
    """Dropout draws from torch's global generator; the teacher computed at the first epoch
    must not shift them (else a resume, which computes it at another epoch, would differ)."""
    data = splits()
    logits = teacher_of(data.train.x)
    cfg = ModuleConfig(epochs=2, lr=0.02, batch_size=32, seed=3, distill=0.5, dropout=0.3)
    losses = []
    for teacher in (_Drawing(logits, "d"), logits):  # one run after the other (one generator)
        run = ModuleRun(model(2), data, cfg, describe={"m": 1}, teacher=teacher)
        for e in (1, 2):
            run.train_epoch(e, lambda n: None)
            losses.append(run.last_record["train_loss"])
    assert losses[:2] == losses[2:]


def naive_shift(x: np.ndarray, which: np.ndarray, shape, s: int, fill: float) -> np.ndarray:
    c, h, w = shape
    k = 2 * s + 1
    out = np.full((len(x), c, h, w), fill, dtype=x.dtype)
    img = x.reshape(len(x), c, h, w)
    for b in range(len(x)):
        dy, dx = which[b] // k - s, which[b] % k - s
        for r in range(h):
            for col in range(w):
                if 0 <= r - dy < h and 0 <= col - dx < w:
                    out[b, :, r, col] = img[b, :, r - dy, col - dx]
    return out.reshape(len(x), -1)


@pytest.mark.parametrize("shift", [1, 2])
def test_shift_images_equals_a_naive_loop(shift):
    from widthlab.engine.distill import n_shifts, shift_images

    g = torch.Generator().manual_seed(shift)
    x = torch.randn(30, 2 * 5 * 6, generator=g)
    which = torch.randint(0, n_shifts(shift), (30,), generator=g)
    got = shift_images(x, which, (2, 5, 6), shift, -0.5)
    want = naive_shift(x.numpy(), which.numpy(), (2, 5, 6), shift, -0.5)
    assert np.array_equal(got.numpy(), want)
    centre = torch.full((30,), shift * (2 * shift + 1) + shift)
    assert torch.equal(shift_images(x, centre, (2, 5, 6), shift, 0.0), x)


def image_splits(n: int = 96) -> DatasetSplits:
    import dataclasses

    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 4, 5, generator=g) * 0.3
    x[torch.arange(n), 0, y + 1, :] += 2.0
    x = x.reshape(n, 20)
    return dataclasses.replace(DatasetSplits("tensors", Split(x, y), Split(x[:0], y[:0]),
                                             Split(x[:32], y[:32]), 0.0, 1.0, 0),
                               sample_shape=(1, 4, 5))


def test_shifted_distillation_equals_a_naive_training_loop():
    """Each step draws the minibatch's translations from the minibatch generator after its
    order; the student sees the translated rows and is taught the teacher's logits of them."""
    from widthlab.engine.distill import n_shifts, shifted_teacher_logits

    data = image_splits()
    x, y = data.train.x, data.train.y
    fill = float(x.min())
    torch.manual_seed(6)
    teach = nn.Sequential(nn.Linear(20, 12), nn.Tanh(), nn.Linear(12, 3))
    logits = shifted_teacher_logits(teach, x, (1, 4, 5), 1, fill)
    assert logits.shape == (96, 9, 3)
    assert torch.equal(logits[:, 4], teacher_logits(teach, x))  # the untranslated images
    cfg = ModuleConfig(epochs=2, lr=0.01, batch_size=32, seed=7, distill=0.5, shift=1,
                       distill_temperature=2.0, shrink=False)

    def student():
        torch.manual_seed(8)
        return nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 3))

    got = student()
    recs = train_module(got, (x, y), (data.test.x, data.test.y), cfg, teacher=logits,
                        sample_shape=(1, 4, 5))
    with pytest.raises(UsageError, match="sample shape"):
        train_module(student(), (x, y), (data.test.x, data.test.y), cfg, teacher=logits)
    ref = student()
    opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(7)
    for _ in range(2):
        order = torch.randperm(96, generator=gen)
        for i in range(0, 96, 32):
            idx = order[i:i + 32]
            which = torch.randint(0, n_shifts(1), (len(idx),), generator=gen)
            xb = torch.from_numpy(naive_shift(x[idx].numpy(), which.numpy(), (1, 4, 5), 1,
                                              fill))
            loss = distill_loss(ref(xb), y[idx], logits[idx, which], 0.5, 2.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(got.parameters(), ref.parameters(),
                                                 strict=True))
    assert len(recs) == 2
