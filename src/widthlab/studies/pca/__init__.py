"""The PCA study: how many dimensions does a hidden layer really use? (journal: "Investigate
PCA based metrics for layer size", and its conjecture)

It analyses the variance study's sweep, so it runs with that study's runs as ``upstream``
(``widthlab study pca`` and ``widthlab reproduce`` do this for you).

Example::

    from widthlab.studies import pca, variance

    sweep = variance.run("mnist", "quick", store="widthlab-runs")
    runs = pca.run("mnist", "quick", store="widthlab-runs", upstream={"variance": sweep})
    table = pca.summarize("widthlab-runs", runs["analysis"])   # one row per width
"""

from widthlab.studies.pca.config import FRACTIONS, PROFILES, PCAProfile
from widthlab.studies.pca.study import STUDY, PCAStudy, analysis_run
from widthlab.studies.pca.tables import conjecture_accuracy, load, per_width, summarize
from widthlab.studies.pca.teacher import TaskSplits, noise_task, teacher_and_task
from widthlab.studies.pca.verdicts import conjecture_verdict, monotone_verdict, separation_verdict

run = STUDY.run

__all__ = ["FRACTIONS", "PROFILES", "STUDY", "PCAProfile", "PCAStudy", "TaskSplits",
           "analysis_run", "conjecture_accuracy", "conjecture_verdict", "load",
           "monotone_verdict", "noise_task", "per_width", "run", "separation_verdict",
           "summarize", "teacher_and_task"]
