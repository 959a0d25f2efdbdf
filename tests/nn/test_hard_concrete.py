"""Issue 33: hard-concrete (L0) gates beside the L1 gate, checked against float64 numpy.

The expected-L0 price and its gradient against the closed form and a finite difference, the
evaluation gate against the clamp of the expectation, the training samples against the
formula (and their frequency of non-zero against the price), a gate with ``log_alpha`` far
below zero removed by ``shrink_`` with outputs and the next Adam steps equal to the unshrunk
model, a shrunk checkpoint restored into a fresh model, and a run killed with -9 resuming bit
for bit (this file is also that child process)::

    python tests/nn/test_hard_concrete.py OUT [--hang-at-step N]
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from tests.children import kill_at, spawn
from widthlab.errors import UsageError
from widthlab.nn.surgery import (
    HardConcreteKind,
    gate_layers,
    gate_widths,
    get_gate_kind,
    model_gates,
    shrink_,
    size_penalty,
)
from widthlab.nn.surgery.gates import UnitGate, noise_seed
from widthlab.units import resize_to_state_, size_attrs

BETA, GAMMA, ZETA = 2 / 3, -0.1, 1.1


def np_sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def np_expected_l0(la):
    return np_sigmoid(la - BETA * np.log(-GAMMA / ZETA))


def np_eval_gate(la):
    return np.clip(np_sigmoid(la) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


LOG_ALPHAS = st.lists(st.floats(-8.0, 8.0, allow_nan=False), min_size=1, max_size=12)


def hc_gate(la: list[float], **kw) -> UnitGate:
    gate = UnitGate(len(la), dim=-1, key="g", kind="hard_concrete", **kw).double()
    with torch.no_grad():
        gate.gate.copy_(torch.tensor(la, dtype=torch.float64))
    return gate


@given(LOG_ALPHAS, st.floats(0.0, 3.0), st.sampled_from([None, 1.0, 300.0]))
def test_penalty_is_the_closed_form_and_its_gradient_a_finite_difference(la, price_scale,
                                                                         per_unit):
    gate = hc_gate(la, price_scale=price_scale)
    gate.unit_weights = per_unit  # the per-weight price: times the weights one unit gates
    price_scale *= 1.0 if per_unit is None else per_unit
    pen = gate.penalty()
    want = price_scale * np_expected_l0(np.array(la)).sum()
    assert pen.dtype == torch.float64
    np.testing.assert_allclose(pen.item(), want, rtol=1e-12, atol=1e-15)
    pen.backward()
    h = 1e-5
    for i, v in enumerate(la):  # the other terms of the sum do not move with log_alpha[i]
        fd = price_scale * (np_expected_l0(v + h) - np_expected_l0(v - h)) / (2 * h)
        np.testing.assert_allclose(gate.gate.grad[i].item(), fd, rtol=1e-6, atol=1e-10)


@given(LOG_ALPHAS)
def test_eval_gate_is_the_clamped_expectation(la):
    gate = hc_gate(la).eval()
    x = torch.ones(3, len(la), dtype=torch.float64)
    out = gate(x).detach()
    np.testing.assert_allclose(out.numpy(), np.tile(np_eval_gate(np.array(la)), (3, 1)),
                               rtol=1e-12, atol=1e-15)
    # removal exactly where the evaluation gate is 0: log_alpha <= log(-gamma / zeta)
    dead = HardConcreteKind().dead(gate.gate.detach()).numpy()
    clear = np.abs(np.array(la) - np.log(-GAMMA / ZETA)) > 1e-9  # rounding decides at the edge
    np.testing.assert_array_equal(dead[clear], (np.array(la) <= np.log(-GAMMA / ZETA))[clear])


def test_training_samples_follow_the_formula_and_the_price_is_their_nonzero_rate():
    la = [-3.0, -1.0, 0.0, 0.7, 2.5]
    gate = hc_gate(la, seed=11).train()
    u = torch.rand(len(la), generator=torch.Generator().manual_seed(noise_seed(11, "g")))
    u = u.double().numpy()
    z = gate(torch.ones(1, len(la), dtype=torch.float64))[0].detach().numpy()
    want = np.clip(np_sigmoid((np.log(u) - np.log1p(-u) + np.array(la)) / BETA)
                   * (ZETA - GAMMA) + GAMMA, 0, 1)
    np.testing.assert_allclose(z, want, rtol=1e-6)
    draws = np.stack([gate(torch.ones(1, 5, dtype=torch.float64))[0].detach().numpy()
                      for _ in range(5000)])  # 3.5 standard errors at most 0.025
    np.testing.assert_allclose((draws != 0).mean(0), np_expected_l0(np.array(la)), atol=0.025)
    assert ((draws == 0) | (draws == 1)).mean() > 0.2  # hard: exact 0s and 1s occur


def test_bad_kinds_are_refused():
    with pytest.raises(UsageError, match="unknown gate kind"):
        get_gate_kind("l2")
    with pytest.raises(UsageError, match="gamma < 0"):
        get_gate_kind("hard_concrete", gamma=0.1)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(UsageError, match="unknown gate kind"):
        gate_layers(model, ["0"], kind="l0", example=torch.zeros(2, 4))
    assert gate_widths(model) == {}  # nothing attached
    for kind in ("hard_concrete", "relative_l1"):  # the L1 kind's option is not dropped
        with pytest.raises(UsageError, match="option of kind='l1' only"):
            gate_layers(model, ["0"], kind=kind, penalty="abs", example=torch.zeros(2, 4))
    assert gate_widths(model) == {}
    gate_layers(model, ["0"], kind="hard_concrete", example=torch.zeros(2, 4))
    with pytest.raises(UsageError, match="smallify"):
        shrink_(model, rule="smallify")


# ----------------------------------------------------------------------------- shrinking
def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU(),
                         nn.Linear(10, 3))


def batch(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 12, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=g))


def adam_step(model, opt, x, y, price=1e-2) -> None:
    loss = F.cross_entropy(model(x), y) + price * size_penalty(model)
    opt.zero_grad()
    loss.backward()
    opt.step()


DEAD = {"0:in": [0, 3, 7], "0": [1, 2, 5, 11], "2": [0, 9]}


def test_far_negative_log_alpha_is_removed_and_training_equals_the_unshrunk_model():
    torch.manual_seed(0)
    model = mlp()
    gate_layers(model, ["0", "2"], kind="hard_concrete", seed=3, per_weight=True,
                example=torch.zeros(2, 12))
    gate_layers(model, ["0"], inputs="only", kind="hard_concrete", seed=3, per_weight=True,
                example=torch.zeros(2, 12))
    model.double()
    assert {g.key: g.unit_weights for g in model_gates(model)} == {"0": 12.0, "2": 16.0,
                                                                   "0:in": 16.0}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for i in range(4):
        adam_step(model, opt, *batch(16, i))
    with torch.no_grad():
        for gate in model_gates(model):
            gate.gate[DEAD[gate.key]] = -20.0  # z is exactly 0 for every uniform
    adam_step(model, opt, *batch(16, 9))
    ref = copy.deepcopy(model)  # the unshrunk model: its dead units contribute exact zeros
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    removed = shrink_(model, opt)
    assert removed == {k: len(v) for k, v in DEAD.items()}
    assert gate_widths(model) == {"0": 12, "2": 8, "0:in": 9}
    x, y = batch(32, 99)
    for _ in range(5):  # training mode: the same noise reaches every kept unit
        model.train(), ref.train()
        adam_step(model, opt, x, y)
        adam_step(ref, ref_opt, x, y)
    for mode in (False, True):
        model.train(mode), ref.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x), atol=1e-10, rtol=0)
    keep = {k: torch.tensor([i for i in range(n) if i not in DEAD[k]])
            for k, n in (("0:in", 12), ("0", 16), ("2", 10))}
    torch.testing.assert_close(model[0].weight, ref[0].weight[keep["0"]][:, keep["0:in"]],
                               atol=1e-10, rtol=0)
    torch.testing.assert_close(model[2].weight, ref[2].weight[keep["2"]][:, keep["0"]],
                               atol=1e-10, rtol=0)
    exp_avg = opt.state[model[4].weight]["exp_avg"]
    torch.testing.assert_close(exp_avg, ref_opt.state[ref[4].weight]["exp_avg"][:, keep["2"]],
                               atol=1e-10, rtol=0)


def test_a_shrunk_checkpoint_restores_into_a_fresh_model():
    def build():
        torch.manual_seed(0)
        m = mlp().double()
        gate_layers(m, ["0", "2"], inputs=True, kind="hard_concrete", seed=1,
                    example=torch.zeros(2, 12))
        return m

    model = build()
    with torch.no_grad():
        for gate in model_gates(model):
            gate.gate[: gate.width // 3] = -20.0
    shrink_(model)
    model.train()
    model(batch(4, 0)[0])  # advance the noise
    fresh = build()
    state = model.state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        build().load_state_dict(state)
    resize_to_state_(fresh, state, size_attrs(model))
    fresh.load_state_dict(state)
    assert gate_widths(fresh) == gate_widths(model)
    x = batch(8, 5)[0]
    torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)  # same noise, same bits
    plain = nn.Sequential(nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3))
    gate_layers(plain, ["0"], example=torch.zeros(2, 12))
    with torch.no_grad():
        plain[0].widthlab_out_gate.gate[0] = -1.0
    shrink_(plain)
    fresh_plain = nn.Sequential(nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3))
    gate_layers(fresh_plain, ["0"], example=torch.zeros(2, 12))
    resize_to_state_(fresh_plain, plain.state_dict(), size_attrs(plain))  # an L1 gate too
    fresh_plain.load_state_dict(plain.state_dict())
    assert gate_widths(fresh_plain) == gate_widths(plain)
    torch.testing.assert_close(fresh_plain(x[:, :12].float()), plain(x[:, :12].float()),
                               atol=0, rtol=0)


# ----------------------------------------------------------------------------- kill -9
EPOCHS, N, BATCH = 4, 320, 16


def build_run():
    torch.manual_seed(0)
    model = mlp()
    gate_layers(model, ["0", "2"], inputs=True, kind="hard_concrete", seed=7, init=0.5,
                example=torch.zeros(2, 12))
    return model


def run(out: Path, hang_at_step: int | None = None) -> None:
    """Train EPOCHS epochs, shrink and checkpoint after each; resume from the checkpoint."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(N, 12, generator=g)
    y = (x[:, :3] * torch.tensor([1.0, -2.0, 0.5])).argmax(1)
    model, ckpt_path = build_run(), out / "ckpt.pt"
    opt = torch.optim.Adam(model.parameters(), lr=8e-2)
    order_gen, losses, start = torch.Generator().manual_seed(3), [], 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        resize_to_state_(model, ckpt["model"], ckpt["sizes"])
        model.load_state_dict(ckpt["model"])
        opt = torch.optim.Adam(model.parameters(), lr=8e-2)
        opt.load_state_dict(ckpt["optimizer"])
        order_gen.set_state(ckpt["order"])
        losses, start = ckpt["losses"], ckpt["epoch"]
    step = start * (N // BATCH)
    for epoch in range(start + 1, EPOCHS + 1):
        order = torch.randperm(N, generator=order_gen)
        for i in range(0, N, BATCH):
            step += 1
            if step == hang_at_step:
                (out / "hang").write_text("hanging")
                time.sleep(600)
            idx = order[i:i + BATCH]
            loss = F.cross_entropy(model(x[idx]), y[idx]) + 0.05 * size_penalty(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        shrink_(model, opt)
        tmp = out / "ckpt.tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "order": order_gen.get_state(), "losses": losses, "epoch": epoch,
                    "widths": gate_widths(model), "sizes": size_attrs(model)}, tmp)
        os.replace(tmp, ckpt_path)


