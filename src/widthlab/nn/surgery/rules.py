"""When a gated unit is removed: the journal's rule and Smallify's.

* ``"dead"`` (the journal's sparsifier): a unit goes when its gate is exactly dead,
  ``relu(g) == 0`` (for a hard-concrete gate: its evaluation gate is exactly 0). It then
  contributes exact zeros, so removing it changes no output and
  training continues exactly as if it were masked.
* ``"smallify"`` (Leclerc et al. 2018, *Smallify: learning network size while training*): a
  gate that oscillates around zero under the L1 price is taken to be unneeded. Every
  training-mode forward updates, per unit, an exponential moving average ``m`` of ``sign(g)``
  and of its variance ``v = EMA((sign(g) - m)^2)`` (momentum ``UnitGate.flip_momentum``); a
  unit goes when ``v > threshold`` (or when it is exactly dead). A gate that keeps its sign
  has ``v -> 0``; one that flips every step has ``v -> 1``. Unlike ``"dead"`` this removes
  gates that are small but not 0, so the outputs move by their small contribution.

Example::

    shrink_(model, optimizer, rule="smallify")                      # threshold 0.5
    shrink_(model, optimizer, rule=SignFlipRule(threshold=0.2))
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from widthlab.errors import UsageError
from widthlab.nn.surgery.gates import UnitGate


@dataclass(frozen=True)
class DeadRule:
    """The journal's rule: a unit is dead when its (evaluation) gate is exactly 0:
    ``relu(g) == 0``, or a hard-concrete gate's ``clamp(sigmoid(log_alpha) * (zeta - gamma)
    + gamma, 0, 1) == 0``."""

    name: str = "dead"

    def dead(self, gate: UnitGate) -> Tensor:
        """Bool ``(n,)``: which units to remove."""
        return gate.kind.dead(gate.gate.detach())


@dataclass(frozen=True)
class SignFlipRule:
    """Smallify's rule: remove a unit when the running variance of ``sign(g)`` exceeds
    ``threshold`` (in ``(0, 1]``), or when its gate is exactly dead."""

    threshold: float = 0.5
    name: str = "smallify"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise UsageError(f"smallify threshold must be in (0, 1], got {self.threshold}")

    def dead(self, gate: UnitGate) -> Tensor:
        """Bool ``(n,)``: which units to remove."""
        if gate.kind.name != "l1":
            raise UsageError(f"the smallify rule reads the sign flips of L1 gates; gate "
                             f"{gate.key!r} is {gate.kind.name!r}: use rule='dead'")
        return (gate.gate.detach() <= 0) | (gate.flip_var > self.threshold)


RULES = {"dead": DeadRule, "smallify": SignFlipRule}


def get_rule(rule: str | DeadRule | SignFlipRule) -> DeadRule | SignFlipRule:
    """A rule object from its name (``"dead"``, ``"smallify"``) or the object itself."""
    if isinstance(rule, (DeadRule, SignFlipRule)):
        return rule
    if rule not in RULES:
        raise UsageError(f"unknown removal rule {rule!r}; choose one of {', '.join(RULES)}")
    return RULES[rule]()
