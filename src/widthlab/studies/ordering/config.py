"""What the ordering-stability study trains: its profiles and experiments (declarative only).

- ``stability`` (run label ``ordering:stability``): one-hidden-layer MLPs of a few widths and
  seeds in one engine run; after *every* epoch the
  :class:`~widthlab.metrics.importance_hook.ImportanceHook` stores every ordering's scores (the
  exact importance on the validation split and every proxy), no top-k cuts;
- ``variant-<name>`` (``ordering:variant-<name>``, one engine run per name of
  :data:`VARIANTS`): the layer such an ordering would drive, the journal's first remedy for the
  width plateau, the sorted flexible layer
  (:class:`widthlab.nn.sorted_flexible.SortedFlexibleCutoff`, the cut-off over each neuron's
  rank), against the plain flexible layer and the sparsifier, all starting at the same width
  with the same price per neuron (one model per penalty and seed).

Example::

    from widthlab.studies.ordering import config

    steps = [config.stability_experiment(config.PROFILES["quick"]),
             *(config.variant_experiment(v, config.PROFILES["quick"])
               for v in config.VARIANTS)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from widthlab.engine import TrainConfig
from widthlab.errors import UsageError
from widthlab.nn import ModelSpec
from widthlab.nn.flexible import FlexibleCutoff
from widthlab.nn.gated import SparsifierGate
from widthlab.nn.modifiers import Modifier
from widthlab.nn.sorted_flexible import SortedFlexibleCutoff
from widthlab.studies._importance_sweep import SweepProfile, sweep_experiment
from widthlab.studies.base import Experiment, seed_list

NAME = "ordering"
STABILITY = "stability"
#: The layers compared at matched width: the plain flexible cut-off (over the neuron index), the
#: sorted one (over the rank by activation std, or by the Taylor score), and the sparsifier.
VARIANTS = ("flexible", "sorted-act_std", "sorted-taylor", "sparsifier")
VARIANT_PREFIX = "variant-"


@dataclass(frozen=True, kw_only=True)
class OrderingProfile(SweepProfile):
    """The stability sweep (the fields of the importance study's sweep) and the sorted-layer
    comparison: every variant starts at ``sorted_width`` neurons (the flexible cut-off at
    ``x0 = width``, the gates at 1), one model per penalty and seed; the flexible penalty and
    the sparsifier's L1 weight are the same price per neuron."""

    sorted_width: int = field(default=256, metadata={
        "help": "start width of every sorted-layer comparison model"})
    penalties: tuple[float, ...] = field(default=(1e-4, 1e-3, 1e-2), metadata={
        "help": "prices per neuron of the sorted-layer comparison"})
    sorted_seeds: tuple[int, ...] | int = field(default=1, metadata={
        "help": "seeds of the sorted-layer comparison: a count or a list"})
    sorted_epochs: int = field(default=4, metadata={
        "help": "epochs of the sorted-layer comparison"})
    sorted_train_size: int | None = field(default=None, metadata={
        "help": "first N training images of the sorted-layer comparison (all: none)"})
    every: int = field(default=50, metadata={"help": "steps between re-sorts of the neurons"})
    decay: float = field(default=0.5, metadata={
        "help": "moving-average decay of the window scores the sort uses"})
    gate_lr: float = field(default=1e-2, metadata={"help": "the sparsifier gates' lr"})
    variants: tuple[str, ...] = field(default=VARIANTS, metadata={
        "help": f"layers compared: {', '.join(VARIANTS)}"})

    def validate(self) -> None:
        super().validate()
        if self.epochs < 2:
            raise UsageError("the ordering study compares consecutive epochs: give epochs >= 2")
        bad = sorted(set(self.variants) - set(VARIANTS))
        if bad:
            raise UsageError(f"unknown variant(s) {', '.join(bad)}; choose from "
                             f"{', '.join(VARIANTS)}")
        if self.sorted_width < 1 or self.sorted_epochs < 1 or not seed_list(self.sorted_seeds):
            raise UsageError("the sorted-layer comparison needs sorted_width >= 1, "
                             "sorted_epochs >= 1 and at least one seed")
        if not self.penalties or any(not (v >= 0 and math.isfinite(v)) for v in self.penalties):
            raise UsageError(f"penalties must be finite and >= 0, got {list(self.penalties)}; "
                             "e.g. 1e-4,1e-3,1e-2")


PROFILES = {
    # 45 s per dataset on one thread beside another job: 6 records per model, one every 79
    # steps, scored on 1,500 validation images; the sorted-layer comparison: 4 runs of 3 models,
    # 316 steps each
    "quick": OrderingProfile(widths=(128, 512), seeds=2, epochs=6, train_size=10_000,
                             max_samples=1500,
                             sorted_width=256, penalties=(1e-4, 1e-3, 1e-2), sorted_seeds=1,
                             sorted_epochs=4, sorted_train_size=10_000),
    "standard": OrderingProfile(widths=(64, 256, 1024), seeds=2, epochs=15, train_size=20_000,
                                sorted_width=500, penalties=(1e-5, 1e-4, 1e-3, 1e-2),
                                sorted_seeds=1, sorted_epochs=15, sorted_train_size=20_000),
    "full": OrderingProfile(widths=(64, 256, 1024), seeds=3, epochs=30, sorted_width=500,
                            penalties=(1e-5, 1e-4, 1e-3, 1e-2), sorted_seeds=3,
                            sorted_epochs=15, sorted_train_size=None),
}


def stability_experiment(p: OrderingProfile) -> Experiment:
    """The stability run: every ordering scored after every epoch, no top-k cuts."""
    return sweep_experiment(STABILITY, p, study=NAME, record="all", topk="none")


def variant_modifier(variant: str, p: OrderingProfile,
                     penalties: Sequence[float]) -> Callable[[], Modifier]:
    """A factory of the modifier of one variant (one penalty per model)."""
    lams = [float(v) for v in penalties]
    if variant == "flexible":
        return lambda: FlexibleCutoff(penalty=lams, k=1.0, lr=1.0)
    if variant.startswith("sorted-"):
        score = variant.split("-", 1)[1]
        return lambda: SortedFlexibleCutoff(penalty=lams, k=1.0, lr=1.0, score=score,
                                            every=p.every, decay=p.decay)
    if variant == "sparsifier":
        return lambda: SparsifierGate(lams, penalty="strict", lr=p.gate_lr)
    raise UsageError(f"unknown variant {variant!r}; choose {', '.join(VARIANTS)}")


def variant_experiment(variant: str, p: OrderingProfile) -> Experiment:
    """One variant's engine run: ``sorted_width`` neurons, one model per penalty x seed."""
    specs = [ModelSpec((int(p.sorted_width),), seed=sd, variant=variant,
                       options=(("penalty", float(lam)),))
             for lam in p.penalties for sd in seed_list(p.sorted_seeds)]
    cfg = TrainConfig(epochs=p.sorted_epochs, batch_size=p.batch_size, lr=p.lr,
                      train_size=p.sorted_train_size, stats_epochs="none",
                      eval_splits=("val", "test"))
    make = variant_modifier(variant, p, [dict(sp.options)["penalty"] for sp in specs])
    return Experiment(VARIANT_PREFIX + variant, specs, cfg, modifiers=(make,))
