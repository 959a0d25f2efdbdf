"""The rankings of group_frontier against their formulas written out in numpy (naive loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier.blocks import conv_consumers, heads_consumer, linear_consumer
from widthlab.frontier.group import GROUP_METHODS, group_frontier, unit_scores

D = torch.float64


def _heads_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    o = nn.Linear(12, 5, dtype=D)  # 3 heads of 4
    x = torch.randn(2, 50, 12, generator=g, dtype=D) * torch.linspace(0.3, 3, 12, dtype=D) + 0.5
    loss = F.mse_loss(o(x), torch.randn(2, 50, 5, generator=g, dtype=D))
    grad, = torch.autograd.grad(loss, o.weight)
    return o, x, grad


def test_scores_match_their_formulas():
    o, x, grad = _heads_problem()
    c = heads_consumer(o, x, 3, grad=grad)
    X = x.reshape(-1, 12).numpy()
    W, G = o.weight.detach().numpy(), grad.numpy()
    ref = {m: np.zeros(3) for m in GROUP_METHODS if m not in ("obs", "random")}
    for h in range(3):
        tg = 0.0
        for i in range(4 * h, 4 * h + 4):
            col = X[:, i]
            ref["magnitude"][h] += sum(W[r, i] ** 2 for r in range(5))
            tg += sum(G[r, i] * W[r, i] for r in range(5))
            ref["activation"][h] += np.mean(np.abs(col))
            ref["variance"][h] += np.std(col)
            ref["wanda_sp"][h] += sum(abs(W[r, i]) for r in range(5)) * np.sqrt(np.mean(col ** 2))
            ref["flap"][h] += np.var(col) * sum(W[r, i] ** 2 for r in range(5))
        ref["taylor"][h] = abs(tg)
    for m, r in ref.items():
        np.testing.assert_allclose(unit_scores([c], 3, m).numpy(), r, rtol=1e-10, err_msg=m)
    rnd = unit_scores([c], 3, "random", seed=1).numpy()
    assert sorted(rnd) == [0, 1, 2]


@pytest.mark.parametrize("method", [m for m in GROUP_METHODS if m != "obs"])
def test_order_removes_lowest_scores_and_cuts_zero_their_columns(method):
    o, x, grad = _heads_problem(1)
    c = heads_consumer(o, x, 3, grad=grad)
    fr = group_frontier([c], 3, method, ks=[1, 2])
    s = unit_scores([c], 3, method).numpy()
    assert fr.order == list(np.argsort(s, kind="stable"))
    w, _ = fr.cuts[2].weights[0]
    dead = fr.order[0]
    assert np.all(w[:, 4 * dead:4 * dead + 4].numpy() == 0)
    keep = [i for i in range(12) if not 4 * dead <= i < 4 * dead + 4]
    np.testing.assert_array_equal(w[:, keep].numpy(), o.weight.detach().numpy()[:, keep])


def test_flap_bias_compensation_keeps_the_mean_output():
    """FLAP adds the removed columns' mean contribution to the bias: the mean output over the
    calibration rows is unchanged (checked in numpy); a consumer without bias gets one."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 6, generator=g, dtype=D) + torch.arange(6, dtype=D)
    for bias in (True, False):
        lin = nn.Linear(6, 3, bias=bias, dtype=D)
        fr = group_frontier([linear_consumer(lin, x)], 6, "flap", ks=[2])
        w, b = fr.cuts[2].weights[0]
        X = x.numpy()
        b0 = lin.bias.detach().numpy() if bias else 0.0
        before = (X @ lin.weight.detach().numpy().T + b0).mean(0)
        after = (X @ w.numpy().T + b.numpy()).mean(0)
        np.testing.assert_allclose(after, before, rtol=1e-10)
        mag = group_frontier([linear_consumer(lin, x)], 6, "magnitude", ks=[2])
        assert (mag.cuts[2].weights[0][1] is None) == (not bias)


def test_obs_has_the_lowest_calibration_error_of_all_methods():
    g = torch.Generator().manual_seed(6)
    conv = nn.Conv2d(8, 6, 3, padding=1, dtype=D)
    mix = torch.randn(8, 8, generator=g, dtype=D)  # correlated channels
    xc = torch.einsum("bchw,cd->bdhw", torch.randn(20, 8, 6, 6, generator=g, dtype=D), mix)
    xe = torch.einsum("bchw,cd->bdhw", torch.randn(20, 8, 6, 6, generator=g, dtype=D), mix)
    out = conv(xc)
    grad, = torch.autograd.grad(out.square().mean(), conv.weight)
    cons = conv_consumers(conv, xc, grad=grad)
    ev = [c.stats for c in conv_consumers(conv, xe)]
    frs = {m: group_frontier(cons, 8, m, ks=[6, 4, 2], eval=ev) for m in GROUP_METHODS}
    for k in (6, 4, 2):
        best = min(frs[m].calib_losses[k] for m in GROUP_METHODS if m != "obs")
        assert frs["obs"].calib_losses[k] < best
        assert frs["obs"].losses[k] < min(frs[m].losses[k] for m in ("magnitude", "random"))


def test_calibration_and_evaluation_data_must_differ():
    lin = nn.Linear(5, 2, dtype=D)
    x = torch.randn(40, 5, dtype=D)
    c = linear_consumer(lin, x)
    same = [linear_consumer(lin, x.clone()).stats]
    with pytest.raises(UsageError, match="same data"):
        group_frontier([c], 5, "magnitude", eval=same)
    fr = group_frontier([c], 5, "magnitude", eval=same, allow_same=True)
    assert fr.losses[5] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(UsageError, match="unknown method"):
        group_frontier([c], 5, "wanda")
    with pytest.raises(UsageError, match="taylor"):
        group_frontier([c], 5, "taylor")
