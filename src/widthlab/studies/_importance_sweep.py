"""The width x seed sweep scored by the importance hook: the profile base and the engine run
shared by the importance and the ordering-stability studies (studies never import each other,
so what both train lives here).

Example::

    from widthlab.studies._importance_sweep import SweepProfile, sweep_experiment

    exp = sweep_experiment("scores", SweepProfile(widths=(64, 256)), study="importance",
                           record="last", topk="last")
    exp.hooks[0].describe()
"""

from __future__ import annotations

from dataclasses import dataclass, field

from widthlab.engine import TrainConfig
from widthlab.errors import UsageError
from widthlab.metrics.importance_hook import ImportanceHook, When
from widthlab.studies.base import Experiment, Profile, seed_list, sweep_specs


@dataclass(frozen=True, kw_only=True)
class SweepProfile(Profile):
    """One-hidden-layer MLPs of a few widths and seeds, trained in one engine run and scored
    by :class:`~widthlab.metrics.importance_hook.ImportanceHook` on the validation split."""

    widths: tuple[int, ...] = field(metadata={"help": "hidden widths: LO:HI (sqrt(2) steps) "
                                                      "or a list"})
    seeds: tuple[int, ...] | int = field(default=2, metadata={"help": "a count or a list"})
    epochs: int = field(default=3, metadata={"help": "epochs of the run"})
    train_size: int | None = field(default=None,
                                   metadata={"help": "first N training images (all: none)"})
    batch_size: int = field(default=128, metadata={"help": "minibatch size"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    max_samples: int | None = field(default=None, metadata={
        "help": "score on the first N validation images (all: none)"})

    def validate(self) -> None:
        if not self.widths or any(int(w) != w or w < 1 for w in self.widths):
            raise UsageError(f"widths must be positive whole numbers, got {list(self.widths)}; "
                             "e.g. 64,256,1024 or 32:2048")
        if not seed_list(self.seeds):
            raise UsageError("the study needs at least one seed; e.g. --seeds 2")
        if self.epochs < 1:
            raise UsageError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError(f"max_samples must be >= 1 or none, got {self.max_samples}")


def sweep_experiment(name: str, p: SweepProfile, *, study: str, record: When,
                     topk: When) -> Experiment:
    """The sweep's engine run: its models, its config (no neuron statistics; val and test
    evaluated every epoch) and the importance hook scoring on ``record`` epochs and cutting on
    ``topk`` epochs; ``study`` names the caller in errors."""
    specs = sweep_specs(p.widths, p.seeds, study)
    cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                      train_size=p.train_size, stats_epochs="none",
                      eval_splits=("val", "test"))
    hook = ImportanceHook(record=record, topk=topk, max_samples=p.max_samples)
    return Experiment(name, specs, cfg, hooks=(hook,))
