"""The ordering-stability study: how much neuron orderings move during training, and the
sorted flexible layer they would drive.

Example::

    from widthlab.studies import ordering

    runs = ordering.run("mnist", "quick", store="widthlab-runs")           # RunSet
    ordering.stability_table("widthlab-runs", runs["stability"])   # model x ordering x epoch
    ordering.sorted_table("widthlab-runs",
                          [runs[f"variant-{v}"] for v in ordering.VARIANTS])

or ``widthlab study ordering-stability --dataset both --profile quick``. Thresholds and
ordering names are in :mod:`~widthlab.studies.ordering.analysis`, the experiments in
:mod:`~widthlab.studies.ordering.config`.
"""

from widthlab.studies.ordering.analysis import (
    fidelity_table,
    paired_wins,
    records,
    sorted_table,
    stability_summary,
    stability_table,
)
from widthlab.studies.ordering.config import PROFILES, STABILITY, VARIANT_PREFIX, VARIANTS
from widthlab.studies.ordering.study import STUDY, OrderingStudy
from widthlab.studies.ordering.verdicts import sorted_layer_verdict, sorted_verdict

run = STUDY.run

__all__ = ["PROFILES", "STABILITY", "STUDY", "VARIANTS", "VARIANT_PREFIX", "OrderingStudy",
           "fidelity_table", "paired_wins", "records", "run", "sorted_layer_verdict",
           "sorted_table", "sorted_verdict", "stability_summary", "stability_table"]
