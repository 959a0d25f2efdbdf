"""The resnet study: learned widths of ResNet-20 on MNIST and FashionMNIST against the
practitioner's alternatives at the same multiply-adds (issue 32).

Example::

    from widthlab.studies import resnet

    runs = resnet.run("fashion", "quick")     # trains (or finds stored) every run
"""

from widthlab.studies.resnet.analysis import ResnetTables, tables_of
from widthlab.studies.resnet.config import PROFILES, ResnetProfile
from widthlab.studies.resnet.study import STUDY, ResnetStudy
from widthlab.studies.resnet.train import Journal, build_gated, build_pruned, uniform_config

run = STUDY.run

__all__ = ["PROFILES", "STUDY", "Journal", "ResnetProfile", "ResnetStudy", "ResnetTables",
           "build_gated", "build_pruned", "run", "tables_of", "uniform_config"]
