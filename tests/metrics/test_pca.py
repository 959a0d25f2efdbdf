"""PCA from a streamed covariance against numpy on the activation matrix itself."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from widthlab.engine.stats import RunningCovariance
from widthlab.errors import UsageError
from widthlab.metrics.pca import Spectrum


def _data(seed, n=800, d=12, rank=None):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(rank or d, d)) * np.geomspace(3, 0.1, rank or d)[:, None]
    return rng.normal(size=(n, rank or d)) @ mix + rng.normal(size=d) * 5


def test_streamed_spectrum_matches_numpy_on_the_matrix():
    z = _data(0)
    cov = RunningCovariance([(0, z.shape[1])])
    for part in np.array_split(z, 7):
        cov.update(torch.from_numpy(part))
    s = Spectrum.from_covariance(cov.covariance(0).numpy(), cov.mean(0).numpy())
    ref = np.sort(np.linalg.eigvalsh(np.cov(z, rowvar=False)))[::-1]
    np.testing.assert_allclose(s.values, ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(s.mean, z.mean(0), rtol=1e-10)
    # eigenvectors: C v = l v
    c = np.cov(z, rowvar=False)
    np.testing.assert_allclose(c @ s.vectors, s.vectors * s.values, atol=1e-8)


def test_tail_variance_is_the_mean_squared_reconstruction_error():
    z = _data(1, n=2000)
    s = Spectrum.from_covariance(np.cov(z, rowvar=False, ddof=0), z.mean(0))
    zc = z - z.mean(0)
    tail = s.tail_variance()
    assert len(tail) == z.shape[1] + 1 and tail[-1] == 0
    for k in (0, 1, 3, 7, 12):
        err = zc - zc @ s.projector(k)
        assert tail[k] == pytest.approx(np.mean(np.sum(err ** 2, axis=1)), rel=1e-9)


def test_component_counts_and_participation_ratio():
    s = Spectrum.from_covariance(np.diag([4.0, 3.0, 2.0, 1.0]))
    assert [s.n_components(f) for f in (0.4, 0.7, 0.9, 1.0)] == [1, 2, 3, 4]
    assert s.participation_ratio() == pytest.approx(100 / 30)
    iso = Spectrum.from_covariance(np.eye(5))
    assert iso.participation_ratio() == pytest.approx(5)
    low = Spectrum.from_covariance(np.cov(_data(2, rank=3), rowvar=False))
    assert low.n_components(0.999999) == 3
    dead = Spectrum.from_covariance(np.zeros((3, 3)))
    assert dead.n_components(0.9) == 0 and dead.participation_ratio() == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 9), st.floats(0.05, 1.0))
def test_n_components_is_the_smallest_sufficient_count(seed, d, frac):
    s = Spectrum.from_covariance(np.cov(_data(seed, n=50, d=d), rowvar=False))
    k = s.n_components(frac)
    cum = np.concatenate([[0], np.cumsum(s.explained())])
    assert cum[k] >= frac - 1e-9 and (k == 0 or cum[k - 1] < frac - 1e-12)


def test_bad_input_is_named():
    with pytest.raises(UsageError, match="square"):
        Spectrum.from_covariance(np.zeros((2, 3)))
    with pytest.raises(UsageError, match="NaN"):
        Spectrum.from_covariance(np.full((2, 2), np.nan))
    with pytest.raises(UsageError, match="fraction"):
        Spectrum.from_covariance(np.eye(2)).n_components(1.5)


def test_reconstruction_accuracy_full_k_is_the_plain_accuracy_and_grows():
    from widthlab.metrics.pca import k_grid, reconstruction_accuracy
    from widthlab.nn.bank import MLP

    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(600, 20)).astype(np.float32))
    proj = rng.normal(size=(20, 10))
    y = torch.from_numpy((x.numpy() @ proj).argmax(1))
    mlp = MLP([20, 16, 10], seed=0)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(mlp(x), y).backward()
        opt.step()
    with torch.no_grad():
        z = mlp.layers[0](x).double().numpy()
        plain = (mlp(x).argmax(1) == y).double().mean().item()
    s = Spectrum.from_covariance(np.cov(z, rowvar=False), z.mean(0))
    ks = k_grid(16)
    assert ks == [0, 1, 2, 4, 8, 16]
    acc = reconstruction_accuracy(mlp, s, x, y, ks)
    assert acc[-1] == plain
    assert acc[0] < acc[-1] - 0.3  # the mean alone predicts one class
    assert np.all(np.diff(acc) >= -0.02)  # more components, (almost) never worse


def test_reconstruction_distance_matches_numpy_float64():
    from widthlab.metrics.pca import reconstruction
    from widthlab.nn.bank import MLP

    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(700, 20)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, 700))
    mlp = MLP([20, 12, 10], seed=1)
    with torch.no_grad():
        z = mlp.layers[0](x).double().numpy()
    s = Spectrum.from_covariance(np.cov(z, rowvar=False, ddof=0), z.mean(0))
    ks = [0, 1, 5, 11, 12]
    dist, _ = reconstruction(mlp, s, x, y, ks, batch_size=128)
    zc = z - z.mean(0)
    ref = [np.linalg.norm(zc - zc @ s.projector(k), axis=1).mean() for k in ks]
    np.testing.assert_allclose(dist, ref, rtol=1e-5, atol=1e-6)
    # mean squared distance is the tail variance on the covariance's own data
    sq = [np.mean(np.sum((zc - zc @ s.projector(k)) ** 2, 1)) for k in ks]
    np.testing.assert_allclose(sq, s.tail_variance()[ks], rtol=1e-9, atol=1e-12)
    with pytest.raises(UsageError, match="every k"):
        reconstruction(mlp, s, x, y, [13])
