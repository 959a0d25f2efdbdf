"""Exact importance against the naive loop (float64), proxies against independent formulas,
top-k cuts against explicitly zeroed models, and the memory bound of the chunked computation."""

import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tests.engine.child_run import synthetic
from widthlab.engine.trainer import TrainConfig, load_bank, train
from widthlab.errors import UsageError
from widthlab.metrics.importance import (
    agreement,
    block_plan,
    dense_latency,
    exact_importance,
    k_grid,
    k_to_reach,
    keep_neurons,
    naive_importance,
    proxies,
    topk_accuracy,
)
from widthlab.metrics.ordering import ordering
from widthlab.nn import MLP, ModelSpec

TOL = 1e-6  # the contract (absolute, on the per-sample mean loss); we see ~1e-15


def problem(sizes, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, sizes[0], generator=g)
    y = torch.randint(0, sizes[-1], (n,), generator=g)
    return MLP(sizes, seed=seed), x, y


@pytest.mark.parametrize("sizes", [[20, 16, 10], [20, 12, 8, 10], [20, 6, 7, 5, 10]])
def test_exact_equals_the_naive_loop_for_every_hidden_layer(sizes):
    mlp, x, y = problem(sizes)
    every = exact_importance(mlp, x, y, layer=None, chunk=300)  # small blocks on purpose
    for layer in range(len(sizes) - 2):
        ref = naive_importance(mlp, x, y, layer=layer)
        np.testing.assert_allclose(every[layer], ref, rtol=0, atol=1e-12)
        one = exact_importance(mlp, x, y, layer=layer)
        np.testing.assert_allclose(one, ref, rtol=0, atol=1e-12)
    assert np.abs(ref).max() > 1e-4  # the network is not trivial


@settings(max_examples=25)
@given(st.integers(1, 24), st.integers(1, 3), st.integers(1, 40), st.integers(0, 10**6),
       st.floats(0.1, 8.0), st.integers(1, 5000))
