"""What the variance study trains: its profiles and its one experiment (declarative only).

One engine run per dataset (label ``variance``, run id ``variance-<dataset>-<key>``) trains
every width x seed on one minibatch stream and streams the per-neuron statistics over the
training split after the last epoch.

Example::

    from widthlab.studies.variance.config import PROFILES, sweep

    exp = sweep(PROFILES["quick"].replace(widths=(16, 64), seeds=2))
    len(exp.specs), exp.config.epochs   # 4, 2
"""

from __future__ import annotations

from dataclasses import dataclass, field

from widthlab.engine import TrainConfig
from widthlab.engine.trainer import PRECISIONS
from widthlab.errors import UsageError
from widthlab.nn.widths import sqrt2_widths
from widthlab.studies.base import Experiment, Profile, seed_list, sweep_specs

NAME = "variance"
EXPERIMENT = "sweep"


@dataclass(frozen=True, kw_only=True)
class VarianceProfile(Profile):
    """The width sweep of a profile (per dataset)."""

    widths: tuple[int, ...] = field(
        metadata={"help": "hidden widths: LO:HI (the journal's sqrt(2) steps) or a list"})
    seeds: tuple[int, ...] | int = field(
        default=3, metadata={"help": "a count (3 = seeds 0, 1, 2) or a list (0,4,7)"})
    epochs: int = field(default=2, metadata={"help": "training epochs"})
    batch_size: int = field(default=128, metadata={"help": "minibatch size"})
    train_size: int | None = field(
        default=None, metadata={"help": "first N training images (all: none)"})
    precision: str = field(default="fp32", metadata={"help": "fp32 or bf16"})

    def validate(self) -> None:
        if not self.widths or any(int(w) != w or w < 1 for w in self.widths):
            raise UsageError(f"widths must be positive whole numbers, got {list(self.widths)}; "
                             "e.g. --widths 16:1448 or --widths 16,64,256")
        if self.epochs < 1 or not seed_list(self.seeds):
            raise UsageError("the variance study needs epochs >= 1 and at least one seed; "
                             "e.g. --epochs 2 --seeds 3")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{self.precision!r}")


PROFILES = {
    # 50 s per dataset on one thread beside another job: the journal's grid up to 1024 (both
    # quick plateaus are below 400), 2 seeds (the verdicts use the means over seeds; two give
    # the 95% intervals), 2 epochs of 20,000 images
    "quick": VarianceProfile(widths=tuple(sqrt2_widths(16, 1024)), seeds=2, epochs=2,
                             train_size=20_000),
    # about 5 minutes per dataset on a 2-core CPU: the journal's 15 epochs of its first MNIST
    # runs (the total std's logarithmic trend appeared only after training longer), the grid
    # up to 2048 (FashionMNIST's plateau was at about 1024), 2 seeds
    "standard": VarianceProfile(widths=tuple(sqrt2_widths(16, 2048)), seeds=2, epochs=15),
    # the journal: int(2**(i/2)) for i = 8..27, 11 replicates, 30 epochs
    "full": VarianceProfile(widths=tuple(sqrt2_widths(16, 11585)), seeds=11, epochs=30),
}


def sweep(p: VarianceProfile) -> Experiment:
    """The study's engine run: one model per width x seed, neuron statistics over the
    training split after the last epoch, validation and test accuracy every epoch."""
    specs = sweep_specs(p.widths, p.seeds, NAME)
    cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, train_size=p.train_size,
                      precision=p.precision, stats_epochs="last", stats_split="train",
                      eval_splits=("val", "test"))
    return Experiment(EXPERIMENT, specs, cfg, label=NAME)
