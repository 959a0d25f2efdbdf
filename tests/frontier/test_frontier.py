"""width_frontier on user models: cut models reproduce the table, methods, recommendation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import widthlab
from widthlab.errors import UsageError
from widthlab.frontier import (
    METHODS,
    bank_sequential,
    frontier_ks,
    frontier_of_bank,
    frontiers,
    width_frontier,
)
from widthlab.nn.bank import MLPBank, ModelSpec

from .conftest import blobs, fit


@torch.no_grad()
def _eval64(model: nn.Module, x, y) -> tuple[float, float]:
    logits = model.double().eval()(x.double())
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean())


@torch.no_grad()
def _consumer_input(model: nn.Module, consumer: str, x) -> torch.Tensor:
    """What ``consumer`` reads when ``model`` runs in its own dtype (a float32 model's own
    numbers: the frontier's activations)."""
    got = []
    h = model.get_submodule(consumer).register_forward_pre_hook(lambda _m, a: got.append(a[0]))
    try:
        model.eval()(x)
    finally:
        h.remove()
    return got[0]


@torch.no_grad()
def _eval_from(model: nn.Module, consumer: str, a, x, y) -> tuple[float, float]:
    """``_eval64`` of a float64 copy of ``model`` whose ``consumer`` reads ``a`` instead."""
    m64 = copy.deepcopy(model).double().eval()
    m64.get_submodule(consumer).register_forward_pre_hook(lambda _m, _a: (a.double(),))
    return _eval64(m64, x, y)


def _check_cuts(fr, x, y, ks):
    """The cut model at every ``k``: the layer keeps the right rows of the original, and its
    consumer and everything after it, in float64 on the original model's own consumer inputs
    of the kept neurons, give the table's row to 1e-9; the whole cut model in float64 to the
    float32 rounding of the layers before the consumer."""
    layer, cons = fr.path.layer, fr.path.consumer
    a = _consumer_input(fr.model, cons, x.to(next(fr.model.parameters()).dtype))
    for k in ks:
        small = fr.cut(k, dtype=torch.float64)
        mods = dict(small.named_modules())
        assert mods[layer].out_features == k and mods[cons].in_features == k
        kept = sorted(fr.order[-k:].tolist())
        assert torch.equal(mods[layer].weight, fr.model.get_submodule(layer).weight[kept].double())
        loss, acc = _eval_from(small, cons, a[:, kept], x, y)
        row = fr.table.set_index("k").loc[k]
        assert abs(acc - row.acc) <= 1e-9 and abs(loss - row.loss) <= 1e-9
        loss, acc = _eval64(small, x, y)
        assert abs(acc - row.acc) <= 1 / len(y) + 1e-9 and abs(loss - row.loss) <= 1e-5


@pytest.mark.parametrize("layer", ["0", "2"])
def test_two_hidden_layers_each_layer(mlp2, layer):
    model, calib, ev = mlp2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fr = width_frontier(model, layer, calib, ev, ks="all")
    h = model[int(layer)].out_features
    assert fr.table.k.tolist() == list(range(1, h + 1))
    assert sorted(fr.order.tolist()) == list(range(h))
    cons = fr.path.consumer  # the full width: the model's own consumer inputs, then float64
    full_loss, full_acc = _eval_from(model, cons, _consumer_input(model, cons, ev[0]), *ev)
    row = fr.table.iloc[-1]
    assert abs(row.acc - full_acc) <= 1e-12 and abs(row.loss - full_loss) <= 1e-9
    _check_cuts(fr, *ev, [1, 3, h // 2, h])
    for k, v in model.state_dict().items():  # the user's model is left alone
        torch.testing.assert_close(v, before[k])
    small = fr.cut(5)
    assert next(small.parameters()).dtype == torch.float32


def test_float64_model_computes_in_float64_and_float32_agrees(mlp2):
    # a float64 model: every number in float64, the float64 cut model gives the table to 1e-9;
    # the float32 model's frontier (its own activations) within float32 rounding of it
    model, calib, ev = mlp2
    m64 = copy.deepcopy(model).double()
    fr64 = width_frontier(m64, "0", calib, ev, ks=[2, 9, 32])
    for k in (2, 9, 32):
        loss, acc = _eval64(fr64.cut(k), *ev)
        row = fr64.table.set_index("k").loc[k]
        assert abs(acc - row.acc) <= 1e-12 and abs(loss - row.loss) <= 1e-9
    fr32 = width_frontier(model, "0", calib, ev, ks=[2, 9, 32])
    for col in ("loss", "calib_loss"):
        np.testing.assert_allclose(fr32.table[col], fr64.table[col], rtol=1e-5)


def test_cnn_classifier_layer(cnn):
    model, calib, ev = cnn
    frs = frontiers(model, "fc1", calib, ev, methods=["obs", "obs_ce", "exact", "random"])
    for fr in frs.values():
        _check_cuts(fr, *ev, [2, 7, 24])
    assert frs["obs"].cut(3).fc1.out_features == 3


def test_obs_recovers_duplicated_neurons_for_free():
    # 8 distinct neurons, each copied 4 times: OBS folds every copy into one survivor
    torch.manual_seed(3)
    x, y = blobs(400, 6, 3, 3)
    base = fit(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), x, y)
    wide = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
    with torch.no_grad():
        wide[0].weight.copy_(base[0].weight.repeat(4, 1))
        wide[0].bias.copy_(base[0].bias.repeat(4))
        wide[2].weight.copy_(base[2].weight.repeat(1, 4) / 4)
        wide[2].bias.copy_(base[2].bias)
    frs = frontiers(wide, "0", (x, y), (x, y), methods=["obs", "random"], ks="all", damp=1e-10)
    t = frs["obs"].table.set_index("k")
    assert t.loc[8, "acc"] == t.loc[32, "acc"]
    assert abs(t.loc[8, "loss"] - t.loc[32, "loss"]) < 1e-6
    assert t.loc[8, "cost"] < 1e-8
    kept = frs["obs"].order[-8:] % 8  # one survivor per distinct neuron
    assert sorted(kept.tolist()) == list(range(8))
    assert frs["obs"].recommend(0.0) <= 8


def test_exact_method_matches_zeroing_each_neuron(mlp2):
    # the adapter's exact importance against the definition on the user's model
    model, calib, ev = mlp2
    fr = width_frontier(model, "0", calib, ev, method="exact")
    m64 = nn.Sequential(*[m for m in model]).double()
    import copy
    base, _ = _eval64(m64, *calib)
    imp = []
    for j in range(32):
        z = copy.deepcopy(m64)
        with torch.no_grad():
            z[2].weight[:, j] = 0
        imp.append(_eval64(z, *calib)[0] - base)
    expected = np.argsort(-np.asarray(imp), kind="stable")[::-1]
    assert fr.order.tolist() == expected.tolist()


def test_ordering_methods_cut_the_top_k_without_compensation(mlp2):
    model, calib, ev = mlp2
    fr = width_frontier(model, "2", calib, ev, method="random", seed=4)
    small = fr.cut(6)
    keep = sorted(fr.order[-6:].tolist())
    torch.testing.assert_close(small[2].weight, model[2].weight[keep])
    torch.testing.assert_close(small[4].weight, model[4].weight[:, keep])
    torch.testing.assert_close(small[4].bias, model[4].bias)


def test_recommend_is_the_smallest_k_within_tol(mlp2):
    model, calib, ev = mlp2
    fr = width_frontier(model, "0", calib, ev, ks="all")
    t = fr.table
    full = t.acc.iloc[-1]
    for tol in (0.0, 0.01, 0.05, 1.0):
        ok = [k for k, a in zip(t.k, t.acc, strict=True) if a >= full - tol]
        assert fr.recommend(tol) == min(ok)
    assert fr.recommend(1.0) == 1
    with pytest.raises(UsageError, match="tol"):
        fr.recommend(-0.1)


def test_obs_beats_keeping_the_top_k_of_any_criterion(mlp2):
    model, calib, ev = mlp2
    frs = frontiers(model, "0", calib, ev, methods=["obs", "exact", "act_std", "random"],
                    ks=[4, 8])
    calib_loss = {m: f.table.set_index("k").calib_loss for m, f in frs.items()}
    for m in ("exact", "act_std", "random"):
        assert calib_loss["obs"][4] < calib_loss[m][4]


def test_refit_never_raises_the_calibration_loss(mlp2, cnn):
    for model, layer, data in ((mlp2[0], "0", mlp2), (cnn[0], "fc1", cnn)):
        _, calib, ev = data
        frs = frontiers(model, layer, calib, ev, methods=["obs", "obs_refit"], ks=[1, 2, 5, 9])
        plain, refit = (frs[m].table.set_index("k") for m in ("obs", "obs_refit"))
        assert frs["obs"].order.tolist() == frs["obs_refit"].order.tolist()
        assert (refit.calib_loss <= plain.calib_loss + 1e-12).all()
        assert (refit.calib_loss < plain.calib_loss - 1e-4).any()
        _check_cuts(frs["obs_refit"], *ev, [2, 9])


def test_method_errors(mlp2):
    model, calib, ev = mlp2
    with pytest.raises(UsageError, match="unknown method"):
        width_frontier(model, "0", calib, ev, method="magic")
    with pytest.raises(UsageError, match="output layer"):  # consumer 2 is not the output layer
        width_frontier(model, "0", calib, ev, method="obs_ce")
    gelu = nn.Sequential(nn.Linear(10, 6), nn.GELU(), nn.Linear(6, 4))
    with pytest.raises(UsageError, match="negative outputs"):
        width_frontier(gelu, "0", calib, ev, method="taylor")
    tanh_tail = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 5), nn.Tanh(),
                              nn.Linear(5, 4))
    with pytest.raises(UsageError, match="ReLU/Linear chain"):
        width_frontier(tanh_tail, "0", calib, ev, method="exact")
    assert width_frontier(gelu, "0", calib, ev).table.k.iloc[-1] == 6  # obs takes any op
    fr = width_frontier(model, "0", calib, ev, ks=[3])
    with pytest.raises(UsageError, match="ks="):
        fr.cut(4)
    with pytest.raises(UsageError, match="pair of tensors"):
        width_frontier(model, "0", calib[0], ev)
    with pytest.raises(UsageError, match="labels must be in"):
        width_frontier(model, "0", (calib[0], calib[1] + 10), ev)
    assert set(METHODS) >= {"obs", "obs_ce", "exact", "taylor", "random"}


def test_frontier_ks_grid():
    ks = frontier_ks(1024)
    assert ks[:16] == list(range(1, 17)) and ks[-1] == 1024
    assert {32, 64, 128, 256, 512} <= set(ks) and len(ks) == len(set(ks))
    assert frontier_ks(5) == [1, 2, 3, 4, 5]


def test_bank_member_and_top_level_export():
    x, y = blobs(300, 784, 10, 5)
    bank = MLPBank([ModelSpec((12,), seed=0), ModelSpec((20,), seed=1)])
    seq = bank_sequential(bank, 1)
    with torch.no_grad():
        torch.testing.assert_close(seq(x), bank.export(1)(x))
    fr = frontier_of_bank(bank, 1, (x, y), (x, y), ks="all")
    assert fr.width == 20 and isinstance(fr.cut(5), nn.Sequential)
    assert widthlab.width_frontier is width_frontier
    with pytest.raises(UsageError, match="model index"):
        bank_sequential(bank, 2)
