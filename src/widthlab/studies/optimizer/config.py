"""What the optimizer study trains: one engine run per optimizer, every variant and replicate
fused in it, every minibatch loss recorded (declarative only).

Variants (the models' ``variant``): ``static`` and one ``flexible-lr<x0 lr>`` per cut-off
learning rate (a :class:`~widthlab.nn.flexible.FlexibleCutoff` starting at ``x0_start``).
Experiments are named by the optimizer (run labels ``optimizer:adam`` ...). The bank's one
cut-off gives every model its own ``x0`` learning rate; a static model's cut-off sits at
:data:`STATIC_X0`, lr 0, no penalty, where its scaler is exactly 1.0 in float32 and its
gradient exactly 0: the model trains as a plain static network would.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from widthlab.engine import TrainConfig
from widthlab.errors import UsageError
from widthlab.nn import ModelSpec
from widthlab.nn.flexible import FlexibleCutoff
from widthlab.studies.base import Experiment, Profile

NAME = "optimizer"
#: x0 of the static models' cut-off: sigmoid(k (x0 - i)) rounds to 1.0 for x0 - i > 17 / k
STATIC_X0 = 1e4
# learning rates: Adam's journal default, AdaMax's PyTorch default, a usual SGD+momentum one
OPTIMIZERS = {"adam": {"optimizer": "adam", "lr": 1e-3},
              "adamax": {"optimizer": "adamax", "lr": 2e-3},
              "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}}


@dataclass(frozen=True, kw_only=True)
class OptimizerProfile(Profile):
    """Replicates and training length of every optimizer and variant."""

    replicates: int = field(metadata={"help": "models per optimizer and variant (seeds "
                                              "0..N-1)"})
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
        if self.width > STATIC_X0 / 2:
            raise UsageError(f"width must be at most {STATIC_X0 / 2:g}, got {self.width}")


PROFILES = {
    # 47 s per dataset on one thread beside another job: 10,000 training images reach a low
    # loss within 15 epochs (1,185 batches per model); 3 replicates of 64 neurons. The AdaMax
    # and x0-lr spike counts are a few per 1,000 batches: their verdicts move with any budget
    "quick": OptimizerProfile(replicates=3, epochs=15, train_size=10_000, width=64,
                              x0_start=64.0),
    # past the journal's 30 epochs, where the noise showed: 60 epochs, 5 replicates of 256
    "standard": OptimizerProfile(replicates=5, epochs=60, train_size=10_000),
    "full": OptimizerProfile(replicates=30, epochs=120, train_size=None),
}


def variants(prof: OptimizerProfile) -> list[str]:
    """``static`` and one ``flexible-lr<x0 lr>`` per cut-off learning rate."""
    return ["static"] + [f"flexible-lr{lr:g}" for lr in prof.x0_lrs]


def experiments(prof: OptimizerProfile) -> list[Experiment]:
    """One experiment per optimizer: every variant x replicate in one bank, under one cut-off
    (static models: at :data:`STATIC_X0`, lr 0, no penalty)."""
    out = []
    for opt in prof.optimizers:
        specs, x0, lam, lrs = [], [], [], []
        for i, var in enumerate(variants(prof)):
            static = var == "static"
            for s in range(prof.replicates):
                specs.append(ModelSpec((prof.width,), seed=s, variant=var))
                x0.append(STATIC_X0 if static else prof.x0_start)
                lam.append(0.0 if static else prof.penalty)
                lrs.append(0.0 if static else prof.x0_lrs[i - 1])
        cfg = TrainConfig(epochs=prof.epochs, train_size=prof.train_size,
                          record_batch_loss=True, stats_epochs="none",
                          eval_splits=(),  # batch losses only
                          **OPTIMIZERS[opt])
        cutoff = functools.partial(FlexibleCutoff, x0=x0, penalty=lam, lr=lrs)
        out.append(Experiment(opt, specs, cfg, modifiers=(cutoff,)))
    return out
