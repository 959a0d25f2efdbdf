"""The flexible-layer study: a sigmoid cut-off ``sigmoid(k (x0 - i))`` learns the layer's width.

Steps (:mod:`~widthlab.studies.flexible.config`): ``convergence``, ``frontier`` and its
``frontier-static`` references, ``minima``, the ``pretrain-<L>`` chain and ``pretrained``,
``size-only``. Everything after training reads the store only.

Example::

    from widthlab.studies import flexible

    runs = flexible.run("mnist", "quick", only=["frontier"], store="widthlab-runs")  # RunSet
    table = flexible.frontier_table("widthlab-runs", runs["frontier"])   # one row per model
    flexible.frontier_summary(table)                                     # medians per penalty
"""

from widthlab.studies.flexible.analysis import (
    best_static,
    convergence_table,
    epoch_table,
    find_static,
    frontier_summary,
    frontier_table,
    last_epoch_summary,
    model_meta,
    model_table,
    plateau_table,
    pretrain_chain,
    start_x0,
    stored_cutoff,
)
from widthlab.studies.flexible.config import (
    ARMS,
    HELPER,
    PROFILES,
    RUNS,
    SLOPES,
    FlexibleProfile,
    selected,
    steps,
)
from widthlab.studies.flexible.hooks import LastEpochProbe, RandomActivationProbe
from widthlab.studies.flexible.sections import JOURNAL, JOURNAL_BY_EXPERIMENT
from widthlab.studies.flexible.study import STUDY, FlexibleStudy, verdict_frame
from widthlab.studies.flexible.verdicts import (
    convergence_verdicts,
    experiment_verdicts,
    frontier_verdicts,
    minima_verdicts,
    plateau_verdict,
    pretrained_verdict,
    prune_verdict,
    size_only_verdict,
    width_order_verdict,
)

run = STUDY.run

__all__ = ["ARMS", "HELPER", "JOURNAL", "JOURNAL_BY_EXPERIMENT", "PROFILES", "RUNS", "SLOPES",
           "STUDY", "FlexibleProfile", "FlexibleStudy", "LastEpochProbe",
           "RandomActivationProbe", "best_static", "convergence_table", "convergence_verdicts",
           "epoch_table", "experiment_verdicts", "find_static", "frontier_summary",
           "frontier_table", "frontier_verdicts", "last_epoch_summary", "minima_verdicts",
           "model_meta", "model_table", "plateau_table", "plateau_verdict", "pretrain_chain",
           "pretrained_verdict", "prune_verdict", "run", "selected", "size_only_verdict",
           "start_x0", "steps", "stored_cutoff", "verdict_frame", "width_order_verdict"]
