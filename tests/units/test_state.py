"""The units core's one slicing primitive, its optimizer-state slicing and check, and the
removable stale-optimizer hook of shrink_."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.nn.surgery import _guard, fold_gates_, gate_layers, shrink_
from widthlab.nn.surgery._guard import unwatch, watching
from widthlab.units.state import check_optimizer, check_state, slice_param_, take, taken_state


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_take_equals_a_numpy_gather_with_zero_rows(dim):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(4, 5, 3))
    idx = [2, -1, 0, -1] if dim != 2 else [2, -1]
    want = np.zeros([*a.shape[:dim], len(idx), *a.shape[dim + 1:]])
    for j, i in enumerate(idx):  # a naive loop, one position at a time
        if i >= 0:
            np.put_along_axis(want, np.full([*a.shape[:dim], 1, *a.shape[dim + 1:]], j),
                              np.take(a, [i], axis=dim), axis=dim)
    got = take(torch.from_numpy(a), dim, torch.tensor(idx))
    np.testing.assert_array_equal(got.numpy(), want)
    plain = take(torch.from_numpy(a), dim, torch.tensor([1, 0]))
    np.testing.assert_array_equal(plain.numpy(), np.take(a, [1, 0], axis=dim))


def test_slice_param_cuts_data_grad_and_adam_state_keeping_step():
    lin = nn.Linear(3, 4).double()
    opt = torch.optim.Adam(lin.parameters(), lr=0.1)
    lin(torch.randn(2, 3, dtype=torch.float64)).sum().backward()
    opt.step()
    w, state = lin.weight, opt.state[lin.weight]
    old = {k: v.clone() for k, v in state.items()}
    old_w, old_g = w.detach().clone(), w.grad.clone()
    keep = torch.tensor([3, 1])
    slice_param_(w, 0, keep, opt)
    assert w is lin.weight and opt.state[w] is state  # identity kept: the optimizer goes on
    np.testing.assert_array_equal(w.detach().numpy(), old_w.numpy()[[3, 1]])
    np.testing.assert_array_equal(w.grad.numpy(), old_g.numpy()[[3, 1]])
    for key in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(state[key].numpy(), old[key].numpy()[[3, 1]])
    assert torch.equal(state["step"], old["step"])
    carried = taken_state(state, w.shape, 1, torch.tensor([-1, 0]), copy=True)
    assert carried["exp_avg"][:, 0].abs().sum() == 0 and carried["step"] is not state["step"]
    assert torch.equal(carried["exp_avg"][:, 1], state["exp_avg"][:, 0])


def test_one_check_for_shrink_and_remove_units():
    lin = nn.Linear(3, 4)
    opt = torch.optim.Adam(lin.parameters())
    opt.state[lin.weight]["exp_avg"] = torch.zeros(3)
    with pytest.raises(UsageError, match="'exp_avg' of shape \\(3,\\).*optimizer=None"):
        check_state(lin.weight, opt)
    with pytest.raises(UsageError, match="exp_avg.*the model was not changed"):
        check_optimizer(lin, opt)
    with pytest.raises(UsageError, match="LBFGS"):
        check_optimizer(lin, torch.optim.LBFGS(lin.parameters()))


def test_stale_optimizer_hook_is_removed_when_folded_or_unwatched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    (gate,) = gate_layers(model, ["0"], example=torch.zeros(2, 4))
    with torch.no_grad():
        gate.gate[[1, 2]] = -1.0
    _guard._SHRUNK.clear()  # nothing watched by earlier tests of this process
    _guard._drop_hook_if_idle()
    assert shrink_(model) == {"0": 2}
    assert watching()  # a shrink without the optimizer: its next step() is checked
    fold_gates_(model)
    assert not watching()  # folded: a plain model, no process-wide optimizer hook left
    other = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    (g2,) = gate_layers(other, ["0"], example=torch.zeros(2, 4))
    with torch.no_grad():
        g2.gate[0] = -1.0
    shrink_(other)
    assert watching()
    unwatch(other.parameters())
    assert not watching()
