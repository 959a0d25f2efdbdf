"""What growth measures, in closed form: a model's output weights and output error, the
removal cost of each unit, the refit fraction, the outgoing-weight gradient of candidate
units and GradMax rows (re-exported by :mod:`widthlab.nn.growth`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from widthlab.nn._growth_plan import ROW_NORM

# the one exact removal cost (also behind metrics.importance.exact_importance)
from widthlab.units.scores import removal_costs as removal_costs


def output_weight(bank, m: int) -> Tensor:
    """Model ``m``'s output weights ``(C, w)`` (one-hidden-layer models), a view."""
    return next(v for name, v, _ in bank.model_params(m) if name == "layers.1.weight")


@torch.no_grad()
def refit_fraction(act: Tensor, ridge: float = 1e-3, dof: bool = True) -> Tensor:
    """Per unit, the fraction of its activation the other units cannot take over ``(w,)``.

    ``mean((a_i - fit_i)^2) / mean(a_i^2)``, ``fit_i`` the least-squares fit of ``a_i`` ``(N,)``
    by the other units' activations and a constant (the output bias), with a ridge of
    ``ridge`` times the mean variance: ``1 / [C^-1]_ii`` of the ridged covariance ``C`` of
    ``act`` ``(N, w)``, over ``mean(a_i^2)``, clipped to ``[0, 1]``. Removing unit ``i`` and
    moving its logit contribution ``fit_i * w_i`` onto the others' outgoing weights leaves
    ``(a_i - fit_i) w_i``, whose cost is this fraction of the unit's to second order. With
    ``dof`` the residual is multiplied by ``N / (N - w)`` (an in-sample fit by ``w``
    regressors takes about ``w / N`` of any variance); with ``w >= N`` nothing is fitted
    reliably and every fraction is clipped to 1. One ``w x w`` Cholesky factorisation (float64).
    """
    h = act.double()
    n, k = h.shape
    second = h.square().mean(0)
    hc = h - h.mean(0)
    cov = hc.t() @ hc / n
    cov.diagonal().add_(ridge * cov.diagonal().mean() + 1e-12)  # a 0-dim tensor: no sync
    resid = 1.0 / torch.cholesky_inverse(torch.linalg.cholesky(cov)).diagonal()
    if dof:  # the in-sample fit by k regressors takes about k / n of any variance
        resid = resid * n / max(n - k, 1)
    return (resid / second.clamp(min=1e-12)).clamp(0.0, 1.0).to(torch.float32)


@torch.no_grad()
def output_error(bank, x: Tensor, y: Tensor) -> Tensor:
    """``d CE_i / d logits_i`` per sample and model, ``softmax - onehot``, ``(N, M, C)``."""
    delta = F.softmax(bank(x).float(), -1)  # (N, M, C)
    delta[torch.arange(len(y), device=delta.device), :, y] -= 1.0
    return delta


def outgoing_gradient(x: Tensor, delta: Tensor, w: Tensor, b: Tensor, *, noise: bool = False
                      ) -> Tensor | tuple[Tensor, Tensor]:
    """Gradient of the mean loss over ``x`` with respect to the zero outgoing weights of
    candidate units ``relu(x @ w.T + b)``: ``delta.T @ act / N``.

    With ``noise``, also the variance of that mean over the samples (per entry,
    ``(mean(g_n^2) - G^2) / (N - 1)``, ``g_n`` one sample's gradient): ``G^2`` minus it is
    an unbiased estimate of the squared true gradient.

    Parameters
    ----------
    x : Tensor of shape (N, in)
    delta : Tensor of shape (N, M, C)
        The output error of each model (:func:`output_error`).
    w, b : Tensor of shape (M, K, in) and (M, K)
        K candidates per model.

    Returns
    -------
    Tensor of shape (M, K, C), and its noise variance (same shape) with ``noise``
    """
    n = len(x)
    act = F.relu(torch.einsum("nd,mkd->nmk", x, w) + b)  # (N, M, K)
    grad = torch.einsum("nmc,nmk->mkc", delta, act) / n
    if not noise:
        return grad
    second = torch.einsum("nmc,nmk->mkc", delta.square(), act.square()) / n
    return grad, (second - grad.square()).clamp(min=0) / max(n - 1, 1)


def _gradmax_rows(s: Tensor, vh: Tensor, k: int, g: torch.Generator) -> Tensor:
    """``k`` rows of norm :data:`ROW_NORM`: the top singular directions ``vh`` ``(C, in)``
    with both signs, then mixtures ``sum_j s_j z_j vh_j`` with ``z`` standard normal."""
    rank = int((s > s[0] * 1e-6).sum()) if s.numel() and s[0] > 0 else 0
    if rank == 0:  # no error left: random directions
        return F.normalize(torch.randn(k, vh.shape[1], generator=g), dim=1) * ROW_NORM
    top = vh[:rank]
    pure = torch.cat([top, -top])[:k]
    mix = torch.randn(k - len(pure), rank, generator=g) * s[:rank]
    rows = torch.cat([pure, mix @ top])
    return F.normalize(rows, dim=1) * ROW_NORM
