"""What the PCA study computes: its profiles (declarative only).

The study reads the variance study's width sweep (``requires = ("variance",)``) and adds two
steps per dataset:

- ``conjecture`` (run label ``pca:conjecture``): a width sweep trained through the engine on a
  noise task labelled by one undersized model of the sweep (:mod:`~widthlab.studies.pca.teacher`);
- ``analysis`` (label ``pca``, a stored analysis): the PCA of the sweep's hidden
  pre-activations and the reconstruction curves (:mod:`~widthlab.studies.pca.analysis`).

Example::

    from widthlab.studies.pca.config import PROFILES

    PROFILES["quick"].replace(seeds=None, cov_samples=None)   # every seed, every image
"""

from __future__ import annotations

from dataclasses import dataclass, field

from widthlab.errors import UsageError
from widthlab.studies.base import Profile

NAME = "pca"
SOURCE_STUDY = "variance"       # the study whose sweep is analysed
SOURCE_EXPERIMENT = "sweep"     # its experiment (its RunSet's key)
FRACTIONS = (0.90, 0.95, 0.99)  # explained-variance fractions counted in components


@dataclass(frozen=True, kw_only=True)
class PCAProfile(Profile):
    """Which trained models are analysed, and the conjecture's sweep."""

    seeds: tuple[int, ...] | None = field(
        default=(0,), metadata={"help": "seeds of the variance sweep to analyse (all: none)"})
    cov_samples: int | None = field(
        default=10_000, metadata={"help": "training images streamed into the covariance "
                                          "(all: none)"})
    teacher_width: int = field(
        default=22, metadata={"help": "width of the conjecture's undersized model M"})
    conj_widths: tuple[int, ...] = field(
        default=(4, 8, 16, 22, 32, 64, 128), metadata={"help": "widths trained on M's noise "
                                                               "task"})
    conj_seeds: int = field(default=2, metadata={"help": "seeds per conjecture width"})
    conj_train: int = field(default=20_000, metadata={"help": "noise training inputs"})
    conj_epochs: int = field(default=3, metadata={"help": "epochs of the conjecture sweep"})

    def validate(self) -> None:
        if self.cov_samples is not None and self.cov_samples < 2:
            raise UsageError(f"cov_samples must be at least 2 (or none for all), got "
                             f"{self.cov_samples}")
        if self.teacher_width < 1 or not self.conj_widths or min(self.conj_widths) < 1:
            raise UsageError("the teacher width and the conjecture widths must be positive; "
                             "e.g. --teacher-width 22 --conj-widths 4,8,16,32")
        if self.conj_seeds < 1 or self.conj_train < 1 or self.conj_epochs < 1:
            raise UsageError("conj_seeds, conj_train and conj_epochs must be at least 1")


PROFILES = {
    # about a minute for both datasets here, on top of the quick variance study
    "quick": PCAProfile(seeds=(0,), cov_samples=5000, teacher_width=22,
                        conj_widths=(4, 8, 16, 22, 32, 64, 128), conj_seeds=2, conj_train=10_000,
                        conj_epochs=3),
    # two seeds of the standard sweep over 20,000 images; the conjecture trained 15 epochs
    "standard": PCAProfile(seeds=(0, 1), cov_samples=20_000, teacher_width=22,
                           conj_widths=(4, 8, 11, 16, 22, 32, 45, 64, 128), conj_seeds=3,
                           conj_train=20_000, conj_epochs=15),
    # every seed of the full sweep over the whole training split
    "full": PCAProfile(seeds=None, cov_samples=None, teacher_width=22,
                       conj_widths=(4, 8, 11, 16, 22, 32, 45, 64, 90, 128, 181, 256),
                       conj_seeds=5, conj_train=55_000, conj_epochs=15),
}
