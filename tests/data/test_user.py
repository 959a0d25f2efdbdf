"""from_arrays / from_dataset: splits, standardisation, labels and content ids against numpy
float64 references recomputed here from the raw arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from widthlab.data import DatasetSplits, Split, from_arrays, from_dataset, reload_splits


def _raw(n: int = 60, d: int = 5, k: int = 3, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, size=(n, d)) * rng.uniform(0.1, 10.0, size=d)
    y = np.arange(n) % k  # every class present
    rng.shuffle(y)
    return x, y


def _recover(d: DatasetSplits, s: Split) -> np.ndarray:
    """The raw inputs of a split, undoing the standardisation in float64."""
    return s.x.double().numpy() * d.feature_std + d.feature_mean


def _match_rows(raw: np.ndarray, rec: np.ndarray) -> np.ndarray:
    """Index into ``raw`` of each recovered row (nearest row; must be unambiguous)."""
    dist = ((rec[:, None, :] - raw[None, :, :]) ** 2).sum(-1)
    return dist.argmin(1)


def test_standardisation_uses_the_training_split_only():
    x, y = _raw()
    d = from_arrays(x, y, val_size=10, test_size=12, seed=3)
    assert (len(d.train), len(d.val), len(d.test)) == (38, 10, 12)
    rows = _match_rows(x, _recover(d, d.train))
    assert len(set(rows.tolist())) == 38
    ref = x[np.sort(rows)]
    np.testing.assert_allclose(d.feature_mean, ref.mean(0), rtol=1e-12)
    np.testing.assert_allclose(d.feature_std, ref.std(0), rtol=1e-12)
    want = ((x[rows] - ref.mean(0)) / ref.std(0)).astype(np.float32)
    np.testing.assert_array_equal(d.train.x.numpy(), want)
    # every sample lands in exactly one split, with its own label
    all_rows = np.concatenate([_match_rows(x, _recover(d, s)) for s in (d.train, d.val, d.test)])
    assert sorted(all_rows.tolist()) == list(range(len(x)))
    for s in (d.train, d.val, d.test):
        np.testing.assert_array_equal(s.y.numpy(), y[_match_rows(x, _recover(d, s))])
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64


def test_split_is_seeded_and_independent_of_the_split_implementation():
    x, y = _raw(n=50)
    a, b = from_arrays(x, y, seed=7), from_arrays(x, y, seed=7)
    torch.testing.assert_close(a.val.x, b.val.x)
    perm = np.random.default_rng(7).permutation(50)  # documented: hold-out first, then val
    n_test, n_val = 10, 4  # ceil(0.2 * 50), ceil(0.1 * 40)
    np.testing.assert_array_equal(a.test.y.numpy(), y[np.sort(perm[:n_test])])
    np.testing.assert_array_equal(a.val.y.numpy(), y[np.sort(perm[n_test:n_test + n_val])])
    c = from_arrays(x, y, seed=8)
    assert not torch.equal(a.val.y, c.val.y) or not torch.equal(a.test.y, c.test.y)
    assert a.content_id == b.content_id != c.content_id


def test_user_test_split_is_kept_and_standardised_with_training_stats():
    x, y = _raw(n=40)
    xt, yt = _raw(n=9, seed=5)
    d = from_arrays(x, y, test=(xt, yt), val_size=0.25, seed=0)
    assert (len(d.train), len(d.val), len(d.test)) == (30, 10, 9)
    np.testing.assert_allclose(_recover(d, d.test), xt, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(d.test.y.numpy(), yt)
    assert d.describe()["settings"]["test"] == "user"


def test_labels_map_to_sorted_classes():
    x, _ = _raw(n=30)
    y = np.array([3, 1, 7] * 10)
    d = from_arrays(x, y.astype(np.float64), val_size=0, test_size=3)
    assert d.classes == (1, 3, 7) and d.n_classes == 3
    codes = {1: 0, 3: 1, 7: 2}
    for s in (d.train, d.test):
        got = [d.classes[c] for c in s.y.tolist()]
        assert got == y[_match_rows(x, _recover(d, s))].tolist()
    assert [codes[v] for v in d.classes] == [0, 1, 2]
    words = from_arrays(x, np.array(["dog", "cat", "emu"] * 10), val_size=0, test_size=3)
    assert words.classes == ("cat", "dog", "emu")
    # 0..K-1 stays the identity; booleans are 0/1
    same = from_arrays(x, y == 3, val_size=0, test_size=3)
    assert same.classes == (0, 1)
    np.testing.assert_array_equal(same.test.y.numpy(),
                                  (y == 3)[_match_rows(x, _recover(same, same.test))])


def test_constant_feature_becomes_zero_not_noise():
    x, y = _raw(n=30)
    x[:, 2] = 0.1  # 0.1 * 30 / 30 != 0.1 in float64: a tolerance-free std would be ~1e-17
    d = from_arrays(x, y, val_size=0, test_size=5)
    assert d.feature_std[2] == 1.0
    assert torch.count_nonzero(d.train.x[:, 2]) == 0


def test_torch_numpy_and_image_shapes_give_identical_tensors():
    x, y = _raw(n=36, d=12)
    a = from_arrays(x, y)
    b = from_arrays(torch.from_numpy(x).reshape(36, 3, 4), torch.from_numpy(y))
    torch.testing.assert_close(a.train.x, b.train.x, rtol=0, atol=0)
    torch.testing.assert_close(a.test.y, b.test.y, rtol=0, atol=0)
    assert a.content_id == b.content_id and b.n_features == 12


def test_content_id_tracks_content_not_name():
    x, y = _raw()
    base = from_arrays(x, y, name="a").content_id
    assert from_arrays(x.copy(), y.copy(), name="b").content_id == base
    x2 = x.copy()
    x2[17, 3] = np.nextafter(x2[17, 3], np.inf)  # one value, one ulp
    assert from_arrays(x2, y).content_id != base
    y2 = y.copy()
    y2[4] = (y2[4] + 1) % 3
    assert from_arrays(x, y2).content_id != base
    assert from_arrays(x, y, val_size=7).content_id != base
    assert from_arrays(x, y, test_size=0.3).content_id != base


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = torch.from_numpy(x).float(), torch.from_numpy(y)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i].reshape(2, -1), self.y[i]


def test_from_dataset_matches_from_arrays():
    x, y = _raw(n=40, d=6)
    x = x.astype(np.float32)
    a = from_arrays(x, y, seed=2)
    b = from_dataset(_Pairs(x, y), seed=2)
    torch.testing.assert_close(a.train.x, b.train.x, rtol=0, atol=0)
    torch.testing.assert_close(a.val.y, b.val.y, rtol=0, atol=0)
    assert a.content_id == b.content_id
    xt, yt = _raw(n=8, d=6, seed=9)
    c = from_dataset(_Pairs(x, y), test=_Pairs(xt.astype(np.float32), yt))
    np.testing.assert_array_equal(c.test.y.numpy(), yt)
    it = from_dataset(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                      seed=2)
    torch.testing.assert_close(a.train.x, it.train.x, rtol=0, atol=0)


def test_describe_is_plain_json_and_backward_compatible_construction():
    x, y = _raw()
    desc = from_arrays(x, y, name="mine").describe()
    again = json.loads(json.dumps(desc))
    assert again == desc and again["standardise"] == "per-feature"
    assert len(again["feature_mean"]) == 5 and again["n_classes"] == 3
    # the historical positional form still works and infers the class count
    s = Split(torch.zeros(4, 7), torch.tensor([0, 4, 1, 2]))
    old = DatasetSplits("synthetic", s, s, s, 0.0, 1.0, 0)
    assert (old.n_features, old.n_classes) == (7, 5)
    assert old.to("cpu").describe()["standardise"] == "global"
    assert len(old.head(2).train) == 2 and old.head(2).content_id is None


@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3),
       k=st.integers(2, 6), extra=st.integers(0, 20), seed=st.integers(0, 2**31 - 1))
def test_shapes_and_class_counts(shape, k, extra, seed):
    n = 4 * k + extra + 16
    n_test = -(-n * 2 // 10)
    n_val = -(-(n - n_test) // 10)
    # classes 0 and 1 each hold more samples than val + test: the training split holds both
    # whatever the seed (a split holding one class is refused, tested apart)
    m = n_test + n_val + 1
    assert n - 2 * m - k >= 0
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape))
    y = np.concatenate([np.zeros(m, dtype=np.int64), np.ones(m, dtype=np.int64), np.arange(k),
                        rng.integers(0, k, n - 2 * m - k)])
    d = from_arrays(x, y, val_size=0.1, test_size=0.2, seed=seed % 1000)
    assert (len(d.test), len(d.val), len(d.train)) == (n_test, n_val, n - n_test - n_val)
    assert d.n_features == int(np.prod(shape)) and d.n_classes == k
    assert d.train.x.shape == (len(d.train), d.n_features)
    counts = sum(np.bincount(s.y.numpy(), minlength=k) for s in (d.train, d.val, d.test))
    np.testing.assert_array_equal(counts, np.bincount(y, minlength=k))
    xt = d.train.x.double().numpy()
    live = d.feature_std != 1.0
    np.testing.assert_allclose(xt.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(xt.std(0)[live], 1.0, atol=1e-5)


@pytest.mark.realdata
def test_mnist_keeps_its_form_and_gets_a_cheap_content_id(real_cache):
    from widthlab.data import get_spec, load_splits
    from widthlab.data.tensors import builtin_content_id

    d = load_splits("mnist", val_size=5000, seed=0)
    assert (d.n_features, d.n_classes, len(d.train)) == (784, 10, 55000)
    assert d.describe()["standardise"] == "global" and isinstance(d.mean, float)
    mnist, fashion = get_spec("mnist"), get_spec("fashion-mnist")
    assert d.content_id == builtin_content_id(mnist, 5000, 0)
    others = {builtin_content_id(mnist, 5000, 1), builtin_content_id(mnist, 4000, 0),
              builtin_content_id(fashion, 5000, 0)}
    assert len(others) == 3 and d.content_id not in others
    again = reload_splits(json.loads(json.dumps(d.describe())))
    assert again.content_id == d.content_id and torch.equal(again.val.y, d.val.y)


@given(values=st.lists(st.integers(0, 10**6), min_size=2, max_size=8, unique=True),
       as_float=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_any_non_negative_integer_labels_map_to_their_sorted_rank(values, as_float, seed):
    rng = np.random.default_rng(seed)
    y = np.array(values * 3 + rng.choice(values, 10).tolist())
    x = rng.normal(size=(len(y), 2))
    d = from_arrays(x, y.astype(np.float64) if as_float else y, val_size=0, test_size=0.3,
                    seed=0)
    ref = sorted(values)
    assert d.classes == tuple(ref) and d.n_classes == len(values)
    for s in (d.train, d.test):
        want = [ref.index(v) for v in y[_match_rows(x, _recover(d, s))]]
        assert s.y.tolist() == want
