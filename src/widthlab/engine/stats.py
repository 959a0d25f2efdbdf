"""Streaming per-neuron statistics: moments and within-model covariance, in float64.

Both accumulators take batches of any size in any order and give the same answer (up to
float64 rounding) as a two-pass computation over the concatenated data. Batches are reduced on
the device they live on; merging uses Chan et al.'s pairwise update, which stays accurate when
the mean is large compared with the spread (the naive ``E[x^2] - E[x]^2`` does not).

Example::

    from widthlab.engine.stats import RunningMoments

    mom = RunningMoments(n_features=64)
    for a in batches:                 # a: (batch, 64) activations
        mom.update(a)
    mom.mean, mom.std(), mom.active   # per neuron; ``~mom.active`` are the dead neurons
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from widthlab.errors import UsageError


def _as_2d(x: Tensor, n_features: int, what: str) -> Tensor:
    if x.dim() != 2 or x.shape[1] != n_features:
        raise UsageError(f"{what}: expected a (batch, {n_features}) tensor, got shape "
                         f"{tuple(x.shape)}")
    return x


class RunningMoments:
    """Count, mean, variance, min, max and "ever active" of each feature, streamed.

    Parameters
    ----------
    n_features : int
        Number of columns of every batch.
    device : str or torch.device
        Where the accumulators live (the batches' device).
    active_threshold : float
        A feature is *active* if some sample exceeded this value; a ReLU neuron that is never
        active on a dataset is dead on it.
    """

    def __init__(self, n_features: int, device: str | torch.device = "cpu",
                 active_threshold: float = 0.0):
        if n_features < 0:
            raise UsageError(f"n_features must be >= 0, got {n_features}")
        self.n_features = int(n_features)
        self.device = torch.device(device)
        self.active_threshold = float(active_threshold)
        kw = dict(dtype=torch.float64, device=self.device)
        self.n = 0
        self._mean = torch.zeros(self.n_features, **kw)
        self._m2 = torch.zeros(self.n_features, **kw)
        self._min = torch.full((self.n_features,), float("inf"), **kw)
        self._max = torch.full((self.n_features,), float("-inf"), **kw)
        self._active = torch.zeros(self.n_features, dtype=torch.bool, device=self.device)

    @torch.no_grad()
    def update(self, x: Tensor) -> RunningMoments:
        """Add a batch ``x`` of shape (batch, n_features).

        The batch is copied once into a float64 buffer kept between calls (a fresh
        ``(batch, H)`` float64 tensor per batch costs its page faults every time) and reduced
        in place: min, max and "active" (``max > threshold``) first, then the mean, then the
        centred sum of squares.
        """
        x = _as_2d(x, self.n_features, "RunningMoments.update")
        nb = x.shape[0]
        if nb == 0:
            return self
        buf = self._buffer(x.shape)
        buf.copy_(x)
        hi = buf.amax(0)
        self._min = torch.minimum(self._min, buf.amin(0))
        self._max = torch.maximum(self._max, hi)
        self._active |= hi > self.active_threshold
        mean_b = buf.mean(0)
        buf.sub_(mean_b)
        m2_b = buf.mul_(buf).sum(0)
        self._merge(nb, mean_b, m2_b)
        return self

    def _buffer(self, shape: torch.Size) -> Tensor:
        buf = getattr(self, "_buf", None)
        if buf is None or buf.shape[1] != shape[1] or buf.shape[0] < shape[0]:
            buf = self._buf = torch.empty(shape, dtype=torch.float64, device=self.device)
        return buf[:shape[0]]

    def _merge(self, nb: int, mean_b: Tensor, m2_b: Tensor) -> None:
        na = self.n
        n = na + nb
        delta = mean_b - self._mean
        self._mean += delta * (nb / n)
        self._m2 += m2_b + delta * delta * (na * nb / n)
        self.n = n

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Fold in another accumulator over the same features (e.g. from another worker)."""
        if other.n_features != self.n_features:
            raise UsageError(f"cannot merge moments of {other.n_features} features into "
                             f"{self.n_features}")
        if other.n:
            self._merge(other.n, other._mean.to(self.device), other._m2.to(self.device))
            self._min = torch.minimum(self._min, other._min.to(self.device))
            self._max = torch.maximum(self._max, other._max.to(self.device))
            self._active |= other._active.to(self.device)
        return self

    @property
    def count(self) -> int:
        return self.n

    @property
    def mean(self) -> Tensor:
        return self._mean.clone()

    def var(self, ddof: int = 0) -> Tensor:
        """Variance; NaN where fewer than ``ddof + 1`` samples were seen."""
        if self.n - ddof <= 0:
            return torch.full_like(self._m2, float("nan"))
        return (self._m2 / (self.n - ddof)).clamp_min(0.0)

    def std(self, ddof: int = 0) -> Tensor:
        return self.var(ddof).sqrt()

    @property
    def min(self) -> Tensor:
        return self._min.clone()

    @property
    def max(self) -> Tensor:
        return self._max.clone()

    @property
    def active(self) -> Tensor:
        """Bool per feature: exceeded ``active_threshold`` at least once."""
        return self._active.clone()

    def state_dict(self) -> dict:
        return {"n": self.n, "mean": self._mean, "m2": self._m2, "min": self._min,
                "max": self._max, "active": self._active,
                "active_threshold": self.active_threshold}

    def load_state_dict(self, state: dict) -> RunningMoments:
        if state["mean"].shape[0] != self.n_features:
            raise UsageError("state has a different number of features")
        self.n = int(state["n"])
        self.active_threshold = float(state["active_threshold"])
        for k in ("mean", "m2", "min", "max", "active"):
            setattr(self, "_" + k, state[k].to(self.device).clone())
        return self


class RunningCovariance:
    """Mean and covariance matrix within each block of columns (one block per model).

    Parameters
    ----------
    blocks : sequence of (start, stop)
        Column ranges; block ``i`` gets a ``(stop - start)``-square covariance. Blocks may be
        given in any order and must lie within the batches' columns.
    device : str or torch.device
    """

    def __init__(self, blocks: Sequence[tuple[int, int]], device: str | torch.device = "cpu"):
        self.blocks = [(int(a), int(b)) for a, b in blocks]
        for a, b in self.blocks:
            if not 0 <= a <= b:
                raise UsageError(f"bad block ({a}, {b}): need 0 <= start <= stop")
        self.device = torch.device(device)
        self.n = 0
        kw = dict(dtype=torch.float64, device=self.device)
        self._mean = [torch.zeros(b - a, **kw) for a, b in self.blocks]
        self._c = [torch.zeros(b - a, b - a, **kw) for a, b in self.blocks]

    @torch.no_grad()
    def update(self, x: Tensor) -> RunningCovariance:
        """Add a batch ``x`` of shape (batch, columns)."""
        if x.dim() != 2:
            raise UsageError(f"RunningCovariance.update: expected a 2-d tensor, got {x.dim()}-d")
        end = max((b for _, b in self.blocks), default=0)
        if x.shape[1] < end:
            raise UsageError(f"RunningCovariance.update: blocks reach column {end} but the "
                             f"batch has {x.shape[1]} columns")
        nb = x.shape[0]
        if nb == 0:
            return self
        na, n = self.n, self.n + nb
        for i, (a, b) in enumerate(self.blocks):
            xd = x[:, a:b].to(self.device, torch.float64)
            mean_b = xd.mean(0)
            xc = xd - mean_b
            self._add(i, na, nb, n, mean_b, xc.T @ xc)
        self.n = n
        return self

    def _add(self, i: int, na: int, nb: int, n: int, mean_b: Tensor, c_b: Tensor) -> None:
        delta = mean_b - self._mean[i]
        self._mean[i] += delta * (nb / n)
        self._c[i] += c_b + torch.outer(delta, delta) * (na * nb / n)

    def merge(self, other: RunningCovariance) -> RunningCovariance:
        """Fold in another accumulator with the same blocks."""
        if other.blocks != self.blocks:
            raise UsageError("cannot merge covariances over different blocks")
        if other.n:
            na, nb = self.n, other.n
            for i in range(len(self.blocks)):
                self._add(i, na, nb, na + nb, other._mean[i].to(self.device),
                          other._c[i].to(self.device))
            self.n = na + nb
        return self

    @property
    def count(self) -> int:
        return self.n

    def mean(self, i: int) -> Tensor:
        """Mean of block ``i``."""
        return self._mean[i].clone()

    def covariance(self, i: int, ddof: int = 1) -> Tensor:
        """Covariance of block ``i`` (NaN if fewer than ``ddof + 1`` samples were seen)."""
        if self.n - ddof <= 0:
            return torch.full_like(self._c[i], float("nan"))
        return self._c[i] / (self.n - ddof)

    def state_dict(self) -> dict:
        return {"n": self.n, "blocks": self.blocks, "mean": self._mean, "c": self._c}
