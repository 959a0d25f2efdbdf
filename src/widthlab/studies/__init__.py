"""The journal's studies, one module each; each configures the engine and reads the store.

In the journal's order (``widthlab study --help`` lists the ones present):

- :mod:`~widthlab.studies.variance`: is the distribution of per-neuron activation std (dead
  neurons, Shapiro W, mixtures) a proxy for the right layer width? (journal sections 1-3)
- :mod:`~widthlab.studies.pca`: how many dimensions does a layer really use?
- :mod:`~widthlab.studies.flexible`: a sigmoid cut-off layer that learns its width.
- :mod:`~widthlab.studies.sparsifier`: per-neuron gates under L1, dead neurons removed.
- :mod:`~widthlab.studies.importance`: exact and proxy neuron importance, top-k orderings.
- :mod:`~widthlab.studies.ordering`: how stable neuron orderings are during training.
- :mod:`~widthlab.studies.optimizer`: is Adam unstable at very low loss?

Each module follows :mod:`widthlab.studies._common` (``STUDY``, ``run``, ``report_sections``,
``cli``).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# journal order; a name whose module is not there (yet) is skipped
ORDER = ("variance", "pca", "flexible", "sparsifier", "importance", "ordering", "optimizer")
# `widthlab study <command>` -> module
COMMANDS = {"variance": "variance", "pca": "pca", "flexible": "flexible",
            "sparsifier": "sparsifier", "importance": "importance",
            "ordering-stability": "ordering", "optimizer": "optimizer"}


def exists(name: str) -> bool:
    """Whether the study module ``name`` is present (without importing it)."""
    return importlib.util.find_spec(f"widthlab.studies.{name}") is not None


def load(name: str) -> ModuleType | None:
    """The study module ``name`` or None when widthlab has no such module."""
    try:
        return importlib.import_module(f"widthlab.studies.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"widthlab.studies.{name}":
            return None
        raise


def available() -> list[ModuleType]:
    """Every study module present, in journal order."""
    return [m for m in (load(n) for n in ORDER) if m is not None]
