"""The sparsifier study: per-neuron gates under an L1 penalty, dead neurons removed for real.

Example::

    from widthlab.studies import sparsifier

    runs = sparsifier.run("mnist", "quick", store="widthlab-runs")   # RunSet
    table = sparsifier.summarize("widthlab-runs", runs["lambda-sweep"])  # one row per model
    sparsifier.per_price(table)
"""

from widthlab.studies.sparsifier.analysis import (
    curves,
    per_price,
    static_accuracy,
    static_runs,
    summarize,
)
from widthlab.studies.sparsifier.config import (
    EXPERIMENTS,
    PROFILES,
    STATIC,
    SparsifierProfile,
    experiment,
)
from widthlab.studies.sparsifier.references import final_widths, static_config
from widthlab.studies.sparsifier.study import STUDY, SparsifierStudy
from widthlab.studies.sparsifier.verdicts import (
    fashion_keeps_more,
    sparsifier_vs_static,
    start_width_matters,
)

run = STUDY.run

__all__ = ["EXPERIMENTS", "PROFILES", "STATIC", "STUDY", "SparsifierProfile", "SparsifierStudy",
           "curves", "experiment", "fashion_keeps_more", "final_widths", "per_price", "run",
           "sparsifier_vs_static", "start_width_matters", "static_accuracy", "static_config",
           "static_runs", "summarize"]
