"""The records of growth: the init kinds and constants, :class:`GrowthPlan`, the benefit rule
:class:`BenefitRule` and one model's :class:`Benefit` (re-exported by
:mod:`widthlab.nn.growth`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from widthlab.errors import UsageError

INITS = ("gradmax", "random", "split", "none")
ROW_NORM = 1.0 / math.sqrt(3.0)  # expected norm of an nn.Linear weight row, any fan-in
NOISE_L1 = math.sqrt(2.0 / math.pi)  # E|z| of a standard normal z


@dataclass
class GrowthPlan:
    """Units to add: arguments of :meth:`MLPBank.grow_` (``models``, ``counts``, ``init``,
    ``ids``)."""

    models: list[int]
    counts: list[int]
    init: list[tuple[Tensor, Tensor]]
    ids: list[Tensor]

    def args(self) -> tuple:
        return self.models, self.counts, self.init

    @property
    def n_units(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class BenefitRule:
    """The benefit rule's settings (see the module docstring): one test, ``benefit = lambda``,
    decides both growth and removal.

    Parameters
    ----------
    quantile : float
        The quantile of the mature units' removal costs taken as the model's benefit per unit
        (0.5: the median unit).
    band : float
        A model grows while its benefit exceeds ``band * lambda``.
    remove_at : float
        It removes units while its benefit is below ``remove_at * lambda``.
    alpha, alpha_remove : float
        Sizing of a step: the benefit is taken to scale as ``width ** -alpha``, so the width
        that prices it at lambda is ``mature * (benefit / lambda) ** (1 / alpha)``; growth
        steps use ``alpha``, removal steps ``alpha_remove`` (larger: removal approaches the
        price in smaller steps).
    max_remove : float
        At most this fraction of the mature units goes per event.
    warmup : int
        No decision before this step (the first costs of an untrained network say little).
    settle : int
        No removal in the run's last ``settle`` steps (the engine passes the run's end to
        :meth:`GrowingGate.propose`; growth stops at the gate's ``until``).
    linear : bool
        Keep the costs' first-order term (False: the exact cost minus ``-G_i . w_i``, what
        the removal would cost at a stationary point of the outgoing weights; the first-order
        term follows the optimiser's momentary direction and is noise during training).
    refit : bool
        Price each unit by the part of its cost the other units cannot take over: its cost
        times :func:`refit_fraction` of its activation against the other mature units' (see
        the module docstring). False: the plain removal cost.
    ridge : float
        The refit's ridge, times the mean activation variance (``refit`` only).
    dof : bool
        Correct the refit's residual for the in-sample fit (times ``N / (N - k)``, ``k`` the
        mature units, ``N`` the samples; ``refit`` only).
    """

    quantile: float = 0.5
    band: float = 1.25
    remove_at: float = 1.0
    alpha: float = 1.0
    alpha_remove: float = 3.0
    max_remove: float = 0.3
    warmup: int = 0
    settle: int = 0
    linear: bool = False
    refit: bool = False
    ridge: float = 1e-3
    dof: bool = True

    def __post_init__(self) -> None:
        checks = {"quantile": 0 <= self.quantile <= 1, "band": self.band >= 1,
                  "remove_at": 0 <= self.remove_at <= self.band,
                  "alpha": self.alpha > 0, "alpha_remove": self.alpha_remove > 0,
                  "max_remove": 0 <= self.max_remove < 1, "warmup": self.warmup >= 0,
                  "settle": self.settle >= 0, "ridge": self.ridge >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"BenefitRule: invalid {', '.join(bad)}; quantile in [0, 1], "
                             "band >= 1, remove_at in [0, band], alpha, alpha_remove > 0, "
                             "max_remove in [0, 1), warmup, settle, ridge >= 0")


@dataclass
class Benefit:
    """One model's measured benefit: ``value`` (None: no mature unit), the mature units'
    positions in its slice and their removal costs, its live width and young units."""

    value: float | None
    units: Tensor
    costs: Tensor
    width: int
    young: int


def _json_values(v):
    if v is None:
        return None
    return [float(x) for x in v] if isinstance(v, Sequence) else float(v)


