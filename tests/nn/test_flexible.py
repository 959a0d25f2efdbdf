"""Flexible layers: the cut-off penalty against a float64 numerical integral and finite
differences, FlexibleLinear against numpy, and the FlexibleCutoff bank modifier against models
trained alone and against the static engine.

Example::

    .venv/bin/python -m pytest -q tests/nn/test_flexible.py
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import integrate, special

from tests.engine.child_run import synthetic
from widthlab.engine.trainer import Engine, TrainConfig, epoch_order, load_bank, train
from widthlab.errors import UsageError
from widthlab.nn.bank import MLP, MLPBank, ModelSpec
from widthlab.nn.flexible import (
    FlexibleCutoff,
    FlexibleLinear,
    FlexibleMLP,
    cutoff_integral,
    random_activation,
    random_slopes,
)
from widthlab.store import Store


# ------------------------------------------------------------------------------ references
def _points(x0: float, k: float, n: float) -> list[float] | None:
    """Break points where the integrands' mass is (around the transition, or at the end of
    [0, n] nearest to it when x0 lies outside), so quad cannot step over it."""
    c = min(max(x0, 0.0), n)
    pts = sorted({c + sign * d / k for d in (0.0, 1.0, 5.0, 20.0, 60.0) for sign in (-1, 1)
                  if 0 < c + sign * d / k < n})
    return pts or None


def _quad(f, n: float, pts) -> tuple[float, float]:
    with warnings.catch_warnings():
        # quad flags roundoff near its 1e-11 target; the 1e-8 comparisons catch a bad result
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return integrate.quad(f, 0.0, n, points=pts, epsabs=0.0, epsrel=1e-11, limit=400)


def quad_penalty(x0: float, k: float, n: float) -> float:
    """The integral of sigmoid(k (x0 - t)) over [0, n], numerically, in float64."""
    return _quad(lambda t: special.expit(k * (x0 - t)), n, _points(x0, k, n))[0]


def quad_gradients(x0: float, k: float, n: float) -> tuple[float, float, float]:
    """d/dx0 and d/dk of the penalty as integrals of the differentiated integrand, and the
    integral of |d/dk integrand| (the scale of the k-gradient, for an absolute tolerance)."""
    def dsig(t):
        z = k * (x0 - t)
        return special.expit(z) * special.expit(-z)

    pts = _points(x0, k, n)
    gx = _quad(lambda t: k * dsig(t), n, pts)[0]
    gk = _quad(lambda t: (x0 - t) * dsig(t), n, pts)[0]
    scale = _quad(lambda t: abs(x0 - t) * dsig(t), n, pts)[0]
    return gx, gk, scale


def penalty_and_grads(x0: float, k: float, n: float, dtype=torch.float64):
    x = torch.tensor(x0, dtype=dtype, requires_grad=True)
    kk = torch.tensor(k, dtype=dtype, requires_grad=True)
    p = cutoff_integral(x, kk, n)
    p.backward()
    return p.item(), x.grad.item(), kk.grad.item()


# ------------------------------------------------------------------------------ the penalty
@given(x0=st.floats(-1e6, 1e6), k=st.floats(1e-3, 10.0), n=st.floats(1.0, 1e5))
@example(x0=-703296.0, k=0.001, n=6487.0)  # gradients near 1e-297: their terms underflow
def test_penalty_matches_the_numerical_integral(x0, k, n):
    p, gx, gk = penalty_and_grads(x0, k, n)
    assert all(math.isfinite(v) for v in (p, gx, gk))
    ref = quad_penalty(x0, k, n)
    assert p == pytest.approx(ref, rel=1e-8, abs=1e-300)
    ref_gx, ref_gk, scale = quad_gradients(x0, k, n)
    assert gx == pytest.approx(ref_gx, rel=1e-7, abs=1e-11)
    # below ~1e-290 the gradient's terms are subnormal and keep only a few digits: an
    # absolute floor there (a gradient of 1e-290 is zero for any optimizer)
    assert gk == pytest.approx(ref_gk, rel=1e-7, abs=1e-9 * scale + 1e-290)
    assert 0.0 <= p <= n and 0.0 <= gx <= 1.0


@given(x0=st.floats(-1e6, 1e6), k=st.floats(1e-3, 10.0), n=st.floats(1.0, 1e5))
def test_float32_parameters_never_give_nan(x0, k, n):
    layer = FlexibleLinear(3, 2, x0=x0, k=k, learn_k=True)
    # the layer's N is 2; check the functional form at the drawn N in float32 too
    x = torch.tensor(x0, dtype=torch.float32, requires_grad=True)
    kk = torch.tensor(k, dtype=torch.float32, requires_grad=True)
    p = cutoff_integral(x, kk, n)
    (p + layer.penalty() + layer(torch.ones(1, 3)).sum()).backward()
    for t in (p, x.grad, kk.grad, layer.x0.grad, layer.log_k.grad):
        assert torch.isfinite(t).all()
    assert p.dtype == torch.float32


@pytest.mark.parametrize("x0,k,n", [(3.0, 1.0, 10.0), (-2.5, 0.3, 7.0), (140.0, 0.05, 500.0),
                                    (499.0, 2.0, 500.0), (0.4, 7.0, 1.0), (12.0, 1e-3, 30.0)])
def test_gradients_match_finite_differences_of_the_integral(x0, k, n):
    """Central differences of the quad reference (not of our formula)."""
    _, gx, gk = penalty_and_grads(x0, k, n)
    h = 1e-3 / max(k, 1.0)  # well inside the transition, which is about 1 / k wide
    fd_x = (quad_penalty(x0 + h, k, n) - quad_penalty(x0 - h, k, n)) / (2 * h)
    hk = 1e-4 * k
    fd_k = (quad_penalty(x0, k + hk, n) - quad_penalty(x0, k - hk, n)) / (2 * hk)
    assert gx == pytest.approx(fd_x, rel=2e-5, abs=1e-9)
    assert gk == pytest.approx(fd_k, rel=2e-5, abs=1e-7 * n)


def test_gradcheck_on_a_grid_and_broadcasting():
    x0 = torch.tensor([-30.0, -1.0, 0.0, 2.5, 6.0, 9.9, 40.0], dtype=torch.float64,
                      requires_grad=True)
    k = torch.tensor([0.2, 1.0, 3.0, 0.7, 1.5, 0.05, 2.0], dtype=torch.float64,
                     requires_grad=True)
    n = torch.tensor([10.0, 10.0, 3.0, 5.0, 12.0, 10.0, 50.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: cutoff_integral(a, b, n), (x0, k))
    # one k for many x0: the gradient of k sums over them
    k1 = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: cutoff_integral(a, b, n), (x0, k1))
    closed = (np.logaddexp(0, 0.8 * x0.detach().numpy())
              - np.logaddexp(0, 0.8 * (x0.detach().numpy() - n.numpy()))) / 0.8
    np.testing.assert_allclose(cutoff_integral(x0, k1, n).detach().numpy(), closed, rtol=1e-12)


# ------------------------------------------------------------------------------ FlexibleLinear
def test_forward_matches_numpy():
    torch.manual_seed(0)
    layer = FlexibleLinear(6, 9, x0=4.3, k=0.7, dtype=torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64)
    w, b = layer.linear.weight.detach().numpy(), layer.linear.bias.detach().numpy()
    ref = np.maximum(x.numpy() @ w.T + b, 0) * special.expit(0.7 * (4.3 - np.arange(9)))
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-12)
    assert layer.penalty().item() == pytest.approx(quad_penalty(4.3, 0.7, 9.0), rel=1e-10)


def test_starting_x0_is_honoured():
    """The journal's erratum: its first version ignored the starting size."""
    assert FlexibleLinear(4, 50, x0=37.5).x0.item() == 37.5
    assert FlexibleLinear(4, 50, x0=37.5).effective_width() == 37.5
    assert FlexibleLinear(4, 50).x0.item() == 50.0        # default: N, as in the journal
    assert FlexibleLinear(4, 50, x0=-3.0).effective_width() == 0.0
    assert FlexibleLinear(4, 50, x0=1e4).effective_width() == 50.0
    bank = MLPBank([ModelSpec((10,), seed=0), ModelSpec((30,), seed=1),
                    ModelSpec((10,), seed=2)], 20, 10)
    bank.add_modifier(FlexibleCutoff(x0=[0.0, 25.0, 7.5]))
    assert bank.modifiers[0].x0.tolist() == [0.0, 25.0, 7.5]
    default = MLPBank([ModelSpec((10,), seed=0), ModelSpec((30,), seed=1)], 20, 10)
    default.add_modifier(FlexibleCutoff())
    assert default.modifiers[0].x0.tolist() == [10.0, 30.0]


