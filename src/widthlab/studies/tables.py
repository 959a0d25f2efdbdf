"""Typed study tables: a study's tables per dataset declared as a frozen dataclass.

A study's :meth:`~widthlab.studies.base.Study.tables` returns, per dataset, one instance of a
:class:`StudyTables` subclass. Each DataFrame field is declared with :func:`table` and the
columns the study's verdicts, figures and summaries read; other values (a run id, a dict of
arrays) with :func:`value`. So a misspelt table name fails where the tables are built (the
dataclass refuses an unknown or missing keyword; ``t.sumary`` is an AttributeError), and a
table without a declared column fails there too, naming the table, the missing columns and the
columns it has, instead of deep inside a figure.

Example::

    from dataclasses import dataclass
    import pandas as pd
    from widthlab.studies.tables import StudyTables, table, value

    @dataclass(frozen=True)
    class SweepTables(StudyTables):
        run: str = value("the run id")
        summary: pd.DataFrame = table("width", "test_acc", doc="one row per width")

    t = SweepTables(run="r1", summary=pd.DataFrame({"width": [16], "test_acc": [0.9]}))
    t.summary, t["summary"]            # the same frame
    SweepTables(run="r1", sumary=...)  # TypeError: unexpected keyword argument 'sumary'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from widthlab.errors import WidthlabError


class TableError(WidthlabError, TypeError):
    """A study's tables do not match their declaration (a study author's mistake)."""


def table(*columns: str, doc: str = "", optional: bool = False) -> Any:
    """A DataFrame field of a :class:`StudyTables` that holds at least ``columns``;
    ``optional``: it may be None (default), for an experiment that was not run."""
    bad = [c for c in columns if not isinstance(c, str) or not c]
    if bad or len(set(columns)) != len(columns):
        raise TableError(f"table columns must be distinct non-empty names, got {columns!r}")
    meta = {"columns": tuple(columns), "doc": doc, "optional": optional}
    return field(default=None, metadata=meta) if optional else field(metadata=meta)


def value(doc: str = "", *, optional: bool = False) -> Any:
    """A field of a :class:`StudyTables` that is not a declared table (a run id, arrays);
    ``optional``: it may be left out (None)."""
    return field(default=None, metadata={"doc": doc}) if optional else \
        field(metadata={"doc": doc})


@dataclass(frozen=True)
class StudyTables:
    """Base of a study's tables for one dataset; subclasses are frozen dataclasses whose
    fields are :func:`table` and :func:`value` declarations (see the module docstring).

    Construction checks every declared table: a DataFrame holding its declared columns.
    Read a table as an attribute (``t.summary``) or by name (``t["summary"]``); ``name in t``
    says whether an optional table is present.
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            columns = f.metadata.get("columns")
            if columns is None:
                continue
            frame = getattr(self, f.name)
            if frame is None and f.metadata.get("optional"):
                continue
            where = f"{type(self).__name__}.{f.name}"
            if not isinstance(frame, pd.DataFrame):
                raise TableError(f"{where} must be a DataFrame, got {type(frame).__name__}")
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                have = ", ".join(map(str, frame.columns)) or "no columns"
                raise TableError(f"{where} lacks its declared column(s) {', '.join(missing)}; "
                                 f"it has {have}; fix the code that builds it or the "
                                 "declaration")

    @classmethod
    def declared(cls) -> dict[str, tuple[str, ...] | None]:
        """Field name -> declared columns (None for a :func:`value`)."""
        return {f.name: f.metadata.get("columns") for f in dataclasses.fields(cls)}

    def __getitem__(self, name: str) -> Any:
        if name not in self.declared():
            raise KeyError(f"{type(self).__name__} has no table {name!r}; it has "
                           f"{', '.join(self.declared())}")
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is declared and present (an optional table left out is not)."""
        return name in self.declared() and getattr(self, str(name)) is not None

    def get(self, name: str, default: Any = None) -> Any:
        """The table or value ``name`` (``default`` when it is declared but left out)."""
        got = self[name]
        return default if got is None else got

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:
        """The declared names that are present."""
        return [n for n in self.declared() if n in self]


__all__ = ["StudyTables", "TableError", "table", "value"]