def child(out: Path, *args: str, wait: bool = True) -> subprocess.Popen:
    return spawn(Path(__file__), out, *args, wait=wait, one_thread=True)


@pytest.mark.slow  # two child processes (mostly torch's import time)
def test_kill_9_then_resume_of_a_hard_concrete_run_is_bitwise_identical(tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir(), cut.mkdir()
    run(ref)  # uninterrupted, in process
    want = torch.load(ref / "ckpt.pt", weights_only=False)
    p = child(cut, "--hang-at-step", str(2 * (N // BATCH) + 7), wait=False)  # mid epoch 3
    kill_at(p, cut / "hang")  # it hangs after its epoch-2 checkpoint
    at_kill = torch.load(cut / "ckpt.pt", weights_only=False)
    assert at_kill["epoch"] == 2
    full = {k: v for k, v in gate_widths(build_run()).items()}
    assert any(at_kill["widths"][k] < full[k] for k in full), "resume from a shrunk model"
    assert any(want["widths"][k] < at_kill["widths"][k] for k in full), "and shrink after"
    child(cut)  # resumes from epoch 2
    got = torch.load(cut / "ckpt.pt", weights_only=False)
    assert got["losses"] == want["losses"]  # floats compared exactly
    assert got["widths"] == want["widths"]
    assert got["model"].keys() == want["model"].keys()
    for k, v in want["model"].items():
        assert torch.equal(got["model"][k], v), k


def test_resume_without_the_noise_state_would_differ(tmp_path):
    """The generator state is what makes the resume exact: a fresh generator draws other
    uniforms than the one saved mid-run."""
    model = build_run().train()
    x = torch.randn(2, 12)
    model(x)
    state = model.state_dict()
    fresh = build_run().train()
    a = fresh(x)
    fresh.load_state_dict(state)
    b, c = fresh(x), model(x)
    assert torch.equal(b, c) and not torch.equal(a, c)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--hang-at-step", type=int)
    a = ap.parse_args()
    torch.set_num_threads(1)
    run(Path(a.out), a.hang_at_step)
