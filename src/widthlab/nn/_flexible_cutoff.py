"""The bank modifier of the flexible cut-off, :class:`FlexibleCutoff` (re-exported by
:mod:`widthlab.nn.flexible`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn._cutoff import (
    K_RANGE,
    _check_gray_zone,
    _check_k,
    cutoff_integral,
    cutoff_scale,
    random_slopes,
)
from widthlab.nn.modifiers import Modifier


# ------------------------------------------------------------------------------ bank modifier
def _per_model(value, n_models: int, what: str, default: float | None = None) -> list:
    if value is None:
        return [default] * n_models
    if isinstance(value, (int, float, bool, np.floating, np.integer, np.bool_)):
        return [value] * n_models
    values = list(value)
    if len(values) != n_models:
        raise UsageError(f"{what} needs one value or one per model ({n_models}), "
                         f"got {len(values)}")
    return values


class FlexibleCutoff(Modifier):
    """The flexible cut-off for every model of a bank (one hidden layer's neurons).

    Model ``m`` of width ``N_m`` scales its neuron ``i = 0 .. N_m - 1`` by
    ``sigmoid(k_m (x0_m - i))`` and adds ``penalty_m * P(x0_m, k_m, N_m)`` to its loss.

    Parameters
    ----------
    x0 : float, sequence of float or None
        Starting cut-off, one for all models or one per model; None = each model's width.
    penalty : float or sequence of float
        Weight of the size penalty (0: none).
    k : float or sequence of float
        Slope (1 in the journal).
    learn_k : bool
        Learn the slope as ``log k`` (clamped to ``[1e-4, 1e4]``).
    k_lr : float
        Effective learning rate of ``log k`` (Adam steps are about the learning rate in size;
        the stored parameter is ``log k * lr / k_lr`` so the modifier's single ``lr`` moves
        ``log k`` by about ``k_lr``).
    random_slope : bool or sequence of bool
        Per model: draw the gray-zone width uniformly in ``gray_zone`` at every training step
        (``k = 10 / width``), from a generator seeded by ``(seed, step)``; evaluation uses ``k``.
    gray_zone : (float, float)
    lr : float or sequence of float
        Learning rate of ``x0`` (1 in the journal), one for all models or one per model (so
        variants differing only in it train in one bank; not with ``learn_k``).
    seed : int

    Records per model and epoch: ``x0``, ``size_grad`` (mean of ``dloss/dx0`` over the epoch's
    steps, penalty included), ``size_grad_std`` and, with ``learn_k``, ``k``.
    """

    def __init__(self, x0: float | Sequence[float] | None = None, *,
                 penalty: float | Sequence[float] = 0.0, k: float | Sequence[float] = 1.0,
                 learn_k: bool = False, k_lr: float = 0.01,
                 random_slope: bool | Sequence[bool] = False,
                 gray_zone: tuple[float, float] = (1.0, 20.0),
                 lr: float | Sequence[float] = 1.0, seed: int = 0):
        super().__init__()
        self.x0_init, self.penalty_init, self.k_init = x0, penalty, k
        self.learn_k, self.k_lr = bool(learn_k), float(k_lr)
        self.random_init, self.gray_zone = random_slope, _check_gray_zone(gray_zone)
        per_model = not isinstance(lr, (int, float, np.floating, np.integer))
        lrs = [float(v) for v in lr] if per_model else [float(lr)]
        if not lrs or not all(v >= 0 and math.isfinite(v) for v in lrs):
            raise UsageError(f"lr must be a finite number >= 0 (or one per model), got {lr!r}")
        if per_model and self.learn_k:
            raise UsageError("learn_k needs one x0 learning rate for every model; give lr as "
                             "one number")
        if not self.k_lr > 0:
            raise UsageError(f"k_lr must be > 0, got {k_lr!r}")
        self.lr, self.seed = (lrs if per_model else lrs[0]), int(seed)

    def build(self, bank) -> None:
        m_count = bank.n_models
        widths = [s.width for s in bank.specs]
        x0 = [float(v) for v in _per_model(self.x0_init, m_count, "x0")] \
            if self.x0_init is not None else [float(w) for w in widths]
        lam = [float(v) for v in _per_model(self.penalty_init, m_count, "penalty")]
        ks = [_check_k(v) for v in _per_model(self.k_init, m_count, "k")]
        rnd = [bool(v) for v in _per_model(self.random_init, m_count, "random_slope")]
        if not all(math.isfinite(v) for v in x0):
            raise UsageError(f"x0 must be finite, got {self.x0_init!r}")
        if not all(v >= 0 and math.isfinite(v) for v in lam):
            raise UsageError(f"penalty weights must be finite and >= 0, got {self.penalty_init!r}")
        if self.learn_k and any(rnd):
            raise UsageError("random_slope draws k at every step; it cannot be learned too")
        self.x0 = nn.Parameter(torch.tensor(x0, dtype=torch.float32))  # (M,)
        _per_model(self.lr, m_count, "lr")  # one x0 learning rate, or one per model
        self._log_k_scale = self.k_lr / max(self.model_lr(0), 1e-12)
        if self.learn_k:
            self.log_k = nn.Parameter(torch.tensor(ks, dtype=torch.float64).log().float()
                                      / self._log_k_scale)  # (M,)
        else:
            self.register_buffer("k_base", torch.tensor(ks), persistent=False)  # (M,)
        self.register_buffer("lam", torch.tensor(lam, dtype=torch.float64), persistent=False)
        self.register_buffer("width", torch.tensor(widths, dtype=torch.float64),
                             persistent=False)  # (M,) N of each model
        self.register_buffer("random", torch.tensor(rnd), persistent=False)  # (M,) bool
        index = torch.empty(bank.n_hidden)
        for a, b in self.slices:
            index[a:b] = torch.arange(b - a, dtype=torch.float32)
        self.register_buffer("index", index, persistent=False)  # (H,) neuron index in its model
        self._k_step: Tensor | None = None
        self._reset_grad_stats()

    def describe(self) -> dict:
        def listed(v):
            if v is None or isinstance(v, (int, float, bool)):
                return v
            return [float(x) if not isinstance(x, bool) else x for x in v]

        return {**super().describe(), "x0": listed(self.x0_init),
                "penalty": listed(self.penalty_init), "k": listed(self.k_init),
                "learn_k": self.learn_k, "k_lr": self.k_lr if self.learn_k else None,
                "random_slope": listed(self.random_init), "gray_zone": list(self.gray_zone),
                "seed": self.seed, "scaler": "sigmoid(k (x0 - i))",
                "penalty_form": "lam * integral_0^N scaler"}

    def model_lr(self, m: int) -> float:
        """The learning rate of model ``m``'s ``x0``."""
        return self.lr[m] if isinstance(self.lr, list) else self.lr

    # -------------------------------------------------------------- the cut-off
    def slope(self) -> Tensor:
        """Each model's evaluation slope ``(M,)``."""
        if self.learn_k:
            return (self.log_k * self._log_k_scale).exp().clamp(*K_RANGE)
        return self.k_base

    def current_slope(self) -> Tensor:
        """The slope of the current training step (random models drawn in ``before_step``)
        while gradients are recorded, else the evaluation slope; ``(M,)``."""
        k = self.slope()
        if self._k_step is not None and torch.is_grad_enabled() and self.training:
            k = torch.where(self.random, self._k_step, k)
        return k

    def before_step(self, step: int) -> None:
        if bool(self.random.any()):
            self._k_step = random_slopes(self.n_models, step, self.seed, self.gray_zone,
                                         self.x0.device)

    def scale(self) -> Tensor:
        um = self.unit_model
        return cutoff_scale(self.index, self.x0[um], self.current_slope()[um])  # (H,)

    def penalty(self) -> Tensor:
        p = cutoff_integral(self.x0.double(), self.current_slope().double(), self.width)
        return (self.lam * p).float()  # (M,)

    def model_params(self, m: int) -> list[tuple[str, Tensor, Tensor]]:
        out = [("x0", self.x0.detach()[m:m + 1], self.x0.grad[m:m + 1])]
        if self.learn_k:
            out.append(("log_k", self.log_k.detach()[m:m + 1], self.log_k.grad[m:m + 1]))
        return out

    # -------------------------------------------------------------- records
    def _reset_grad_stats(self) -> None:
        self._g_sum: Tensor | None = None  # (M,) float64 on the parameters' device
        self._g_sq: Tensor | None = None
        self._g_n = 0

    def after_backward(self) -> None:
        g = self.x0.grad.detach().double()  # (M,); stays on the device (no sync per step)
        if self._g_sum is None:
            self._g_sum, self._g_sq = torch.zeros_like(g), torch.zeros_like(g)
        self._g_sum += g
        self._g_sq += g * g
        self._g_n += 1

    def epoch_records(self) -> list[tuple[int, str, object]]:
        x0 = self.x0.detach().double().cpu().tolist()
        n = max(self._g_n, 1)
        if self._g_sum is None:
            mean = std = torch.full((self.n_models,), float("nan"), dtype=torch.float64)
        else:
            mean = (self._g_sum / n).cpu()
            std = (self._g_sq.cpu() / n - mean * mean).clamp(min=0).sqrt()
        k = self.slope().detach().double().cpu().tolist()
        rows = []
        for m in range(self.n_models):
            rows += [(m, "x0", x0[m]), (m, "size_grad", float(mean[m])),
                     (m, "size_grad_std", float(std[m]))]
            if self.learn_k:
                rows.append((m, "k", k[m]))
        self._reset_grad_stats()
        return rows
