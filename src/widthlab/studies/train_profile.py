"""The settings of ``widthlab train``: a width sweep as a profile (one typed, documented field
per option, the same mechanism as a study's profile).

``widthlab train`` generates one option per field (the field's ``help`` metadata is the option's
help; ``choices`` make a choice option, ``flag`` an on/off flag) and parses the values with the
same parser as ``widthlab study``. The Python API builds the same object::

    from widthlab.studies.train_profile import TrainProfile

    p = TrainProfile(widths=(16, 64), seeds=2, epochs=1)
    specs, cfg = p.specs(), p.config("mnist")
    len(specs), cfg.epochs   # 4, 1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from widthlab.engine import TrainConfig
from widthlab.engine.optim import OPTIMIZERS  # the bank optimizer's kinds, listed once
from widthlab.engine.trainer import PRECISIONS
from widthlab.errors import UsageError
from widthlab.nn import ModelSpec
from widthlab.nn.widths import sqrt2_widths
from widthlab.studies.base import Profile, seed_list

STATS_EPOCHS = ("last", "all", "none")


@dataclass(frozen=True, kw_only=True)
class TrainProfile(Profile):
    """One-hidden-layer MLPs of every width x seed, trained together on one minibatch stream."""

    widths: tuple[int, ...] = field(
        default=tuple(sqrt2_widths(16, 1448)),
        metadata={"help": "LO:HI in sqrt(2) steps (the journal's grid) or a list such as "
                          "16,64,256", "show": "16:1448"})
    seeds: tuple[int, ...] | int = field(
        default=3, metadata={"help": "a count (3 = seeds 0,1,2) or a list (0,4,7)"})
    epochs: int = field(default=1, metadata={"help": "training epochs"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    batch_size: int = field(default=128, metadata={"help": "minibatch size"})
    weight_decay: float = field(
        default=0.0, metadata={"help": "L2 penalty (Adam weight_decay) on every model"})
    optimizer: str = field(default="adam", metadata={"help": "optimizer",
                                                      "choices": OPTIMIZERS})
    train_size: int | None = field(
        default=None, metadata={"help": "use only the first N training images (quick runs)"})
    data_seed: int = field(
        default=0, metadata={"help": "seed of the train/validation split and of the minibatch "
                                     "order"})
    stats_epochs: str = field(
        default="last", metadata={"help": "epochs after which per-neuron statistics are "
                                          "streamed over the train split",
                                  "choices": STATS_EPOCHS})
    preact_cov: bool = field(
        default=False, metadata={"help": "also store pre-activation covariances (PCA)",
                                 "flag": True})
    precision: str = field(default="fp32", metadata={
        "help": "bf16 autocast keeps fp32 master weights", "choices": tuple(PRECISIONS)})
    keep_optimizer: bool = field(default=False, metadata={
        "help": "keep the optimizer state in the finished run's checkpoint (default: weights "
                "only, a third of the size)", "flag": True})

    def validate(self) -> None:
        if not self.widths or any(int(w) != w or w < 1 for w in self.widths):
            raise UsageError(f"--widths must be positive whole numbers, got "
                             f"{list(self.widths)}; e.g. --widths 16:1448 or 16,64,256")
        seeds = seed_list(self.seeds)
        if not seeds or any(s < 0 for s in seeds):
            raise UsageError(f"--seeds must be a count >= 1 or a list of seeds >= 0, got "
                             f"{self.seeds!r}; e.g. --seeds 3 or --seeds 0,4,7")
        _once(list(self.widths), "widths")
        _once(seeds, "seeds")
        for name, low, fix in (("epochs", 1, "1 or more epochs"),
                               ("batch_size", 1, "1 or more"),
                               ("data_seed", 0, "0 or a larger seed")):
            if getattr(self, name) < low:
                raise UsageError(f"--{name.replace('_', '-')} must be >= {low}, got "
                                 f"{getattr(self, name)}; give {fix}")
        if self.train_size is not None and self.train_size < 1:
            raise UsageError(f"--train-size must be >= 1 (or none for all), got "
                             f"{self.train_size}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"--{name.replace('_', '-')} must be a finite number >= 0, "
                                 f"got {value}; e.g. --lr 1e-3 --weight-decay 0")
        for name, allowed in (("optimizer", OPTIMIZERS), ("stats_epochs", STATS_EPOCHS),
                              ("precision", tuple(PRECISIONS))):
            if getattr(self, name) not in allowed:
                raise UsageError(f"--{name.replace('_', '-')} must be one of "
                                 f"{', '.join(allowed)}, got {getattr(self, name)!r}")

    def specs(self) -> list[ModelSpec]:
        """One model per width x seed (widths outer), each with the profile's weight decay."""
        return [ModelSpec((int(w),), seed=s, weight_decay=self.weight_decay)
                for w in self.widths for s in seed_list(self.seeds)]

    def config(self, dataset: str, device: str = "auto") -> TrainConfig:
        """The engine's TrainConfig of this profile on ``dataset``."""
        return TrainConfig(dataset=dataset, epochs=self.epochs, lr=self.lr,
                           batch_size=self.batch_size, optimizer=self.optimizer,
                           train_size=self.train_size, data_seed=self.data_seed,
                           stats_epochs=self.stats_epochs, preact_cov=self.preact_cov,
                           device=device, precision=self.precision,
                           keep_optimizer=self.keep_optimizer)


def _once(values: list[int], what: str) -> None:
    """A UsageError naming the values listed more than once."""
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise UsageError(f"--{what} lists {', '.join(map(str, twice))} more than once (the same "
                         f"model would train twice); give each of the {what} once")
