"""The frontier study: how many neurons each trained layer of the width sweep needs.

Example::

    from widthlab.studies import get_study

    study = get_study("frontier")      # requires the variance study's sweep
"""

from widthlab.studies.frontier.analysis import curves, model_table, sweep_plateau
from widthlab.studies.frontier.config import PROFILES, FrontierProfile
from widthlab.studies.frontier.study import STUDY, FrontierStudy
from widthlab.studies.frontier.verdicts import (
    fashion_needs_more,
    finds_sweep_width,
    independent_of_size,
)

run = STUDY.run

__all__ = ["PROFILES", "STUDY", "FrontierProfile", "FrontierStudy", "curves",
           "fashion_needs_more", "finds_sweep_width", "independent_of_size", "model_table",
           "run", "sweep_plateau"]
