"""The flexible cut-off penalty and scalers: the constants, the cut-off integral with its exact
gradient, the per-neuron scalers, random slopes and random activations, and the checks of their
arguments (re-exported by :mod:`widthlab.nn.flexible`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from widthlab.errors import UsageError

#: A slope ``k`` leaves about ``GRAY_ZONE_FACTOR / k`` neurons with a scaler in (0.007, 0.993).
GRAY_ZONE_FACTOR = 10.0
#: Scaler at the right end of the gray zone, ``sigmoid(-5)``: :meth:`FlexibleLinear.prune` keeps
#: the neurons up to there (cutting at 0.5, i.e. at ``x0``, drops neurons still scaled by up to
#: 0.5 and cost a 23-neuron FashionMNIST model 1.35 points of test accuracy).
PRUNE_THRESHOLD = 1.0 / (1.0 + math.exp(GRAY_ZONE_FACTOR / 2))
K_RANGE = (1e-4, 1e4)  # a learned slope is clamped here (exp of a wild log-slope stays finite)


# ------------------------------------------------------------------------------ the penalty
def _softplus(z: Tensor) -> Tensor:
    """``log(1 + e^z)`` to full float64 precision (torch's softplus returns ``z`` above 20)."""
    return z.clamp(min=0) + torch.log1p(torch.exp(-z.abs()))


def _h(z: Tensor) -> Tensor:
    """``z sigmoid(z) - softplus(z)``, an even function, from its small-terms form."""
    a = -z.abs()
    return a * torch.sigmoid(a) - _softplus(a)


class _CutoffIntegral(torch.autograd.Function):
    """``P(x0, k, n)`` with closed-form gradients (float64 in, float64 out).

    For ``x0 > n / 2`` the mirror identity ``P(x0) = n - P(n - x0)`` is used, so the softplus
    difference is always taken where it does not cancel; the gradients are evaluated in the same
    reduced coordinate:

        dP/dx0 = sigmoid(k x0) - sigmoid(k (x0 - n))
        dP/dk  = (h(k x0) - h(k (x0 - n))) / k^2,   h(z) = z sigmoid(z) - softplus(z)
    """

    @staticmethod
    def forward(ctx, x0: Tensor, k: Tensor, n: Tensor) -> Tensor:
        mirror = x0 > n / 2
        xr = torch.where(mirror, n - x0, x0)  # reduced cut-off, always <= n / 2
        u, v = k * xr, k * (xr - n)           # v <= -k n / 2 <= 0: softplus(v) is small
        p = (_softplus(u) - _softplus(v)) / k
        ctx.save_for_backward(mirror, xr, k, n)
        return torch.where(mirror, n - p, p)

    @staticmethod
    def backward(ctx, grad: Tensor):
        mirror, xr, k, n = ctx.saved_tensors
        u, v = k * xr, k * (xr - n)
        d_x0 = torch.sigmoid(u) - torch.sigmoid(v)  # the same in both branches
        d_k = (_h(u) - _h(v)) / (k * k)
        d_k = torch.where(mirror, -d_k, d_k)
        gx = grad * d_x0 if ctx.needs_input_grad[0] else None
        gk = grad * d_k if ctx.needs_input_grad[1] else None
        return gx, gk, None


def cutoff_integral(x0: Tensor | float, k: Tensor | float, n: Tensor | float) -> Tensor:
    """Integral of the cut-off scaler over ``[0, n]``: the flexible layers' size penalty.

    Parameters
    ----------
    x0 : tensor or float
        Cut-off position(s); any finite value (the penalty tends to 0 for ``x0 -> -inf`` and to
        ``n`` for ``x0 -> +inf``).
    k : tensor or float
        Slope(s), ``> 0``.
    n : tensor or float
        Layer width(s) ``N``, ``> 0``.

    Returns
    -------
    Tensor
        ``(softplus(k x0) - softplus(k (x0 - n))) / k``, broadcast over the inputs, computed in
        float64 with closed-form gradients for ``x0`` and ``k`` and returned in the dtype of
        ``x0`` (float64 for Python numbers).
    """
    like = x0 if isinstance(x0, Tensor) else None
    dev = like.device if like is not None else None
    t = [v if isinstance(v, Tensor) else torch.tensor(float(v), dtype=torch.float64, device=dev)
         for v in (x0, k, n)]
    shape = torch.broadcast_shapes(*(v.shape for v in t))
    x0d, kd, nd = (v.double().expand(shape) for v in t)  # autograd sums expanded gradients
    out = _CutoffIntegral.apply(x0d, kd, nd)
    return out.to(like.dtype) if like is not None and like.is_floating_point() else out


def cutoff_scale(index: Tensor, x0: Tensor, k: Tensor | float) -> Tensor:
    """The scaler ``sigmoid(k (x0 - index))`` (every argument broadcast)."""
    return torch.sigmoid(k * (x0 - index))


def cutoff_scale_array(x0: float, k: float, n: int) -> np.ndarray:
    """:func:`cutoff_scale` of neurons ``i = 0 .. n-1`` in float64, as a numpy array ``(n,)``
    (analyses of a stored cut-off ``x0`` and slope ``k``)."""
    index = torch.arange(int(n), dtype=torch.float64)
    x0_t = torch.tensor(float(x0), dtype=torch.float64)
    return cutoff_scale(index, x0_t, float(k)).numpy()


def random_slopes(n: int, step: int, seed: int = 0, gray_zone: tuple[float, float] = (1.0, 20.0),
                  device: torch.device | str = "cpu") -> Tensor:
    """``n`` slopes for training step ``step``: gray-zone width ``U(lo, hi)``, ``k = 10 / width``.

    The draw depends only on ``(seed, step)``, so a resumed run sees the same slopes.
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    lo, hi = gray_zone
    width = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    return (GRAY_ZONE_FACTOR / width).to(device=device, dtype=torch.float32)


def random_activation(a: Tensor, scale: Tensor, generator: torch.Generator | None = None
                      ) -> Tensor:
    """The journal's "random activation": keep each neuron with probability ``scale``.

    ``a`` is ``(B, H)``, ``scale`` is ``(H,)``; one Bernoulli draw per neuron and batch. The mask
    is a sample, so no gradient reaches ``scale`` (nor ``x0``, nor ``k``): the size cannot learn.
    """
    # the graph runs through the sample, as in the journal's version: torch defines the
    # derivative of a Bernoulli draw with respect to its probability as zero
    mask = torch.bernoulli(scale.expand_as(a), generator=generator)  # (B, H)
    return a * mask


def _check_gray_zone(gray_zone: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in gray_zone)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise UsageError(f"gray_zone must be (lo, hi) with 0 < lo <= hi, got {gray_zone!r}")
    return lo, hi


def _check_k(k: float) -> float:
    k = float(k)
    if not (k > 0 and math.isfinite(k)):
        raise UsageError(f"slope k must be a finite number > 0, got {k!r}; the journal uses 1")
    return k
