"""PCA of a layer's pre-activations from its streamed covariance: how many dimensions are used?

Everything here starts from a covariance matrix (float64, e.g.
:meth:`widthlab.engine.stats.RunningCovariance.covariance`), never from a stored activation
matrix.

Example::

    from widthlab.metrics.pca import Spectrum

    s = Spectrum.from_covariance(cov)           # eigenvalues, descending, and eigenvectors
    s.n_components(0.95)                        # components for 95% of the variance
    s.participation_ratio()                     # (sum l)^2 / sum l^2
    s.tail_variance()                           # E||z - proj_k(z)||^2 for k = 0..width
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from widthlab.errors import UsageError


@dataclass(frozen=True)
class Spectrum:
    """Eigen-decomposition of a covariance: ``values`` descending (clipped at 0) and the
    matching unit ``vectors`` as columns; ``mean`` is the data mean when known."""

    values: np.ndarray
    vectors: np.ndarray
    mean: np.ndarray | None = None

    @classmethod
    def from_covariance(cls, cov, mean=None) -> Spectrum:
        """Decompose a symmetric positive semi-definite ``cov`` (``numpy.linalg.eigh``)."""
        c = np.asarray(cov, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] != c.shape[1]:
            raise UsageError(f"a covariance must be a square matrix, got shape {c.shape}")
        if not np.isfinite(c).all():
            raise UsageError("the covariance holds NaN or inf (a diverged model?); "
                             "leave that model out")
        c = (c + c.T) / 2
        values, vectors = np.linalg.eigh(c)
        order = np.argsort(values)[::-1]
        m = None if mean is None else np.asarray(mean, dtype=np.float64)
        if m is not None and m.shape != (c.shape[0],):
            raise UsageError(f"mean must have shape ({c.shape[0]},), got {m.shape}")
        return cls(np.clip(values[order], 0.0, None), vectors[:, order], m)

    @property
    def total(self) -> float:
        """Total variance, the trace of the covariance."""
        return float(self.values.sum())

    def explained(self) -> np.ndarray:
        """Fraction of the variance explained by each component (sums to 1; zeros if none)."""
        t = self.total
        return self.values / t if t > 0 else np.zeros_like(self.values)

    def n_components(self, fraction: float) -> int:
        """Fewest leading components explaining at least ``fraction`` of the variance."""
        if not 0 < fraction <= 1:
            raise UsageError(f"fraction must be in (0, 1], got {fraction}")
        if self.total <= 0:
            return 0
        cum = np.cumsum(self.explained())
        return int(min(np.searchsorted(cum, fraction - 1e-12) + 1, len(cum)))

    def participation_ratio(self) -> float:
        """``(sum l)^2 / sum l^2``: between 1 (one direction) and the width (isotropic)."""
        sq = float((self.values ** 2).sum())
        return self.total ** 2 / sq if sq > 0 else 0.0

    def tail_variance(self) -> np.ndarray:
        """``t[k]`` = mean squared distance between a centred vector and its projection on the
        top ``k`` components, for ``k = 0 .. width`` (the sum of the remaining eigenvalues)."""
        v = self.values
        return np.concatenate([np.cumsum(v[::-1])[::-1], [0.0]])

    def projector(self, k: int) -> np.ndarray:
        """The ``(width, width)`` orthogonal projector on the top ``k`` components."""
        if not 0 <= k <= len(self.values):
            raise UsageError(f"k must be in [0, {len(self.values)}], got {k}")
        u = self.vectors[:, :k]
        return u @ u.T


def reconstruction(mlp, spectrum: Spectrum, x, y, ks, *, batch_size: int = 2000
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction distance and accuracy of a one-hidden-layer ``mlp`` versus ``k``.

    For each ``k`` in ``ks`` the hidden pre-activations ``z`` of the inputs ``x`` are replaced
    by their projection on the top ``k`` principal components, ``mean + P_k (z - mean)``:

    - distance[k]: the mean Euclidean distance ``||z - proj_k(z)||`` over the samples (the
      journal's "reconstruction distance"; its square's mean is :meth:`Spectrum.tail_variance`
      when ``x`` is the data the covariance came from);
    - accuracy[k]: the accuracy on ``y`` of ``relu(proj_k(z))`` fed to the output layer.

    ``k = width`` projects on every component, which is the identity: it is computed as the
    model's own forward pass, so it equals the plain accuracy exactly. Works batch by batch in
    float32 on the model's device (coordinates in the eigenbasis once per batch, then one
    GEMM per ``k``); ``spectrum.mean`` must be set.

    Returns
    -------
    distance, accuracy : ndarray of shape (len(ks),)
    """
    import torch

    if spectrum.mean is None:
        raise UsageError("reconstruction needs the pre-activation mean: build the Spectrum "
                         "with mean=...")
    layers = list(mlp.layers)
    if len(layers) != 2:
        raise UsageError("reconstruction handles one-hidden-layer MLPs")
    width = layers[0].out_features
    if width != len(spectrum.values):
        raise UsageError(f"the spectrum has {len(spectrum.values)} dimensions but the model "
                         f"has {width} hidden units")
    ks = [int(k) for k in ks]
    if any(not 0 <= k <= width for k in ks):
        raise UsageError(f"every k must be in [0, {width}], got {ks}")
    dev = layers[0].weight.device
    x = torch.as_tensor(x, dtype=torch.float32, device=dev)
    y = torch.as_tensor(y, device=dev)
    u = torch.as_tensor(spectrum.vectors, dtype=torch.float32, device=dev)  # (w, w)
    mean = torch.as_tensor(spectrum.mean, dtype=torch.float32, device=dev)
    dist = np.zeros(len(ks))
    correct = np.zeros(len(ks))
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            z = layers[0](xb)  # (B, w)
            zc = z - mean
            c = zc @ u  # (B, w) coordinates in the eigenbasis
            # ||zc - P_k zc||^2 = sum of the squared coordinates after k (float64 cumsum)
            sq = (c.double() ** 2).flip(1).cumsum(1).flip(1)  # sq[:, k] = sum_{j>=k}
            sq = torch.cat([sq, sq.new_zeros(len(xb), 1)], 1)  # (B, w + 1)
            for j, k in enumerate(ks):
                dist[j] += float(sq[:, k].clamp(min=0).sqrt().sum())
                if k == width:
                    logits = mlp(xb)  # the identity projection
                else:
                    zk = mean + c[:, :k] @ u[:, :k].T  # (B, w)
                    logits = layers[1](torch.relu(zk))
                correct[j] += float((logits.argmax(1) == yb).sum())
    n = max(len(x), 1)
    return dist / n, correct / n


def reconstruction_accuracy(mlp, spectrum: Spectrum, x, y, ks) -> np.ndarray:
    """The accuracy half of :func:`reconstruction` (test accuracy versus ``k``)."""
    return reconstruction(mlp, spectrum, x, y, ks)[1]


def k_grid(width: int) -> list[int]:
    """``0, 1, 2, 4, ...`` up to ``width`` (always included): the k values worth plotting."""
    ks = [0] + [2 ** i for i in range(int(np.log2(max(width, 1))) + 1)]
    return sorted(set(k for k in ks if k <= width) | {width})
