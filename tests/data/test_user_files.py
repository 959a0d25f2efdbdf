"""load_data: the same arrays through .npz, CSV, TSV and Parquet give identical tensors and
content ids; real data (scikit-learn's bundled sets) against independent references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from widthlab.data import DatasetSplits, from_arrays, load_data


def _raw(n: int = 80, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * 10.0 ** rng.integers(-3, 4, size=d)
    return x, rng.permutation(np.arange(n) % 4)


def _frame(x: np.ndarray, y: np.ndarray, target: str = "label") -> pd.DataFrame:
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    df.insert(2, target, y)  # the label column need not be last
    return df


def _same(a: DatasetSplits, b: DatasetSplits) -> None:
    for s in ("train", "val", "test"):
        torch.testing.assert_close(a.split(s).x, b.split(s).x, rtol=0, atol=0)
        torch.testing.assert_close(a.split(s).y, b.split(s).y, rtol=0, atol=0)
    np.testing.assert_array_equal(a.feature_mean, b.feature_mean)
    np.testing.assert_array_equal(a.feature_std, b.feature_std)
    assert a.content_id == b.content_id and a.classes == b.classes


def test_npz_csv_tsv_parquet_match_from_arrays(tmp_path):
    x, y = _raw()
    ref = from_arrays(x, y, val_size=0.15, test_size=10, seed=4)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    _frame(x, y).to_csv(tmp_path / "d.csv", index=False)
    _frame(x, y).to_csv(tmp_path / "d.csv.gz", index=False)
    _frame(x, y).to_csv(tmp_path / "d.tsv", index=False, sep="\t")
    _frame(x, y).to_parquet(tmp_path / "d.parquet", index=False)
    for f, target in [("d.npz", None), ("d.csv", "label"), ("d.csv.gz", "label"),
                      ("d.tsv", "label"), ("d.parquet", "label")]:
        got = load_data(tmp_path / f, target, val_size=0.15, test_size=10, seed=4)
        _same(ref, got)
        assert got.name == "d" and got.source == str(tmp_path / f)


def test_npz_with_test_split_and_float32_images(tmp_path):
    x, y = _raw(n=50, d=12)
    xt, yt = _raw(n=7, d=12, seed=1)
    x32, xt32 = x.astype(np.float32).reshape(50, 3, 4), xt.astype(np.float32).reshape(7, 3, 4)
    np.savez_compressed(tmp_path / "img.npz", x=x32, y=y.astype(np.uint8),
                        x_test=xt32, y_test=yt.astype(np.float64))
    got = load_data(tmp_path / "img.npz", val_size=5)
    _same(from_arrays(x32, y, test=(xt32, yt), val_size=5), got)
    assert (len(got.train), len(got.val), len(got.test)) == (45, 5, 7)


def test_text_labels_in_csv_map_to_sorted_classes(tmp_path):
    x, y = _raw(n=30)
    names = np.array(["setosa", "versicolor", "virginica", "arctica"])[y]
    _frame(x, names, "species").to_csv(tmp_path / "iris.csv", index=False)
    d = load_data(tmp_path / "iris.csv", target="species", val_size=0)
    assert d.classes == ("arctica", "setosa", "versicolor", "virginica")
    ref = from_arrays(x, y, val_size=0)  # the sorted order matches codes 3, 0, 1, 2 -> 0..3
    order = np.argsort(["setosa", "versicolor", "virginica", "arctica"])
    remap = np.empty(4, dtype=np.int64)
    remap[order] = np.arange(4)
    np.testing.assert_array_equal(d.test.y.numpy(), remap[ref.test.y.numpy()])
    torch.testing.assert_close(d.test.x, ref.test.x, rtol=0, atol=0)


def test_changed_file_changes_id_unchanged_file_keeps_it(tmp_path):
    x, y = _raw()
    path = tmp_path / "d.csv"
    _frame(x, y).to_csv(path, index=False)
    first = load_data(path, "label").content_id
    assert load_data(path, "label").content_id == first
    path.write_text(path.read_text())  # rewritten, same content: same id
    assert load_data(path, "label").content_id == first
    x[40, 1] += 1e-9
    _frame(x, y).to_csv(path, index=False)
    assert load_data(path, "label").content_id != first
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x, y=y)
    second = load_data(npz).content_id
    y[3] = (y[3] + 1) % 4
    np.savez(npz, x=x, y=y)
    assert load_data(npz).content_id != second


def test_int_and_float_label_columns_and_bool_features(tmp_path):
    x, y = _raw(n=40)
    df = _frame(x, y.astype(np.float64))  # labels written as 1.0, 2.0 ...
    df["flag"] = x[:, 0] > 0
    df.to_parquet(tmp_path / "b.parquet", index=False)
    d = load_data(tmp_path / "b.parquet", target="label")
    ref = from_arrays(np.column_stack([x, x[:, 0] > 0]), y)
    _same(ref, d)


@pytest.fixture
def sklearn():
    """scikit-learn's bundled datasets (shipped with the package, no download)."""
    return pytest.importorskip("sklearn.datasets")