def test_starting_x0_is_honoured_through_the_engine(tmp_path):
    data = synthetic()
    specs = [ModelSpec((40,), seed=s) for s in range(3)]
    starts = [0.0, 17.0, 33.0]
    cfg = TrainConfig(dataset="synthetic", epochs=1, batch_size=64, device="cpu",
                      stats_epochs="none", eval_splits=("test",))
    frozen = train(specs, cfg, tmp_path, data=data, progress=False,
                   modifiers=[lambda: FlexibleCutoff(x0=starts, penalty=1e-3, lr=0.0)])
    moving = train(specs, cfg, tmp_path, data=data, progress=False,
                   modifiers=[lambda: FlexibleCutoff(x0=starts, penalty=1e-3, lr=1.0)])
    st_ = Store(tmp_path)

    def x0(run_id):
        m = st_.metrics(run_id)
        return m[m.name == "x0"].sort_values("model").value.to_numpy()

    np.testing.assert_array_equal(x0(frozen), starts)
    steps = math.ceil(len(data.train) / 64)
    moved = x0(moving) - np.array(starts)
    # Adam moves x0 by at most about lr per step: each model stays near its own start
    assert np.all(np.abs(moved) <= 1.01 * steps) and np.any(moved != 0)
    assert np.all(np.diff(x0(moving)) > 0)
    # one x0 learning rate per model: each model moves as in the run that gave it its lr
    mixed = train(specs, cfg, tmp_path, data=data, progress=False,
                  modifiers=[lambda: FlexibleCutoff(x0=starts, penalty=1e-3, lr=[0.0, 1.0, 0.0])])
    np.testing.assert_array_equal(x0(mixed), [starts[0], x0(moving)[1], starts[2]])
    with pytest.raises(UsageError, match="one per model"):
        MLPBank(specs, 20, 3).add_modifier(FlexibleCutoff(lr=[1.0, 0.0]))
    with pytest.raises(UsageError, match="learn_k needs one"):
        FlexibleCutoff(lr=[1.0, 0.0, 1.0], learn_k=True)


