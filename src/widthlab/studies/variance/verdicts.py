"""The variance study's verdicts: the journal's claims recomputed from its tables.

Example::

    from widthlab.studies.variance import verdicts

    [v.text for v in verdicts.dataset_verdicts(summary)]
"""

from __future__ import annotations

import pandas as pd

from widthlab.metrics import (
    accuracy_plateau,
    accuracy_saturates,
    closest_turning_point,
    dead_grows_with_width,
    plateau_shift,
    shapiro_argmax_vs_plateau,
    total_std_grows_logarithmically,
)
from widthlab.metrics.variance import Verdict


def dataset_verdicts(summary: pd.DataFrame) -> list[Verdict]:
    """The journal's claims about one dataset, recomputed (see :mod:`widthlab.metrics`)."""
    return [dead_grows_with_width(summary), accuracy_saturates(summary),
            total_std_grows_logarithmically(summary), shapiro_argmax_vs_plateau(summary)]


def turning_verdict(summary: pd.DataFrame, turning: dict[str, float | None]) -> Verdict:
    """Which metric's turning point (:func:`~widthlab.studies.variance.analysis.turning_points`)
    is closest to the test-accuracy plateau."""
    plateau = accuracy_plateau(summary["width"], summary["test_acc"])
    return closest_turning_point(turning, plateau)


def datasets_verdict(mnist: pd.DataFrame, fashion: pd.DataFrame) -> Verdict:
    """The accuracy plateau moves from MNIST to FashionMNIST (the journal's FashionMNIST
    finding)."""
    return plateau_shift(mnist, fashion, "MNIST", "FashionMNIST")
