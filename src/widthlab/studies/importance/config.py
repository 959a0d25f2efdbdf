"""What the importance study trains: its profiles and its one experiment (declarative only).

- ``scores`` (run label ``importance:scores``): one-hidden-layer MLPs of a few widths and
  seeds in one engine run; after the last epoch the
  :class:`~widthlab.metrics.importance_hook.ImportanceHook` scores every neuron on the
  validation split (exact importance and every proxy) and stores the top-k cut curves of every
  ordering on the test split, with the cut model's latency.

Example::

    from widthlab.studies.importance import config

    exp = config.experiment(config.PROFILES["quick"])
    exp.specs[0], exp.config.epochs, exp.hooks[0].describe()
"""

from __future__ import annotations

from dataclasses import dataclass

from widthlab.nn.widths import sqrt2_widths
from widthlab.studies._importance_sweep import SweepProfile, sweep_experiment
from widthlab.studies.base import Experiment

NAME = "importance"
EXPERIMENT = "scores"


@dataclass(frozen=True, kw_only=True)
class ImportanceProfile(SweepProfile):
    """What a profile of the importance study trains (per dataset): the sweep's widths,
    seeds, epochs and training settings."""


PROFILES = {
    # 36 s per dataset on one thread beside another job: 237 steps on 10,000 images, scored
    # on 1,500 validation images
    "quick": ImportanceProfile(widths=(64, 256, 1024), seeds=2, epochs=3, train_size=10_000,
                               max_samples=1500),
    # the full grid's range in sqrt(2) steps up to 1024, the flexible experiments' 15 epochs
    # on 20,000 images
    "standard": ImportanceProfile(widths=tuple(sqrt2_widths(32, 1024)), seeds=2, epochs=15,
                                  train_size=20_000),
    # the journal's one-hidden-layer grid, trained as long as the flexible-layer experiments
    "full": ImportanceProfile(widths=tuple(sqrt2_widths(32, 2048)), seeds=3, epochs=15),
}


def experiment(p: ImportanceProfile) -> Experiment:
    """The study's engine run: the sweep, scored and cut after the last epoch."""
    return sweep_experiment(EXPERIMENT, p, study=NAME, record="last", topk="last")
