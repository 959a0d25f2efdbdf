"""What the growth study trains (declarative): one fused engine run per dataset holding every
start width x price x initialisation x seed under one :class:`~widthlab.nn.growth.GrowingGate`
(``init="none"`` models are the plain sparsifier from the same starts), then static networks
of every final width (a Derived step, :mod:`~widthlab.studies.growth.references`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from widthlab.engine import TrainConfig
from widthlab.errors import UsageError
from widthlab.nn import ModelSpec
from widthlab.nn.growth import INITS, GrowingGate
from widthlab.studies.base import Experiment, Profile, seed_list

NAME = "growth"
STATIC = "growth-static"


@dataclass(frozen=True, kw_only=True)
class GrowthProfile(Profile):
    """Starts, prices, initialisations and the growth rule's settings."""

    starts: tuple[int, ...] = field(default=(8, 64, 512, 2048),
                                    metadata={"help": "starting widths"})
    lambdas: tuple[float, ...] = field(default=(1e-4, 1e-3, 1e-2),
                                       metadata={"help": "prices per neuron"})
    inits: tuple[str, ...] = field(default=("gradmax", "random", "none"),
                                   metadata={"help": "new units' init (none: sparsifier)"})
    seeds: tuple[int, ...] | int = field(default=1, metadata={"help": "a count or a list"})
    epochs: int = field(default=4, metadata={"help": "epochs"})
    train_size: int | None = field(default=10_000, metadata={"help": "training samples"})
    gate_lr: float = field(default=1e-2, metadata={"help": "gates' learning rate"})
    every: int = field(default=10, metadata={"help": "steps between growth events"})
    max_new: int = field(default=128, metadata={"help": "most units added per event"})
    grace: int = field(default=40, metadata={"help": "steps a new unit is not charged"})
    min_gate: float = field(default=0.65,
                            metadata={"help": "no growth while the median gate is below"})
    static: bool = field(default=True, metadata={"help": "static networks of final widths"})

    def validate(self) -> None:
        if any(i not in INITS for i in self.inits) or not self.inits:
            raise UsageError(f"unknown init(s) {list(self.inits)}; choose from "
                             f"{', '.join(INITS)}")
        if any(not (v >= 0 and math.isfinite(v)) for v in self.lambdas) or not self.lambdas:
            raise UsageError(f"prices must be finite and >= 0, got {list(self.lambdas)}")
        if any(int(w) != w or w < 1 for w in self.starts) or not self.starts:
            raise UsageError(f"starts must be positive widths, got {list(self.starts)}")


PROFILES = {
    # the tuned rule of scripts/growth_probe.py: 10,000 images, 4 epochs; the two higher
    # prices (at 1e-4 every model ends about 1,000 wide: half the training and 80% of the
    # static references' for no verdict of its own)
    "quick": GrowthProfile(lambdas=(1e-3, 1e-2)),
    # the full profile's 15 epochs and three prices on 10,000 images, one seed
    "standard": GrowthProfile(epochs=15),
    "full": GrowthProfile(seeds=3, epochs=15, train_size=None),
}


def grid(p: GrowthProfile) -> list[tuple[str, float, int, int]]:
    """``(init, lambda, start, seed)`` of every model, in bank order."""
    return [(i, lam, int(w), s) for i in p.inits for lam in p.lambdas for w in p.starts
            for s in seed_list(p.seeds)]


def experiment(p: GrowthProfile, n_train: int | None = None) -> Experiment:
    """The one fused run: every model of :func:`grid` under one GrowingGate."""
    g = grid(p)
    specs = [ModelSpec((w,), seed=s, variant="growing", options=(("init", i), ("lambda", lam)))
             for i, lam, w, s in g]
    cfg = TrainConfig(epochs=p.epochs, train_size=p.train_size, stats_epochs="none",
                      eval_splits=("test",))
    steps = p.epochs * math.ceil((p.train_size or 55_000) / cfg.batch_size)
    until = max(steps - p.grace, 1)  # the final width then holds only units that were charged

    def gates() -> GrowingGate:
        return GrowingGate([x[1] for x in g], init=[x[0] for x in g], lr=p.gate_lr,
                           every=p.every, max_new=p.max_new, max_frac=1.0, grace=p.grace,
                           min_gate=p.min_gate, until=until)

    return Experiment("grow", specs, cfg, modifiers=(gates,))