def test_exact_matches_naive_on_random_networks(width, depth, n, seed, gain, chunk):
    sizes = [7, *[max(1, width // (i + 1)) for i in range(depth)], 4]
    mlp, x, y = problem(sizes, n=n, seed=seed)
    with torch.no_grad():  # large weights give large logits: a harder numerical case
        for layer in mlp.layers:
            layer.weight.mul_(gain)
    layer = seed % depth
    got = exact_importance(mlp, x, y, layer=layer, chunk=chunk)
    np.testing.assert_allclose(got, naive_importance(mlp, x, y, layer=layer), rtol=0,
                               atol=1e-9)


def test_exact_with_a_gate_scale_equals_the_naive_loop():
    mlp, x, y = problem([12, 20, 10])
    scale = torch.linspace(-1.5, 2.0, 20)
    scale[3] = 0.0  # a closed gate: removing that neuron changes nothing
    got = exact_importance(mlp, x, y, scale=scale)
    np.testing.assert_allclose(got, naive_importance(mlp, x, y, scale=scale), rtol=0,
                               atol=1e-12)
    assert got[3] == 0.0


def test_dead_neuron_has_exactly_zero_importance_and_float32_stays_close():
    mlp, x, y = problem([12, 16, 10])
    with torch.no_grad():
        mlp.layers[0].bias[5] = -1e3  # never active
    got = exact_importance(mlp, x, y)
    assert got[5] == 0.0
    low = exact_importance(mlp, x, y, dtype=torch.float32)
    np.testing.assert_allclose(low, got, rtol=0, atol=TOL)


def test_exact_equals_naive_on_a_trained_network(tmp_path):
    data = synthetic(n_train=1000, d=20)
    specs = [ModelSpec((24,), seed=0), ModelSpec((16, 12), seed=1)]
    run_id = train(specs, TrainConfig(dataset="synthetic", epochs=5, batch_size=32, lr=1e-2,
                                      device="cpu", stats_epochs="none", eval_splits=("test",)),
                   tmp_path, data=data, progress=False)
    bank = load_bank(tmp_path, run_id)
    x, y = data.val.x, data.val.y
    for m in range(2):
        mlp = bank.export(m)
        # trained: the loss went down and some neurons matter a lot more than others
        assert F.cross_entropy(mlp(x), y) < 1.5
        for layer in range(len(specs[m].hidden)):
            ref = naive_importance(mlp, x, y, layer=layer)
            got = exact_importance(mlp, x, y, layer=layer, chunk=1000)
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
            assert ref.max() > 0.05  # removing a trained neuron costs real loss


@pytest.mark.realdata
def test_exact_equals_naive_on_a_network_trained_on_mnist(real_cache, tmp_path):
    from widthlab.data import load_splits

    data = load_splits("mnist")
    run_id = train([ModelSpec((48,), seed=0)],
                   TrainConfig(dataset="mnist", epochs=1, train_size=10000, device="cpu",
                               stats_epochs="none", eval_splits=("test",)),
                   tmp_path, data=data, progress=False)
    mlp = load_bank(tmp_path, run_id).export(0)
    x, y = data.test.x, data.test.y  # the full test set
    got = exact_importance(mlp, x, y)
    ref = naive_importance(mlp, x, y)
    assert np.abs(got - ref).max() <= TOL
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ memory
class PeakMemory(TorchDispatchMode):
    """Storage bytes allocated by the torch ops run inside the block: ``current`` and ``peak``.

    A new storage is counted when an op returns a tensor whose storage no input shares (views
    and ``out=`` writes are not allocations); it is released when the last tensor returned on
    it is garbage (torch frees the memory then too)."""

    def __init__(self):
        super().__init__()
        self.refs, self.size, self.current, self.peak = {}, {}, 0, 0

    def _drop(self, key):
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.current -= self.size.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage().data_ptr()
            if key in self.refs:
                self.refs[key] += 1
            elif key in inputs or t.untyped_storage().nbytes() == 0:
                continue  # a view of, or a write into, a tensor made before
            else:
                self.refs[key] = 1
                self.size[key] = t.untyped_storage().nbytes()
                self.current += self.size[key]
                self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._drop, key)
        return out


def peak_bytes(fn):
    with PeakMemory() as pm:
        fn()
    return pm.peak


@pytest.mark.parametrize("sizes", [[50, 200, 10], [50, 64, 32, 10]])
def test_peak_memory_is_bounded_by_the_plan_and_independent_of_the_sample_count(sizes):
    chunk = 2 ** 13
    mlp = MLP(sizes, seed=0)
    peaks = []
    for n in (300, 1500):
        _, x, y = problem(sizes, n=n)
        peaks.append(peak_bytes(lambda x=x, y=y: exact_importance(mlp, x, y, layer=None,
                                                                   chunk=chunk)))
    plan = block_plan(sizes, 1500, chunk)
    assert peaks[0] == peaks[1]  # five times the samples, the same peak
    assert peaks[1] <= 8 * plan.peak_values
    # without blocks the hidden activations alone would take N * sum(hidden) float64 values
    assert peaks[1] < 1500 * sum(sizes[1:-1]) * 8 / 2


@pytest.mark.slow
def test_width_11585_on_ten_thousand_samples_stays_within_the_plan():
    """The acceptance case: 11585 neurons, the size of the test set. Unchunked, the (N, H)
    activations alone are 927 MB in float64 and the corrected logits (N, H, 10) 9.3 GB."""
    sizes, n = [784, 11585, 10], 10_000
    mlp = MLP(sizes, seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)
    plan = block_plan(sizes, n)
    peak = peak_bytes(lambda: exact_importance(mlp, x, y))
    print(f"peak {peak / 2**20:.1f} MiB, plan bound {8 * plan.peak_values / 2**20:.1f} MiB")
    assert peak <= 8 * plan.peak_values
    # about 170 MiB, of which 74 MiB are the float64 copy of the weights
    assert peak < 200 * 2 ** 20 < n * 11585 * 8 / 4


def test_block_plan_tiles_as_documented():
    p = block_plan([784, 2048, 10], 10_000, chunk=2 ** 22)
    assert p.batch == 2 ** 22 // (784 + 2048 + 10)
    assert p.neurons == (2 ** 22 // (p.batch * 10),)
    tiny = block_plan([784, 2048, 10], 10_000, chunk=10)
    assert tiny.batch == 1 and tiny.neurons == (1,)
    deep = block_plan([10, 50, 40, 3], 100, chunk=1000)
    assert deep.batch == 1000 // 103 and deep.neurons == (1000 // (9 * 40), 1000 // (9 * 3))
    with pytest.raises(UsageError, match="chunk must be a positive"):
        block_plan([3, 4, 2], 10, chunk=0)


# ------------------------------------------------------------------------------ proxies
def test_proxies_equal_independent_numpy_formulas():
    mlp, x, y = problem([15, 25, 10], n=300)
    gates = torch.linspace(-1, 1, 25)
    got = proxies(mlp, x, y, gates=gates, chunk=500)
    w1, b1 = (t.detach().double().numpy() for t in (mlp.layers[0].weight, mlp.layers[0].bias))
    w2, b2 = (t.detach().double().numpy() for t in (mlp.layers[1].weight, mlp.layers[1].bias))
    xn, yn = x.double().numpy(), y.numpy()
    h = np.maximum(xn @ w1.T + b1, 0)  # (N, H)
    z = h @ w2.T + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g_z = p - np.eye(10)[yn]  # dl/dz per sample
    g_h = g_z @ w2  # dl/dh (N, H)
    np.testing.assert_allclose(got["gate"], np.abs(gates.numpy()), atol=1e-7)
    np.testing.assert_allclose(got["act_std"], h.std(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["in_norm"], np.linalg.norm(w1, axis=1), rtol=1e-12)
    np.testing.assert_allclose(got["out_norm"], np.linalg.norm(w2, axis=0), rtol=1e-12)
    np.testing.assert_allclose(got["taylor"], np.abs((h * g_h).mean(0)), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got["contribution"],
                               np.sqrt((h ** 2).mean(0)) * np.linalg.norm(w2, axis=0), rtol=1e-10)
    second = [np.mean(-h[:, j] * (g_z @ w2[:, j]) + 0.5 * h[:, j] ** 2 *
                      ((p * w2[:, j] ** 2).sum(1) - (p @ w2[:, j]) ** 2)) for j in range(25)]
    np.testing.assert_allclose(got["taylor2"], second, rtol=1e-9, atol=1e-15)


def test_taylor2_is_a_third_order_approximation_of_the_exact_importance():
    mlp, x, y = problem([10, 30, 10], n=200)
    errs = []
    for t in (0.2, 0.1):  # shrink the output weights: removing a neuron moves the logits by O(t)
        with torch.no_grad():
            small = MLP([10, 30, 10])
            small.load_state_dict(mlp.state_dict())
            small.layers[1].weight.mul_(t)
        exact = exact_importance(small, x, y)
        errs.append(np.abs(proxies(small, x, y)["taylor2"] - exact).max())
    assert errs[1] < errs[0] / 6  # halving t divides the error by ~8


def test_proxies_of_a_middle_layer_match_finite_differences_of_the_taylor_term():
    mlp, x, y = problem([10, 14, 9, 10], n=150)
    got = proxies(mlp, x, y, layer=0)
    assert "taylor2" not in got  # only for the last hidden layer
    # |E[h_j dl/dh_j]| = |d/de L(h_j * (1 + e))| at e = 0, by central differences
    w1, b1 = mlp.layers[0].weight.double(), mlp.layers[0].bias.double()
    rest = [(m.weight.double(), m.bias.double()) for m in mlp.layers[1:]]

    def loss(j, e):
        h = torch.relu(x.double() @ w1.T + b1)
        h[:, j] *= 1 + e
        for i, (w, b) in enumerate(rest):
            h = h @ w.T + b
            if i < len(rest) - 1:
                h = torch.relu(h)
        return float(F.cross_entropy(h, y).detach())

    fd = [abs(loss(j, 1e-5) - loss(j, -1e-5)) / 2e-5 for j in range(14)]
    np.testing.assert_allclose(got["taylor"], fd, rtol=1e-5, atol=1e-9)


def test_agreement_equals_scipy():
    rng = np.random.default_rng(0)
    exact = rng.normal(size=50)
    sc = {"a": exact + rng.normal(size=50), "b": rng.normal(size=50)}
    t = agreement(exact, sc, ks=(5, 80))
    for row in t.itertuples():
        assert row.spearman == pytest.approx(stats.spearmanr(exact, sc[row.proxy])[0])
        assert row.kendall == pytest.approx(stats.kendalltau(exact, sc[row.proxy])[0])
        top = set(np.argsort(-exact)[:5]) & set(np.argsort(-sc[row.proxy])[:5])
        assert row.top5 == len(top) / 5
        assert row.top80 == 1.0  # k clipped to the 50 neurons


# ------------------------------------------------------------------------------ top-k cuts
@pytest.mark.parametrize("sizes,layer", [([12, 20, 10], 0), ([12, 20, 9, 10], 1),
                                         ([12, 20, 9, 10], 0)])
def test_keep_neurons_equals_the_model_with_the_others_zeroed(sizes, layer):
    mlp, x, _ = problem(sizes)
    scale = torch.linspace(0.5, 1.5, sizes[1])
    keep = np.array([3, 0, 7, 5])
    small = keep_neurons(mlp, keep, layer=layer, scale=scale)
    assert small.sizes[layer + 1] == 4 and sum(p.numel() for p in small.parameters()) < \
        sum(p.numel() for p in mlp.parameters())
    zeroed = MLP(sizes)
    zeroed.load_state_dict(mlp.state_dict())
    with torch.no_grad():
        zeroed.layers[1].weight.mul_(scale)  # the scale, folded by hand
        drop = np.setdiff1d(np.arange(sizes[layer + 1]), keep)
        zeroed.layers[layer + 1].weight[:, drop] = 0
        torch.testing.assert_close(small(x), zeroed(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(UsageError, match="distinct indices"):
        keep_neurons(mlp, [1, 1], layer=layer)


def test_topk_accuracy_equals_the_forward_of_the_cut_models():
    mlp, x, y = problem([12, 20, 10], n=400)
    scores = exact_importance(mlp, x, y)
    orders = {"exact": ordering(scores), "random": np.random.default_rng(0).permutation(20)}
    ks = k_grid(20)
    t = topk_accuracy(mlp, x, y, orders, ks)
    assert len(t) == 2 * len(ks)
    for row in t.itertuples():
        small = keep_neurons(mlp, orders[row.ordering][:row.k])
        with torch.no_grad():
            logits = small(x)
        assert row.acc == pytest.approx(float((logits.argmax(1) == y).float().mean()))
        assert row.loss == pytest.approx(float(F.cross_entropy(logits.double(), y)), rel=1e-5)
    full = t[t.k == 20]
    assert full["acc"].nunique() == 1  # all neurons: the same model whatever the ordering
    assert k_to_reach(t[t.ordering == "exact"], float(full["acc"].iloc[0])) <= 20
    assert k_to_reach(t[t.ordering == "exact"], 1.01) is None


def test_k_grid_and_latency_table():
    assert k_grid(1) == [1]
    assert k_grid(20) == [1, 2, 4, 5, 8, 11, 16, 20]
    assert k_grid(1024)[-2:] == [724, 1024]
    mlp, x, _ = problem([12, 20, 10])
    lat = dense_latency(mlp, x, [1, 20], repeats=2)
    assert lat["k"].tolist() == [1, 20] and (lat["ms"] > 0).all()


def test_input_errors_name_the_problem():
    mlp, x, y = problem([12, 20, 10])
    with pytest.raises(UsageError, match="hidden-layer index"):
        exact_importance(mlp, x, y, layer=1)
    with pytest.raises(UsageError, match=r"shape \(N, 12\)"):
        exact_importance(mlp, x[:, :5], y)
    with pytest.raises(UsageError, match="labels must be in"):
        exact_importance(mlp, x, y + 10)
    with pytest.raises(UsageError, match="one label per sample"):
        proxies(mlp, x, y[:3])
    with pytest.raises(UsageError, match="scale must hold one value per neuron"):
        exact_importance(mlp, x, y, scale=torch.ones(3))
    with pytest.raises(UsageError, match="gates must hold"):
        proxies(mlp, x, y, gates=torch.ones(3))
    with pytest.raises(UsageError, match="widthlab.nn.MLP"):
        exact_importance(torch.nn.Linear(12, 10), x, y)
    with pytest.raises(UsageError, match="lists 3 neurons"):
        topk_accuracy(mlp, x, y, {"bad": np.arange(3)}, [1])
