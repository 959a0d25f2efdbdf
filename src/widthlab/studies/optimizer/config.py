"""What the optimizer study trains: one engine run per optimizer x variant, every replicate
fused in it, every minibatch loss recorded (declarative only).

Variants: ``static`` and one ``flexible-lr<x0 lr>`` per cut-off learning rate (a
:class:`~widthlab.nn.flexible.FlexibleCutoff` starting at ``x0_start``). Experiments are named
``<optimizer>-<variant>`` (run labels ``optimizer:adam-static`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from widthlab.engine import TrainConfig
from widthlab.errors import UsageError
from widthlab.nn import ModelSpec
from widthlab.nn.flexible import FlexibleCutoff
from widthlab.studies.base import Experiment, Profile

NAME = "optimizer"
# learning rates: Adam's journal default, AdaMax's PyTorch default, a usual SGD+momentum one
OPTIMIZERS = {"adam": {"optimizer": "adam", "lr": 1e-3},
              "adamax": {"optimizer": "adamax", "lr": 2e-3},
              "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}}


@dataclass(frozen=True, kw_only=True)
class OptimizerProfile(Profile):
    """Replicates and training length of every optimizer x variant run."""

    replicates: int = field(metadata={"help": "models per run (seeds 0..N-1)"})
    epochs: int = field(metadata={"help": "epochs of every run"})
    train_size: int | None = field(metadata={"help": "first N training images (all: none)"})
    width: int = field(default=256, metadata={"help": "hidden width"})
    x0_start: float = field(default=128.0, metadata={"help": "flexible layers' starting x0"})
    x0_lrs: tuple[float, ...] = field(default=(1.0, 0.1),
                                      metadata={"help": "the flexible variants' x0 lrs"})
    penalty: float = field(default=1e-6, metadata={"help": "flexible layers' size penalty"})
    optimizers: tuple[str, ...] = field(default=tuple(OPTIMIZERS),
                                        metadata={"help": "subset of adam, adamax, sgd"})

    def validate(self) -> None:
        unknown = sorted(set(self.optimizers) - set(OPTIMIZERS))
        if unknown:
            raise UsageError(f"unknown optimizer(s) {unknown}; choose from "
                             f"{', '.join(OPTIMIZERS)}")
        if self.replicates < 1 or self.epochs < 1 or self.width < 1:
            raise UsageError("replicates, epochs and width must be >= 1")


PROFILES = {
    # under 4 minutes for both datasets here: 10,000 training images reach a low loss quickly
    "quick": OptimizerProfile(replicates=5, epochs=25, train_size=10_000),
    "full": OptimizerProfile(replicates=30, epochs=120, train_size=None),
}


def variants(prof: OptimizerProfile) -> list[str]:
    """``static`` and one ``flexible-lr<x0 lr>`` per cut-off learning rate."""
    return ["static"] + [f"flexible-lr{lr:g}" for lr in prof.x0_lrs]


def _flexible(prof: OptimizerProfile, x0_lr: float):
    def make() -> FlexibleCutoff:
        return FlexibleCutoff(penalty=prof.penalty, x0=prof.x0_start, lr=x0_lr)

    return make


def experiments(prof: OptimizerProfile) -> list[Experiment]:
    """One experiment per optimizer x variant."""
    out = []
    for opt in prof.optimizers:
        for i, var in enumerate(variants(prof)):
            specs = [ModelSpec((prof.width,), seed=s, variant=var)
                     for s in range(prof.replicates)]
            mods = () if var == "static" else (_flexible(prof, prof.x0_lrs[i - 1]),)
            cfg = TrainConfig(epochs=prof.epochs, train_size=prof.train_size,
                              record_batch_loss=True, stats_epochs="none",
                              eval_splits=(),  # batch losses only
                              **OPTIMIZERS[opt])
            out.append(Experiment(f"{opt}-{var}", specs, cfg, modifiers=mods))
    return out