def test_prune_is_exact_on_the_kept_neurons():
    torch.manual_seed(1)
    layer = FlexibleLinear(8, 30, x0=11.6, k=1.0).eval()
    x = torch.randn(16, 8)
    # default: up to the end of the gray zone, scaler >= sigmoid(-5): i <= 16.6
    assert layer.kept().tolist() == list(range(17))
    pruned = layer.prune()
    assert isinstance(pruned, torch.nn.Linear) and pruned.out_features == 17
    torch.testing.assert_close(F.relu(pruned(x)), layer(x)[:, :17], rtol=1e-6, atol=1e-7)
    left = layer.prune(threshold=0.5)  # exactly the neurons left of x0: 0..11
    assert left.out_features == 12
    torch.testing.assert_close(F.relu(left(x)), layer(x)[:, :12], rtol=1e-6, atol=1e-7)
    net = FlexibleMLP(8, 30, 4, x0=-6.0)
    assert net.prune()[0].out_features == 0 and net.prune()(x).shape == (16, 4)


def test_random_slope_draws_gray_zones_uniformly_in_1_20():
    k = random_slopes(20000, step=3, seed=1)
    widths = 10.0 / k.double()
    assert 1.0 <= float(widths.min()) and float(widths.max()) <= 20.0
    assert abs(float(widths.mean()) - 10.5) < 0.1
    torch.testing.assert_close(random_slopes(5, 3, 1), random_slopes(5, 3, 1), rtol=0, atol=0)
    assert not torch.equal(random_slopes(5, 3, 1), random_slopes(5, 4, 1))
    layer = FlexibleLinear(4, 20, x0=5.0, random_slope=True)
    slopes = set()
    for _ in range(5):
        layer(torch.ones(2, 4)).sum().backward()
        slopes.add(round(float(layer._k_step), 6))
    assert len(slopes) == 5
    layer.eval()
    layer(torch.ones(2, 4))
    assert layer._k_step is None and float(layer.k) == 1.0  # evaluation uses k


