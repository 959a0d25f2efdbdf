"""The variance study: is the distribution of per-neuron activation std a proxy for the right
layer width? (journal sections 1-3 and FashionMNIST)

Example::

    from widthlab.studies import variance

    runs = variance.run("mnist", "quick", store="widthlab-runs")       # RunSet
    table = variance.summarize("widthlab-runs", runs["sweep"])         # one row per width
    [v.text for v in variance.dataset_verdicts(table)]
"""

from widthlab.studies.variance.analysis import collect, mixture_summary, summarize, turning_points
from widthlab.studies.variance.config import (
    EXPERIMENT,
    PROFILES,
    VarianceProfile,
    sweep,
)
from widthlab.studies.variance.study import STUDY, VarianceStudy, sweep_run
from widthlab.studies.variance.verdicts import dataset_verdicts, datasets_verdict, turning_verdict

run = STUDY.run

__all__ = ["EXPERIMENT", "PROFILES", "STUDY", "VarianceProfile", "VarianceStudy", "collect",
           "dataset_verdicts", "datasets_verdict", "mixture_summary", "run", "summarize", "sweep",
           "sweep_run", "turning_points", "turning_verdict"]
