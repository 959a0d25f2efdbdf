"""The growth study: one price per neuron, the same width from any start.

Example::

    from widthlab.studies import growth

    runs = growth.run("mnist", "quick")
"""

from widthlab.studies.growth.analysis import models_table, spreads, width_curves
from widthlab.studies.growth.config import PROFILES, GrowthProfile, experiment, grid
from widthlab.studies.growth.references import final_table
from widthlab.studies.growth.study import STUDY, GrowthStudy
from widthlab.studies.growth.verdicts import (
    as_good_as_static,
    fashion_ends_wider,
    growing_is_cheaper,
    same_width_from_any_start,
)

run = STUDY.run

__all__ = ["PROFILES", "STUDY", "GrowthProfile", "GrowthStudy", "as_good_as_static",
           "experiment", "fashion_ends_wider", "final_table", "grid", "growing_is_cheaper",
           "models_table", "run", "same_width_from_any_start", "spreads", "width_curves"]