def test_random_activation_gives_the_size_a_zero_gradient():
    torch.manual_seed(0)
    layer = FlexibleLinear(5, 40, x0=20.0, random_activation=True, learn_k=True)
    head = torch.nn.Linear(40, 3)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    F.cross_entropy(head(layer(x)), y).backward()
    assert layer.x0.grad is not None and layer.x0.grad.item() == 0.0
    assert layer.log_k.grad.item() == 0.0
    assert layer.linear.weight.grad.abs().sum() > 0  # the weights still learn
    # the same network with the scaler: a non-zero size gradient
    det = FlexibleLinear.from_linear(layer.linear, x0=20.0)
    F.cross_entropy(head(det(x)), y).backward()
    assert det.x0.grad.abs().item() > 1e-6
    # the mask keeps each neuron with probability s
    s = torch.full((1000,), 0.3)
    kept = random_activation(torch.ones(50, 1000), s).mean().item()
    assert abs(kept - 0.3) < 0.01


def test_learned_slope_moves_and_stays_positive(tmp_path):
    data = synthetic()
    specs = [ModelSpec((20,), seed=0), ModelSpec((20,), seed=1)]
    cfg = TrainConfig(dataset="synthetic", epochs=2, batch_size=64, device="cpu",
                      stats_epochs="none", eval_splits=("test",))
    run_id = train(specs, cfg, tmp_path, data=data, progress=False,
                   modifiers=[lambda: FlexibleCutoff(x0=8.0, k=[1.0, 2.0], learn_k=True,
                                                     k_lr=0.05, penalty=1e-3)])
    m = Store(tmp_path).metrics(run_id)
    k = m[m.name == "k"].pivot_table(index="epoch", columns="model", values="value")
    assert (k.to_numpy() > 0).all()
    steps = 2 * math.ceil(len(data.train) / 64)
    change = np.abs(np.log(k.iloc[-1].to_numpy() / np.array([1.0, 2.0])))
    assert np.all(change > 0) and np.all(change <= 0.05 * steps * 1.01)


def test_errors_name_the_problem():
    with pytest.raises(UsageError, match="random_slope"):
        FlexibleLinear(3, 4, learn_k=True, random_slope=True)
    with pytest.raises(UsageError, match="k must be"):
        FlexibleLinear(3, 4, k=0.0)
    with pytest.raises(UsageError, match="x0 must be finite"):
        FlexibleLinear(3, 4, x0=float("inf"))
    with pytest.raises(UsageError, match="gray_zone"):
        FlexibleLinear(3, 4, gray_zone=(5, 1))
    bank = MLPBank([ModelSpec((4,)), ModelSpec((4,), seed=1)], 3, 2)
    with pytest.raises(UsageError, match="one per model"):
        bank.add_modifier(FlexibleCutoff(x0=[1.0, 2.0, 3.0]))
    with pytest.raises(UsageError, match="penalty"):
        MLPBank([ModelSpec((4,))], 3, 2).add_modifier(FlexibleCutoff(penalty=-1.0))
    with pytest.raises(UsageError, match="threshold"):
        FlexibleLinear(3, 4).prune(threshold=1.5)


def test_describe_covers_every_setting():
    a = FlexibleCutoff(x0=[1.0, 2.0], penalty=[0.0, 1e-4], k=1.0, random_slope=[False, True],
                       seed=3).describe()
    assert a["x0"] == [1.0, 2.0] and a["penalty"] == [0.0, 1e-4]
    assert a["random_slope"] == [False, True] and a["seed"] == 3 and a["lr"] == 1.0
    assert a["gray_zone"] == [1.0, 20.0] and a["learn_k"] is False
    b = FlexibleCutoff(x0=[1.0, 2.0], penalty=[0.0, 1e-4], random_slope=[False, True],
                       seed=4).describe()
    assert a != b


# ------------------------------------------------------------------------------ bank and engine
SPECS = [ModelSpec((24,), seed=0), ModelSpec((40,), seed=1, weight_decay=1e-3),
         ModelSpec((24,), seed=2)]
STARTS, PENALTIES = [5.0, 30.0, 24.0], [1e-3, 1e-4, 0.0]


