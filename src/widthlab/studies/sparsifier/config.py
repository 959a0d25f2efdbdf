"""What the sparsifier study trains: its profiles and its experiments (declarative only).

- ``lambda-sweep`` (run label ``sparsifier:lambda-sweep``): the journal's experiment, start
  width 500, one model per price (and seed), all in one engine run;
- ``start-width`` (``sparsifier:start-width``): the journal's open question, "does the
  starting size influence the size after convergence?": several start widths at fixed
  prices, one engine run;
- ``static`` (label ``sparsifier-static``, not reported on its own): a static network of each
  final width and seed of both experiments, trained the same way, one engine run
  (:mod:`~widthlab.studies.sparsifier.references`: it needs the finished experiments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from widthlab.engine import TrainConfig
from widthlab.errors import UsageError
from widthlab.nn import ModelSpec
from widthlab.nn.gated import SparsifierGate
from widthlab.studies.base import Experiment, Profile, seed_list

# relative_l1 takes its max over a gate's tensor, which in a bank holds every model's units
GATE_KINDS = ("l1", "hard_concrete")

NAME = "sparsifier"
STATIC = "sparsifier-static"  # label of the reference runs
EXPERIMENTS = ("lambda-sweep", "start-width")
# training settings a static reference shares with the sparsifier it is compared with
SAME_TRAINING = ("epochs", "batch_size", "lr", "optimizer", "momentum", "data_seed", "val_size",
                 "train_size", "precision")


@dataclass(frozen=True, kw_only=True)
class SparsifierProfile(Profile):
    """What a profile trains (per dataset)."""

    prices: tuple[float, ...] = field(metadata={
        "help": "the sweep's prices per neuron (start 500; --lambdas: deprecated spelling)",
        "aliases": ("lambdas",)})
    start: int = field(default=500, metadata={"help": "start width of the lambda sweep"})
    starts: tuple[int, ...] = field(default=(250, 500, 1000, 2000),
                                    metadata={"help": "start widths of the start-width run"})
    start_prices: tuple[float, ...] = field(default=(1e-3,), metadata={
        "help": "prices of the start-width run (--start-lambdas: deprecated spelling)",
        "aliases": ("start_lambdas",)})
    seeds: tuple[int, ...] | int = field(default=1, metadata={"help": "a count or a list"})
    epochs: int = field(default=4, metadata={"help": "epochs of every run"})
    train_size: int | None = field(default=None,
                                   metadata={"help": "first N training images (all: none)"})
    batch_size: int = field(default=128, metadata={"help": "minibatch size"})
    gate_lr: float | None = field(default=None,
                                  metadata={"help": "gates' learning rate (none: 1e-3)"})
    penalty: str = field(default="strict", metadata={"help": "strict or relu"})
    gate_kind: str = field(default="l1", metadata={
        "help": "l1 (relu(g), L1 price) or hard_concrete (L0 gates, expected-L0 price)"})
    static: bool = field(default=True,
                         metadata={"help": "train static networks of the final widths"})

    def validate(self) -> None:
        lams = (*self.prices, *self.start_prices)
        bad = [v for v in lams if not (v >= 0 and math.isfinite(v))]
        if bad:
            raise UsageError(f"prices must be finite and >= 0, got {bad}; e.g. 0,1e-4,1e-3")
        if any(int(w) != w or w < 1 for w in (*self.starts, self.start)):
            raise UsageError(f"start widths must be positive whole numbers, got "
                             f"{list(self.starts)}; e.g. 250,500,1000")
        if self.gate_kind not in GATE_KINDS:
            raise UsageError(f"unknown gate_kind {self.gate_kind!r}; choose one of "
                             f"{', '.join(GATE_KINDS)}")
        if self.epochs < 1 or not seed_list(self.seeds):
            raise UsageError("the sparsifier study needs epochs >= 1 and at least one seed")


PROFILES = {
    # ~1 minute for both datasets on an idle 2-core CPU: 10,000 training images, 4 epochs; the
    # gates learn 10x faster than the weights so that neurons die within those 316 steps
    "quick": SparsifierProfile(prices=(0.0, 1e-4, 1e-3, 1e-2), start=500,
                               starts=(250, 500, 1000, 2000), start_prices=(1e-3,), seeds=1,
                               epochs=4, train_size=10_000, gate_lr=1e-2),
    # the journal's 60 epochs and gate learning rate on 10,000 images, one seed
    "standard": SparsifierProfile(prices=(0.0, 1e-5, 1e-4, 1e-3, 1e-2), start=500,
                                  starts=(250, 500, 1000, 2000), start_prices=(1e-3,), seeds=1,
                                  epochs=60, train_size=10_000),
    # the journal: start 500, 60 epochs, a lambda sweep (0 is the journal's "static network");
    # the open question at two prices; 3 seeds
    "full": SparsifierProfile(prices=(0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1), start=500,
                              starts=(250, 500, 1000, 2000), start_prices=(1e-4, 1e-3),
                              seeds=3, epochs=60),
}


def model_grid(experiment: str, p: SparsifierProfile) -> list[ModelSpec]:
    """The models of one experiment (each model's price is in its ``options``)."""
    if experiment == "lambda-sweep":
        grid = [(p.start, lam) for lam in p.prices]
    elif experiment == "start-width":
        grid = [(w, lam) for lam in p.start_prices for w in p.starts]
    else:
        raise UsageError(f"unknown experiment {experiment!r}; choose {', '.join(EXPERIMENTS)}")
    if not grid:
        raise UsageError(f"experiment {experiment} needs at least one price and width")
    return [ModelSpec((int(w),), seed=s, variant="sparsifier", options=(("price", float(lam)),))
            for w, lam in grid for s in seed_list(p.seeds)]


def experiment(name: str, p: SparsifierProfile) -> Experiment:
    """One experiment's engine run: the models, the config and the gate factory."""
    specs = model_grid(name, p)
    lams = [dict(s.options)["price"] for s in specs]
    cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, train_size=p.train_size,
                      # test accuracy every epoch; train accuracy (and neuron statistics)
                      # after the last one: the sweep's numbers at the cost of one pass
                      eval_splits=("test",), stats_split="train", stats_epochs="last",
                      shrink_every="epoch")

    def gates() -> SparsifierGate:
        if p.gate_kind == "l1":  # the L1 gate's description (its runs' ids) as before
            return SparsifierGate(lams, penalty=p.penalty, lr=p.gate_lr)
        return SparsifierGate(lams, penalty=p.penalty, lr=p.gate_lr, gate_kind=p.gate_kind)

    return Experiment(name, specs, cfg, modifiers=(gates,))
