"""The real MNIST and FashionMNIST: checksums, class counts, normalisation, splits.

The expected class counts are the published ones (see DEVELOPERS.md), not read from the files.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from widthlab.data import load_arrays, load_splits, verify

pytestmark = pytest.mark.realdata

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module", params=["mnist", "fashion-mnist"])
def arrays(request, tmp_path_factory):
    from tests.conftest import REAL_CACHE

    mp = pytest.MonkeyPatch()
    mp.setenv("WIDTHLAB_CACHE", REAL_CACHE)
    try:
        yield request.param, load_arrays(request.param)
    finally:
        mp.undo()


def test_class_counts(arrays):
    name, (tr_x, tr_y, te_x, te_y) = arrays
    assert tr_x.shape == (60000, 28, 28) and te_x.shape == (10000, 28, 28)
    assert tr_x.dtype == np.uint8
    want_train = MNIST_TRAIN if name == "mnist" else [6000] * 10
    want_test = MNIST_TEST if name == "mnist" else [1000] * 10
    assert np.bincount(tr_y, minlength=10).tolist() == want_train
    assert np.bincount(te_y, minlength=10).tolist() == want_test


def test_real_cache_verifies(real_cache):
    rows = verify("all")
    assert [r.status for r in rows] == ["ok"] * 8
    assert [r.count for r in rows] == [60000, 60000, 10000, 10000] * 2


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_splits_normalised_and_deterministic(real_cache, name):
    a = load_splits(name, val_size=5000, seed=3)
    b = load_splits(name, val_size=5000, seed=3)
    c = load_splits(name, val_size=5000, seed=4)
    assert (len(a.train), len(a.val), len(a.test)) == (55000, 5000, 10000)
    assert a.train.x.dtype == torch.float32 and a.train.y.dtype == torch.int64
    assert a.train.x.shape == (55000, 784)
    assert torch.equal(a.val.y, b.val.y) and torch.equal(a.val.x, b.val.x)
    assert not torch.equal(a.val.y, c.val.y)
    # The normalisation constants are the train-set moments, in float64.
    tr_x = load_arrays(name)[0].astype(np.float64) / 255.0
    assert a.mean == pytest.approx(tr_x.mean(), rel=1e-12)
    assert a.std == pytest.approx(tr_x.std(), rel=1e-12)
    full = torch.cat([a.train.x, a.val.x]).double()
    assert abs(full.mean().item()) < 1e-5 and full.std().item() == pytest.approx(1.0, abs=1e-4)
    # Train and validation partition the official training set.
    counts = torch.cat([a.train.y, a.val.y]).bincount(minlength=10).tolist()
    assert counts == (MNIST_TRAIN if name == "mnist" else [6000] * 10)


def test_cli_fetch_and_verify_real(real_cache):
    for args in (["data", "fetch", "all", "-q"], ["data", "verify", "all"]):
        out = subprocess.run([sys.executable, "-m", "widthlab.cli", *args],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        for name in ("mnist", "fashion-mnist"):
            assert name in out.stdout
        assert "60000" in out.stdout and "10000" in out.stdout
