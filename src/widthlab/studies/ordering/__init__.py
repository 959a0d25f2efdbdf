"""The ordering-stability study: how much neuron orderings move during training, and the
sorted flexible layer they would drive.

Example::

    from widthlab.studies import ordering

    runs = ordering.run("mnist", "quick", store="widthlab-runs")           # RunSet
    ordering.stability_table("widthlab-runs", runs["stability"])   # model x ordering x epoch
    ordering.sorted_table("widthlab-runs",
                          [runs[f"variant-{v}"] for v in ordering.VARIANTS])

or ``widthlab study ordering-stability --dataset both --profile quick``.
"""

from widthlab.studies.ordering.analysis import (
    ACC_TIE,
    FAITHFUL_TAU,
    ORDERINGS,
    STABLE_CHURN,
    STABLE_TAU,
    WIDTH_TIE,
    fidelity_table,
    paired_wins,
    records,
    sorted_table,
    stability_summary,
    stability_table,
)
from widthlab.studies.ordering.config import (
    PROFILES,
    STABILITY,
    VARIANT_PREFIX,
    VARIANTS,
    OrderingProfile,
    stability_experiment,
    variant_experiment,
    variant_modifier,
)
from widthlab.studies.ordering.study import STUDY, OrderingStudy
from widthlab.studies.ordering.verdicts import (
    exact_stability_verdict,
    sorted_layer_verdict,
    sorted_verdict,
)

run = STUDY.run

__all__ = ["ACC_TIE", "FAITHFUL_TAU", "ORDERINGS", "PROFILES", "STABILITY", "STABLE_CHURN",
           "STABLE_TAU", "STUDY", "VARIANTS", "VARIANT_PREFIX", "WIDTH_TIE", "OrderingProfile",
           "OrderingStudy", "exact_stability_verdict", "fidelity_table", "paired_wins",
           "records", "run", "sorted_layer_verdict", "sorted_table", "sorted_verdict",
           "stability_experiment", "stability_summary", "stability_table", "variant_experiment",
           "variant_modifier"]