def test_bank_models_train_like_flexible_networks_alone(tmp_path):
    """Per-model N, x0, penalty, L2 and x0's learning rate: the bank equals a naive loop."""
    data = synthetic()
    cfg = TrainConfig(dataset="synthetic", epochs=2, batch_size=64, lr=2e-3, device="cpu",
                      stats_epochs="none", eval_splits=("test",))
    run_id = train(SPECS, cfg, tmp_path, data=data, progress=False,
                   modifiers=[lambda: FlexibleCutoff(x0=STARTS, penalty=PENALTIES, lr=1.0)])
    met = Store(tmp_path).metrics(run_id)
    state = Store(tmp_path).latest_checkpoint(run_id)[1]["bank"]
    bank = load_bank(tmp_path, run_id, strict_modifiers=False)
    for m, spec in enumerate(SPECS):
        ref = FlexibleMLP(20, spec.width, 10, x0=STARTS[m])
        mlp = MLP([20, spec.width, 10], seed=spec.seed)
        ref.flex.linear.load_state_dict(mlp.layers[0].state_dict())
        ref.head.load_state_dict(mlp.layers[1].state_dict())
        weights = [*ref.flex.linear.parameters(), *ref.head.parameters()]
        opt = torch.optim.Adam([{"params": weights, "weight_decay": spec.weight_decay},
                                {"params": [ref.flex.x0], "lr": 1.0}], lr=2e-3)
        grads = []
        for epoch in (1, 2):
            order = epoch_order(len(data.train), 0, epoch, torch.device("cpu"))
            for i in range(0, len(data.train), 64):
                idx = order[i:i + 64]
                loss = (F.cross_entropy(ref(data.train.x[idx]), data.train.y[idx])
                        + PENALTIES[m] * ref.penalty())
                opt.zero_grad()
                loss.backward()
                grads.append((epoch, ref.flex.x0.grad.item()))
                opt.step()
        assert state["modifiers.0.x0"][m].item() == pytest.approx(ref.flex.x0.item(),
                                                                  rel=1e-4, abs=1e-4)
        exported = bank.export(m)
        torch.testing.assert_close(exported.layers[0].weight, ref.flex.linear.weight,
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(exported.layers[1].weight, ref.head.weight,
                                   rtol=1e-4, atol=1e-5)
        mean_grad = np.mean([g for e, g in grads if e == 2])
        row = met[(met.model == m) & (met.epoch == 2) & (met.name == "size_grad")]
        assert row.value.item() == pytest.approx(mean_grad, rel=1e-3, abs=1e-7)


def test_zero_penalty_and_far_cutoff_train_exactly_like_the_static_model(tmp_path):
    """Every scaler is 1.0 in float32 (k (x0 - i) > 17), no penalty: 50 steps equal."""
    data = synthetic(n_train=50 * 32)
    specs = [ModelSpec((32,), seed=0), ModelSpec((48,), seed=1, weight_decay=1e-4)]
    cfg = TrainConfig(dataset="synthetic", epochs=1, batch_size=32, device="cpu",
                      stats_epochs="none", eval_splits=("test",))
    static = train(specs, cfg, tmp_path, data=data, progress=False)
    flex = train(specs, cfg, tmp_path, data=data, progress=False,
                 modifiers=[lambda: FlexibleCutoff(x0=1e4, penalty=0.0)])
    st_ = Store(tmp_path)
    assert st_.get_run(flex)["timings"]["steps"] == 50
    a = load_bank(tmp_path, static)
    b = load_bank(tmp_path, flex, strict_modifiers=False)
    for m in range(len(specs)):
        for p, q in zip(a.export(m).parameters(), b.export(m).parameters(), strict=True):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=0)
    assert st_.latest_checkpoint(flex)[1]["bank"]["modifiers.0.x0"].tolist() == [1e4, 1e4]


class _Interrupt(Exception):
    pass


