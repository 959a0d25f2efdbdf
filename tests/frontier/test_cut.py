"""cut_layers: a trained model pruned layer by layer, one accuracy budget for all layers, checked
by evaluating the cut models directly (float64) rather than through the frontier's tables."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from widthlab.errors import UsageError
from widthlab.frontier import cut_layers, width_frontier


@torch.no_grad()
def _acc(model, x, y) -> float:
    return float((model.eval()(x).argmax(1) == y).double().mean())


@pytest.fixture(scope="module")
def mlp64(mlp2):
    model, (xc, yc), (xe, ye) = mlp2
    return copy.deepcopy(model).double(), (xc.double(), yc), (xe.double(), ye)


@pytest.mark.parametrize("tol", [0.0, 0.02, 0.08])
def test_cut_model_keeps_the_budget_and_each_width_is_the_smallest(mlp64, tol):
    model, calib, ev = mlp64
    before = {k: v.clone() for k, v in model.state_dict().items()}
    full = _acc(model, *ev)
    small, cuts = cut_layers(model, ["0", "2"], calib, ev, tol=tol, ks="all")
    assert [c.layer for c in cuts] == ["0", "2"] and [c.width for c in cuts] == [32, 20]
    assert small[0].out_features == small[2].in_features == cuts[0].k
    assert small[2].out_features == small[4].in_features == cuts[1].k
    # the whole cut stays within tol of the uncut model, measured on the cut model itself
    assert _acc(small, *ev) >= full - tol - 1e-12
    assert cuts[0].acc_before == pytest.approx(full, abs=1e-12)
    assert cuts[1].acc_before == pytest.approx(_acc(cuts[0].frontier.cut(cuts[0].k), *ev),
                                               abs=1e-12)
    assert cuts[-1].acc_after == pytest.approx(_acc(small, *ev), abs=1e-12)
    # one unit fewer in either layer (the rest as cut_layers left it) breaks the budget
    first = cuts[0].frontier
    if cuts[0].k > 1:
        assert _acc(first.cut(cuts[0].k - 1), *ev) < full - tol
    if cuts[1].k > 1:
        assert _acc(cuts[1].frontier.cut(cuts[1].k - 1), *ev) < full - tol
    for k, v in model.state_dict().items():  # the user's model is left alone
        torch.testing.assert_close(v, before[k])


def test_first_layer_equals_its_own_frontier_and_the_budget_is_shared(mlp64):
    model, calib, ev = mlp64
    tol = 0.05
    _, cuts = cut_layers(model, ["0", "2"], calib, ev, tol=tol)
    fr = width_frontier(model, "0", calib, ev)
    assert cuts[0].k == fr.recommend(tol)  # the first layer: the frontier's own recommendation
    # the second layer gets what the first left of the budget: never more than tol in all
    full = cuts[0].acc_before
    t = cuts[1].frontier.table
    assert cuts[1].k == int(t[t.acc >= full - tol - 1e-12].k.min())
    assert cuts[1].acc_after >= full - tol - 1e-12


def test_nothing_to_cut_returns_a_copy_and_errors_name_the_fix(mlp64):
    model, calib, ev = mlp64
    small, cuts = cut_layers(model, ["2"], calib, ev, tol=0.0, ks=[20])
    assert cuts[0].k == 20 and small is not model
    with torch.no_grad():
        torch.testing.assert_close(small(ev[0]), model(ev[0]))
    with pytest.raises(UsageError, match="layers is empty"):
        cut_layers(model, [], calib, ev)
    with pytest.raises(UsageError, match="tol must be >= 0"):
        cut_layers(model, ["0"], calib, ev, tol=-0.1)
    with pytest.raises(UsageError):
        cut_layers(model, ["4"], calib, ev)  # the output layer has no consumer


def test_frontier_cut_goes_through_the_units_remover_and_loads_into_the_smaller_class():
    """Frontier.cut removes the neurons with widthlab.units.remove_units: the cut model's
    state dict loads into the same class built at the kept width, a consumer without a bias
    gets the refit's bias, and its logits equal a float64 numpy evaluation of the table's
    compensated weights."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(),
                                torch.nn.Linear(12, 3, bias=False)).double()
    xc, xe = torch.randn(200, 6, dtype=torch.float64), torch.randn(100, 6, dtype=torch.float64)
    yc, ye = model(xc).argmax(1), model(xe).argmax(1)
    fr = width_frontier(model, "0", (xc, yc), (xe, ye))
    small = fr.cut(5)
    ref = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(),
                              torch.nn.Linear(5, 3)).double()
    ref.load_state_dict(small.state_dict())  # shapes of the class at width 5, with a bias
    kept, w, b = fr.weights(5)
    h = np.maximum(xe.numpy() @ model[0].weight.detach().numpy()[kept.numpy()].T
                   + model[0].bias.detach().numpy()[kept.numpy()], 0.0)
    expect = h @ w.numpy().T + b.numpy()
    np.testing.assert_allclose(small(xe).detach().numpy(), expect, rtol=1e-10, atol=1e-10)
    assert model[2].in_features == 12 and model[2].bias is None  # the original is untouched