@pytest.mark.parametrize("loader", ["load_digits", "load_breast_cancer", "load_wine"])
def test_real_data_against_scikit_learn(loader, tmp_path, sklearn):
    StandardScaler = pytest.importorskip("sklearn.preprocessing").StandardScaler
    bunch = getattr(sklearn, loader)(as_frame=True)
    frame = bunch.frame
    frame.to_csv(tmp_path / "real.csv", index=False)
    d = load_data(tmp_path / "real.csv", target="target", val_size=0.1, test_size=0.2, seed=0)
    x, y = bunch.data.to_numpy(), bunch.target.to_numpy()
    assert (d.n_features, d.n_classes) == (x.shape[1], len(np.unique(y)))
    counts = sum(np.bincount(s.y.numpy(), minlength=d.n_classes)
                 for s in (d.train, d.val, d.test))
    np.testing.assert_array_equal(counts, np.bincount(y))
    # the training rows, found by the documented permutation; scikit-learn's scaler on them
    perm = np.random.default_rng(0).permutation(len(y))
    n_test = -(-len(y) * 2 // 10)
    n_val = -(-(len(y) - n_test) // 10)
    train = np.sort(perm[n_test + n_val:])
    scaler = StandardScaler().fit(x[train])
    np.testing.assert_allclose(d.feature_mean, scaler.mean_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d.feature_std, scaler.scale_, rtol=1e-10)
    want = scaler.transform(x[np.sort(perm[:n_test])])
    np.testing.assert_allclose(d.test.x.double().numpy(), want, rtol=1e-6, atol=1e-6)


def test_digits_learnable_through_the_prepared_tensors(sklearn):
    """A softmax regression on the prepared digits reaches > 90% test accuracy: scrambled
    labels, rows or standardisation would leave it near chance (10%)."""
    x, y = sklearn.load_digits(return_X_y=True)
    d = from_arrays(x, y, name="digits", val_size=0.1, test_size=0.2, seed=0)
    torch.manual_seed(0)
    lin = torch.nn.Linear(d.n_features, d.n_classes)
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(d.train.x), d.train.y).backward()
        opt.step()
    with torch.no_grad():
        acc = (lin(d.test.x).argmax(1) == d.test.y).double().mean().item()
    assert acc > 0.9


def test_reload_splits_from_a_stored_description(tmp_path, monkeypatch):
    import json

    from widthlab.data import reload_splits
    from widthlab.errors import UsageError

    x, y = _raw()
    monkeypatch.chdir(tmp_path)  # a relative path, reloaded from elsewhere
    _frame(x, y).to_csv("d.csv", index=False)
    d = load_data("d.csv", "label", val_size=7, test_size=0.25, seed=3)
    desc = json.loads(json.dumps(d.describe()))  # as stored with a run
    monkeypatch.chdir("/")
    _same(d, reload_splits(desc))
    x[0, 0] += 1.0
    _frame(x, y).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(UsageError, match="the file changed since the run was trained"):
        reload_splits(desc)
    with pytest.raises(UsageError, match="^arrays: the run was trained on in-memory data"):
        reload_splits(from_arrays(x, y).describe())
