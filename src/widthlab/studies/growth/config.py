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
from widthlab.nn.growth import INITS, BenefitRule, GrowingGate
from widthlab.studies.base import Experiment, Profile, seed_list

# relative_l1 takes its max over a gate's tensor, which in a bank holds every model's units
GATE_KINDS = ("l1", "hard_concrete")

NAME = "growth"
STATIC = "growth-static"
RULES = ("benefit", "candidate")


@dataclass(frozen=True, kw_only=True)
class GrowthProfile(Profile):
    """Starts, prices, initialisations and the growth rule's settings."""

    starts: tuple[int, ...] = field(default=(8, 64, 512, 2048),
                                    metadata={"help": "starting widths"})
    prices: tuple[float, ...] = field(default=(1e-4, 1e-3, 1e-2), metadata={
        "help": "prices per neuron (--lambdas: deprecated spelling)",
        "aliases": ("lambdas",)})
    inits: tuple[str, ...] = field(default=("gradmax", "random", "none"),
                                   metadata={"help": "new units' init (none: sparsifier)"})
    seeds: tuple[int, ...] | int = field(default=1, metadata={"help": "a count or a list"})
    epochs: int = field(default=4, metadata={"help": "epochs"})
    train_size: int | None = field(default=10_000, metadata={"help": "training samples"})
    gate_lr: float = field(default=1e-2, metadata={"help": "gates' learning rate"})
    rule: str = field(default="benefit",
                      metadata={"help": "growth rule: benefit (one test for growth and "
                                        "removal) or candidate (per-candidate price, gates "
                                        "remove)"})
    every: int = field(default=10, metadata={"help": "steps between growth events"})
    window: int = field(default=16, metadata={"help": "recent batches each event measures"})
    max_new: int = field(default=512, metadata={"help": "most units added per event"})
    max_frac: float = field(default=3.0,
                            metadata={"help": "most units added per event, times the width"})
    grace: int = field(default=100, metadata={"help": "steps a new unit is not measured "
                                                      "(benefit) or not charged (candidate)"})
    warmup: int = field(default=30, metadata={"help": "benefit rule: first decision step"})
    grow_until: int = field(default=80, metadata={"help": "benefit rule: last growth step"})
    settle: int = field(default=20,
                        metadata={"help": "benefit rule: no removal in the last steps"})
    refit: bool = field(default=True, metadata={
        "help": "benefit rule: a unit's removal cost counts only the part of its activation "
                "the other units cannot refit (BenefitRule.refit)"})
    ridge: float = field(default=0.03, metadata={"help": "benefit rule: the refit's ridge"})
    alpha_remove: float = field(default=6.0, metadata={
        "help": "benefit rule: removal step sizing, larger is smaller steps (BenefitRule)"})
    max_remove: float = field(default=0.4, metadata={
        "help": "benefit rule: most of the mature units removed per event"})
    min_gate: float = field(default=0.65, metadata={
        "help": "candidate rule: no growth while the median gate is below"})
    static: bool = field(default=True, metadata={"help": "static networks of final widths"})
    gate_kind: str = field(default="l1", metadata={
        "help": "the gates: l1 (relu(g), L1 price) or hard_concrete (L0 gates)"})

    def validate(self) -> None:
        if self.gate_kind not in GATE_KINDS:
            raise UsageError(f"unknown gate_kind {self.gate_kind!r}; choose one of "
                             f"{', '.join(GATE_KINDS)}")
        if any(i not in INITS for i in self.inits) or not self.inits:
            raise UsageError(f"unknown init(s) {list(self.inits)}; choose from "
                             f"{', '.join(INITS)}")
        if any(not (v >= 0 and math.isfinite(v)) for v in self.prices) or not self.prices:
            raise UsageError(f"prices must be finite and >= 0, got {list(self.prices)}")
        if any(int(w) != w or w < 1 for w in self.starts) or not self.starts:
            raise UsageError(f"starts must be positive widths, got {list(self.starts)}")
        if self.rule not in RULES:
            raise UsageError(f"unknown growth rule {self.rule!r}; choose from "
                             f"{', '.join(RULES)}")


PROFILES = {
    # the benefit rule as tuned with scripts/growth_probe.py: 10,000 images, 4 epochs; every
    # verdict reads the gradient-aligned models and the sparsifier (init none): the random
    # initialisation (a third of the training) is compared in the standard and full profiles
    "quick": GrowthProfile(inits=("gradmax", "none")),
    # the full profile's 15 epochs and three prices on 10,000 images, one seed
    "standard": GrowthProfile(epochs=15),
    "full": GrowthProfile(seeds=3, epochs=15, train_size=None),
}


def grid(p: GrowthProfile) -> list[tuple[str, float, int, int]]:
    """``(init, price, start, seed)`` of every model, in bank order."""
    return [(i, lam, int(w), s) for i in p.inits for lam in p.prices for w in p.starts
            for s in seed_list(p.seeds)]


def experiment(p: GrowthProfile, n_train: int | None = None) -> Experiment:
    """The one fused run: every model of :func:`grid` under one GrowingGate."""
    g = grid(p)
    specs = [ModelSpec((w,), seed=s, variant="growing", options=(("init", i), ("price", lam)))
             for i, lam, w, s in g]
    benefit = p.rule == "benefit"
    cfg = TrainConfig(epochs=p.epochs, train_size=p.train_size, stats_epochs="none",
                      # the analyses read the last epoch's test accuracy only
                      eval_splits=("test",), eval_epochs="last",
                      # the benefit rule masks units: remove them at its cadence
                      shrink_every=p.every if benefit else "epoch")
    steps = p.epochs * math.ceil((p.train_size or 55_000) / cfg.batch_size)

    def gates() -> GrowingGate:
        return growth_gate(p, g, steps)

    return Experiment("grow", specs, cfg, modifiers=(gates,))


def growth_gate(p: GrowthProfile, g: list[tuple[str, float, int, int]], steps: int,
                **rule: object) -> GrowingGate:
    """The study's GrowingGate for the models ``g`` (:func:`grid`) of a run of ``steps``
    steps: the benefit rule (growing models' gates unpenalised, the price acting through the
    rule; the sparsifier models, init none, under price * sum(relu(g))) or the candidate
    rule (every gate charged price, no growth in the last ``grace`` steps). ``rule``:
    :class:`~widthlab.nn.growth.BenefitRule` settings other than its defaults (probes)."""
    inits, lams = [x[0] for x in g], [x[1] for x in g]
    common = dict(init=inits, lr=p.gate_lr, every=p.every, window=p.window,
                  max_new=p.max_new, max_frac=p.max_frac, grace=p.grace, price=lams)
    if p.gate_kind != "l1":  # an L1 gate's description (its runs' ids) as before
        common["gate_kind"] = p.gate_kind
    if p.rule == "benefit":
        settings = BenefitRule(**{"warmup": p.warmup, "settle": p.settle, "refit": p.refit,
                                  "ridge": p.ridge, "alpha_remove": p.alpha_remove,
                                  "max_remove": p.max_remove, **rule})
        l1 = [lam if i == "none" else 0.0 for i, lam in zip(inits, lams, strict=True)]
        return GrowingGate(l1, until=p.grow_until, rule=settings, **common)
    return GrowingGate(lams, min_gate=p.min_gate, until=max(steps - p.grace, 1), **common)
