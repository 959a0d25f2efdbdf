"""The optimizer study: loss spikes at low loss with Adam, AdaMax and SGD+momentum.

Example::

    from widthlab.studies import optimizer

    runs = optimizer.run("mnist", "quick", store="widthlab-runs")          # RunSet
    spikes = optimizer.spike_table("widthlab-runs", runs.ids())  # run x variant x epoch
"""

from widthlab.studies.optimizer.analysis import envelope_table, spike_rates, spike_table
from widthlab.studies.optimizer.config import (
    OPTIMIZERS,
    PROFILES,
    STATIC_X0,
    OptimizerProfile,
    experiments,
    variants,
)
from widthlab.studies.optimizer.study import STUDY, OptimizerStudy
from widthlab.studies.optimizer.verdicts import verdicts

run = STUDY.run

__all__ = ["OPTIMIZERS", "PROFILES", "STATIC_X0", "STUDY", "OptimizerProfile", "OptimizerStudy",
           "envelope_table", "experiments", "run", "spike_rates", "spike_table", "variants",
           "verdicts"]
