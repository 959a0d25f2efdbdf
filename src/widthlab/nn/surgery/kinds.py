"""Gate kinds: what a per-unit gate multiplies its unit by, what it costs, when the unit is dead.

A gate kind is the arithmetic of one gate family member, independent of where the gate sits
(a :class:`~widthlab.nn.surgery.gates.UnitGate` on a user's layer, or any other module holding
one parameter per unit); it depends on torch only, so it can move with the gates.

* :class:`L1Kind` (``"l1"``, the journal's sparsifier gate): the multiplier is ``relu(g)`` in
  training and evaluation alike, the per-unit price ``relu(g)`` (``"strict"``) or ``|g|``
  (``"abs"``), a unit is dead when ``relu(g) == 0``.
* :class:`HardConcreteKind` (``"hard_concrete"``, Louizos, Welling & Kingma 2018, *Learning
  sparse neural networks through L0 regularization*): the parameter is ``log_alpha``; in
  training the multiplier is a sample
  ``z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) * (zeta - gamma) + gamma, 0, 1)``
  with ``u ~ U(0, 1)`` drawn per minibatch, in evaluation the deterministic
  ``clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``; the per-unit price is the
  probability that the gate is non-zero, ``sigmoid(log_alpha - beta * log(-gamma / zeta))``
  (the expected L0 norm); a unit is dead when its evaluation gate is exactly 0, i.e.
  ``sigmoid(log_alpha) <= -gamma / (zeta - gamma)``. Defaults: ``beta = 2/3``,
  ``(gamma, zeta) = (-0.1, 1.1)``.
* :class:`RelativeL1Kind` (``"relative_l1"``, a scale-free L1 gate): the multiplier is
  ``relu(g) / max(relu(g))`` over the gate's units (the largest unit is 1), the per-unit price
  that multiplier. Scaling all of a gate's ``g`` by ``c > 0`` changes neither the network nor
  the price, so when a BatchNorm after the gated layer cancels a group-wide scale (which lets a
  plain L1 price shrink a whole group for free until it dies) the price can only move units
  relative to the group's largest: it selects units instead of shrinking the group. A unit is
  dead when ``relu(g) == 0``.

Example::

    kind = get_gate_kind("hard_concrete")
    kind.penalty_terms(log_alpha)          # (n,) expected-L0 terms
    kind.sample(log_alpha, u)              # (n,) training multipliers for uniforms u
    kind.scale(log_alpha)                  # (n,) evaluation multipliers
    kind.dead(log_alpha)                   # (n,) bool
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from widthlab.errors import UsageError

L1_PENALTIES = ("strict", "abs")
UNIFORM_EPS = 1e-6  # the uniforms are kept in [eps, 1 - eps]: log u and log(1 - u) finite


@dataclass(frozen=True)
class L1Kind:
    """The deterministic gate ``relu(g)`` under an L1 price.

    Parameters
    ----------
    penalty : {"strict", "abs"}
        Per-unit price ``relu(g)`` (a dead unit stays dead) or ``|g|``.
    """

    penalty: str = "strict"
    name = "l1"
    stochastic = False
    default_init = 1.0  # relu(1) = 1: gating changes no output

    def __post_init__(self) -> None:
        if self.penalty not in L1_PENALTIES:
            raise UsageError(f"unknown gate penalty {self.penalty!r}; choose one of "
                             f"{', '.join(L1_PENALTIES)}")

    def scale(self, g: Tensor) -> Tensor:
        """The multiplier ``relu(g)`` (training and evaluation)."""
        return F.relu(g)

    def sample(self, g: Tensor, u: Tensor | None = None) -> Tensor:
        """The training multiplier: ``relu(g)`` (no noise)."""
        return F.relu(g)

    def penalty_terms(self, g: Tensor) -> Tensor:
        """Per-unit price, not summed: ``relu(g)`` or ``|g|``."""
        return F.relu(g) if self.penalty == "strict" else g.abs()

    def dead(self, g: Tensor) -> Tensor:
        """Bool: ``relu(g) == 0``."""
        return g <= 0

    def closed(self, g: Tensor) -> Tensor:
        """``g`` moved to where the unit is dead (``min(g, 0)``)."""
        return g.clamp(max=0.0)

    def describe(self) -> dict:
        return {"kind": self.name, "penalty": self.penalty}


@dataclass(frozen=True)
class HardConcreteKind:
    """The hard-concrete gate of Louizos et al. (2018) under the expected-L0 price.

    Parameters
    ----------
    beta : float
        Temperature of the concrete distribution (> 0).
    gamma, zeta : float
        The stretch interval, ``gamma < 0`` and ``zeta > 1``.
    init : float
        Default initial ``log_alpha``: ``log(1 - p) - log(p)`` with Louizos et al.'s drop rate
        ``p = 0.2`` (evaluation gate ``0.86``).
    """

    beta: float = 2 / 3
    gamma: float = -0.1
    zeta: float = 1.1
    init: float = math.log(4.0)
    name = "hard_concrete"
    stochastic = True

    def __post_init__(self) -> None:
        if not (self.beta > 0 and self.gamma < 0 and self.zeta > 1
                and all(math.isfinite(v) for v in (self.beta, self.gamma, self.zeta))):
            raise UsageError(f"hard-concrete gates need beta > 0, gamma < 0 and zeta > 1, got "
                             f"beta={self.beta}, gamma={self.gamma}, zeta={self.zeta}; "
                             "Louizos et al. use 2/3, -0.1, 1.1")

    @property
    def default_init(self) -> float:
        return float(self.init)

    def _stretch(self, s: Tensor) -> Tensor:
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def scale(self, log_alpha: Tensor) -> Tensor:
        """Evaluation multiplier ``clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``."""
        return self._stretch(torch.sigmoid(log_alpha))

    def sample(self, log_alpha: Tensor, u: Tensor) -> Tensor:
        """Training multiplier for uniforms ``u`` (same shape, in ``(0, 1)``):
        ``clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) * (zeta - gamma) + gamma,
        0, 1)``."""
        u = u.clamp(UNIFORM_EPS, 1.0 - UNIFORM_EPS)
        return self._stretch(torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / self.beta))

    def penalty_terms(self, log_alpha: Tensor) -> Tensor:
        """Per-unit expected L0, ``P(z != 0) = sigmoid(log_alpha - beta * log(-gamma/zeta))``."""
        return torch.sigmoid(log_alpha - self.beta * math.log(-self.gamma / self.zeta))

    def dead(self, log_alpha: Tensor) -> Tensor:
        """Bool: the evaluation gate is exactly 0."""
        return self.scale(log_alpha) == 0

    def closed(self, log_alpha: Tensor) -> Tensor:
        """``log_alpha`` moved to where the evaluation gate is 0 (one below the boundary)."""
        edge = math.log(-self.gamma / self.zeta)  # logit(-gamma / (zeta - gamma))
        return log_alpha.clamp(max=edge - 1.0)

    def describe(self) -> dict:
        return {"kind": self.name, "beta": self.beta, "gamma": self.gamma, "zeta": self.zeta,
                "init": self.init}


@dataclass(frozen=True)
class RelativeL1Kind:
    """The scale-free L1 gate ``relu(g) / max(relu(g))`` under the L1 price of that multiplier
    (no options). The max runs over the gate's units, so a gate is one group's."""

    name = "relative_l1"
    stochastic = False
    penalty = "relative"
    default_init = 1.0  # every multiplier 1: gating changes no output

    def scale(self, g: Tensor) -> Tensor:
        """The multiplier ``relu(g) / max(relu(g))`` (0 where every ``g <= 0``)."""
        r = F.relu(g)
        return r / r.max().clamp_min(torch.finfo(r.dtype).tiny) if r.numel() else r

    def sample(self, g: Tensor, u: Tensor | None = None) -> Tensor:
        """The training multiplier: :meth:`scale` (no noise)."""
        return self.scale(g)

    def penalty_terms(self, g: Tensor) -> Tensor:
        """Per-unit price, not summed: the multiplier ``relu(g) / max(relu(g))``."""
        return self.scale(g)

    def dead(self, g: Tensor) -> Tensor:
        """Bool: ``relu(g) == 0``."""
        return g <= 0

    def closed(self, g: Tensor) -> Tensor:
        """``g`` moved to where the unit is dead (``min(g, 0)``)."""
        return g.clamp(max=0.0)

    def describe(self) -> dict:
        return {"kind": self.name}


GateKind = L1Kind | HardConcreteKind | RelativeL1Kind
KINDS = {"l1": L1Kind, "hard_concrete": HardConcreteKind, "relative_l1": RelativeL1Kind}


def get_gate_kind(kind: str | GateKind = "l1", **options) -> GateKind:
    """A gate kind from its name (``"l1"``, ``"hard_concrete"``, ``"relative_l1"``;
    ``options`` are its fields, e.g. ``penalty="abs"``) or the kind object itself."""
    if isinstance(kind, (L1Kind, HardConcreteKind, RelativeL1Kind)):
        if options:
            raise UsageError("pass a gate kind's options with its name, not with the object")
        return kind
    if kind not in KINDS:
        raise UsageError(f"unknown gate kind {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        return KINDS[kind](**options)
    except TypeError as e:
        raise UsageError(f"gate kind {kind!r} got options it does not take: {e}") from None


__all__ = ["KINDS", "GateKind", "HardConcreteKind", "L1Kind", "RelativeL1Kind", "get_gate_kind"]
