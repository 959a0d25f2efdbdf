"""The importance study: exact neuron importance against cheap proxies, and top-k cuts.

Example::

    from widthlab.studies import importance

    runs = importance.run("mnist", "quick", store="widthlab-runs")     # RunSet
    importance.agreement_table("widthlab-runs", runs["scores"])   # one row per model x proxy
    importance.topk_table("widthlab-runs", runs["scores"])        # model x ordering x k

or ``widthlab study importance --dataset both --profile quick``.
"""

from widthlab.metrics.importance_hook import ImportanceHook
from widthlab.studies.importance.analysis import (
    ACC_TOLERANCE,
    ORDERINGS,
    agreement_table,
    cut_means,
    cut_summary,
    proxy_summary,
    score_arrays,
    topk_table,
)
from widthlab.studies.importance.config import EXPERIMENT, PROFILES, ImportanceProfile, experiment
from widthlab.studies.importance.study import STUDY, ImportanceStudy
from widthlab.studies.importance.verdicts import TAU_GOOD, best_cut, closest_proxy, inference_gain

run = STUDY.run

__all__ = ["ACC_TOLERANCE", "EXPERIMENT", "ORDERINGS", "PROFILES", "STUDY", "TAU_GOOD",
           "ImportanceHook", "ImportanceProfile", "ImportanceStudy", "agreement_table",
           "best_cut", "closest_proxy", "cut_means", "cut_summary", "experiment",
           "inference_gain", "proxy_summary", "run", "score_arrays", "topk_table"]
