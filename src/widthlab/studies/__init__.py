"""The journal's studies, one package each, all filling in :class:`~widthlab.studies.base.Study`.

In the journal's order (``widthlab study --help`` lists the ones present):

- ``variance``: is the distribution of per-neuron activation std (dead neurons, Shapiro W,
  mixtures) a proxy for the right layer width? (journal sections 1-3)
- ``pca``: how many dimensions does a layer really use?
- ``flexible``: a sigmoid cut-off layer that learns its width.
- ``sparsifier``: per-neuron gates under L1, dead neurons removed.
- ``importance``: exact and proxy neuron importance, top-k orderings.
- ``ordering``: how stable neuron orderings are during training.
- ``optimizer``: is Adam unstable at very low loss?
- ``frontier``: how many neurons each trained layer of the width sweep needs.
- ``growth``: a layer that grows and shrinks to one width under one price.
- ``lenet``: the sparsifier's gates on LeNet-300-100 and LeNet-5-Caffe, against the published
  learned-width rows and pruning after training.
- ``transformer``: FFN neurons and heads of a character-level GPT on Shakespeare: the sweep,
  the frontier of every ranking, learned widths against static models.

Each package ``widthlab/studies/<name>/`` holds its configuration (``config.py``: profiles and
experiments), its analysis (pure tables and verdicts), its figures and report sections, and
exposes ``STUDY``, an instance of its :class:`~widthlab.studies.base.Study` subclass. This
module is the registry: :func:`get_study` and :func:`available` load them lazily.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from widthlab.errors import UsageError

if TYPE_CHECKING:
    from widthlab.studies.base import Study

# journal order; a name whose package is not there is skipped
ORDER = ("variance", "pca", "flexible", "sparsifier", "importance", "ordering", "optimizer",
         "frontier", "growth", "lenet", "resnet", "transformer")


def exists(name: str) -> bool:
    """Whether the study package ``name`` is present (without importing it)."""
    return importlib.util.find_spec(f"widthlab.studies.{name}") is not None


def load(name: str) -> Study | None:
    """The study ``name`` (its registry name) or None when widthlab has no such study."""
    if name not in ORDER or not exists(name):
        return None
    from widthlab.studies.base import Study

    study = getattr(importlib.import_module(f"widthlab.studies.{name}"), "STUDY", None)
    return study if isinstance(study, Study) else None


def available() -> list[Study]:
    """Every study present, in journal order."""
    return [s for s in (load(n) for n in ORDER) if s is not None]


def get_study(name: str) -> Study:
    """The study with registry name or CLI command ``name``.

    Raises
    ------
    UsageError
        If there is none (the message lists the studies).
    """
    for study in available():
        if name in (study.name, study.command or study.name):
            return study
    names = ", ".join(s.command or s.name for s in available())
    raise UsageError(f"unknown study {name!r}; choose from {names}")


__all__ = ["ORDER", "available", "exists", "get_study", "load"]
