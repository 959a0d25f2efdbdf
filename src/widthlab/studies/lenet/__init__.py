"""The lenet study: learned widths of LeNet-300-100 and LeNet-5-Caffe against the published
rows and against pruning after training (issue 17).

Example::

    from widthlab.studies import lenet

    runs = lenet.run("mnist", "quick")       # trains (or finds stored) every run
"""

from widthlab.studies.lenet.analysis import read_runs, rows_table, unit_runs
from widthlab.studies.lenet.config import PROFILES, LenetProfile
from widthlab.studies.lenet.references import BOUND, PUBLISHED, published_frame
from widthlab.studies.lenet.study import STUDY, LenetStudy
from widthlab.studies.lenet.train import cut_run, decision_data, gated_run
from widthlab.studies.lenet.verdicts import (
    gates_beat_the_cut,
    lenet5_target,
    lenet300_target,
    published_reached,
    reached_rows,
    shrinking_is_cheaper,
)

run = STUDY.run

__all__ = ["BOUND", "PROFILES", "PUBLISHED", "STUDY", "LenetProfile", "LenetStudy", "cut_run",
           "decision_data", "gated_run", "gates_beat_the_cut", "lenet300_target",
           "lenet5_target", "published_frame", "published_reached", "reached_rows",
           "read_runs", "rows_table", "run",
           "shrinking_is_cheaper", "unit_runs"]