def test_random_slope_runs_resume_identically(tmp_path, monkeypatch):
    data = synthetic()
    specs = [ModelSpec((16,), seed=0), ModelSpec((16,), seed=1)]
    cfg = TrainConfig(dataset="synthetic", epochs=2, batch_size=64, device="cpu",
                      stats_epochs="none", eval_splits=("test",))

    def make():
        return FlexibleCutoff(x0=4.0, random_slope=[True, False], seed=5)

    whole = train(specs, cfg, tmp_path / "a", data=data, progress=False, modifiers=[make])
    original = FlexibleCutoff.before_step

    def interrupt(self, step):
        if step == 13:  # in epoch 2 (10 steps per epoch)
            raise _Interrupt
        original(self, step)

    monkeypatch.setattr(FlexibleCutoff, "before_step", interrupt)
    with pytest.raises(_Interrupt):
        train(specs, cfg, tmp_path / "b", data=data, progress=False, modifiers=[make])
    monkeypatch.setattr(FlexibleCutoff, "before_step", original)
    resumed = train(specs, cfg, tmp_path / "b", data=data, progress=False, modifiers=[make])
    assert resumed == whole
    a = Store(tmp_path / "a").latest_checkpoint(whole)[1]["bank"]
    b = Store(tmp_path / "b").latest_checkpoint(resumed)[1]["bank"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    ma, mb = Store(tmp_path / "a").metrics(whole), Store(tmp_path / "b").metrics(resumed)
    pd_a = ma[ma.name == "size_grad"].sort_values(["model", "epoch"]).value.to_numpy()
    pd_b = mb[mb.name == "size_grad"].sort_values(["model", "epoch"]).value.to_numpy()
    np.testing.assert_array_equal(pd_a, pd_b)


def test_engine_fingerprint_sees_modifier_settings(tmp_path):
    data = synthetic()
    cfg = TrainConfig(dataset="synthetic", epochs=1, device="cpu", stats_epochs="none")
    ids = {Engine(SPECS, cfg, tmp_path, data=data, progress=False,
                  modifiers=[lambda kw=kw: FlexibleCutoff(**kw)]).run_id
           for kw in ({}, {"x0": 3.0}, {"penalty": 1e-4}, {"k": 2.0}, {"random_slope": True},
                      {"lr": 0.5}, {"learn_k": True})}
    assert len(ids) == 7


def test_pruned_network_keeps_the_accuracy_of_a_trained_flexible_model(tmp_path):
    """Small layers (23-42 neurons left) where each gray-zone neuron matters: cutting at x0
    (threshold 0.5) drops a neuron at scaler 0.455 of model 0 and loses 0.6 points; the
    default cut at the end of the gray zone keeps the accuracy."""
    data = synthetic(n_train=1280, n_test=4000)
    specs = [ModelSpec((64,), seed=s) for s in range(3)]
    cfg = TrainConfig(dataset="synthetic", epochs=6, batch_size=32, lr=3e-3, device="cpu",
                      stats_epochs="none", eval_splits=("test",))
    run_id = train(specs, cfg, tmp_path, data=data, progress=False,
                   modifiers=[lambda: FlexibleCutoff(x0=[30.0, 40.0, 50.0],
                                                     penalty=[5e-3, 5e-3, 1e-2])])
    state = Store(tmp_path).latest_checkpoint(run_id)[1]["bank"]
    bank = load_bank(tmp_path, run_id, strict_modifiers=False)
    bank.add_modifier(FlexibleCutoff(x0=state["modifiers.0.x0"].tolist()))
    met = Store(tmp_path).metrics(run_id)
    for m in range(len(specs)):
        net = FlexibleMLP.from_bank(bank, m)
        stored = met[(met.model == m) & (met.epoch == 6) & (met.split == "test")
                     & (met.name == "acc")].value.item()
        with torch.no_grad():
            flex_acc = (net(data.test.x).argmax(1) == data.test.y).double().mean().item()
            pruned = net.prune()
            pruned_acc = (pruned(data.test.x).argmax(1) == data.test.y).double().mean().item()
        assert flex_acc == pytest.approx(stored, abs=1.01 / 4000)  # the export is the model
        assert flex_acc > 0.5                                  # it learned something
        assert 0 < pruned[0].out_features < 64
        assert pruned[0].out_features == int(net.flex.x0.item() + 5) + 1
        assert abs(pruned_acc - flex_acc) <= 0.005


@pytest.mark.realdata
def test_prune_keeps_mnist_accuracy(real_cache, tmp_path):
    from widthlab.data.tensors import load_splits

    data = load_splits("mnist")
    specs = [ModelSpec((200,), seed=s) for s in range(2)]
    cfg = TrainConfig(dataset="mnist", epochs=1, train_size=5000, device="cpu",
                      stats_epochs="none", eval_splits=("test",))
    run_id = train(specs, cfg, tmp_path, data=data, progress=False,
                   modifiers=[lambda: FlexibleCutoff(x0=[20.0, 60.0], penalty=1e-4)])
    state = Store(tmp_path).latest_checkpoint(run_id)[1]["bank"]
    bank = load_bank(tmp_path, run_id, strict_modifiers=False)
    bank.add_modifier(FlexibleCutoff(x0=state["modifiers.0.x0"].tolist()))
    for m in range(2):
        net = FlexibleMLP.from_bank(bank, m)
        with torch.no_grad():
            a = (net(data.test.x).argmax(1) == data.test.y).double().mean().item()
            b = (net.prune()(data.test.x).argmax(1) == data.test.y).double().mean().item()
        assert a > 0.8 and abs(a - b) <= 0.005
