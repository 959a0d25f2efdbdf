"""What the frontier study computes (declarative): for every trained model of the variance
study's width sweep, the exact width frontier of its hidden layer (``widthlab.frontier``,
greedy removal with compensation), stored as one analysis run per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from widthlab.errors import UsageError
from widthlab.frontier import METHODS
from widthlab.studies.base import Profile

NAME = "frontier"
SOURCE_STUDY = "variance"


@dataclass(frozen=True, kw_only=True)
class FrontierProfile(Profile):
    """Which trained models are cut, and how the recommendation is made."""

    seeds: tuple[int, ...] | None = field(
        default=(0,), metadata={"help": "seeds of the sweep to analyse (none: all)"})
    methods: tuple[str, ...] = field(
        default=("obs",), metadata={"help": "frontier methods; the first one recommends"})
    calib_size: int | None = field(
        default=5000, metadata={"help": "validation samples deciding the cut (none: all)"})
    tol: float = field(default=0.005,
                       metadata={"help": "accuracy a recommended width may lose"})

    def validate(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise UsageError(f"unknown frontier method(s) {unknown}; choose from "
                             f"{', '.join(METHODS)}")
        if not 0 <= self.tol < 1:
            raise UsageError(f"tol must be in [0, 1), got {self.tol}; e.g. 0.005")


PROFILES = {
    # every width of the quick sweep, one seed: about a minute per dataset on 2 cores
    "quick": FrontierProfile(),
    "standard": FrontierProfile(seeds=(0, 1)),
    "full": FrontierProfile(seeds=None, methods=("obs", "taylor", "random"), calib_size=None),
}
