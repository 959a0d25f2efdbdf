"""Typed study tables: a misspelt table or column fails where the tables are built."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pandas as pd
import pytest

from widthlab.studies.growth.study import GrowthTables
from widthlab.studies.tables import StudyTables, TableError, table, value
from widthlab.studies.variance.study import VarianceTables


@dataclass(frozen=True)
class Sweep(StudyTables):
    run: str = value("run id")
    summary: pd.DataFrame = table("width", "test_acc")


GOOD = pd.DataFrame({"width": [16, 32], "test_acc": [0.9, 0.95], "extra": [1, 2]})


def test_tables_read_by_attribute_and_name():
    t = Sweep(run="r1", summary=GOOD)
    assert t.summary is GOOD and t["summary"] is GOOD and t["run"] == "r1"
    assert list(t) == ["run", "summary"] == t.keys()
    assert Sweep.declared() == {"run": None, "summary": ("width", "test_acc")}
    with pytest.raises(FrozenInstanceError):
        t.run = "r2"


def test_a_misspelt_table_fails_at_definition():
    with pytest.raises(TypeError, match="sumary"):
        Sweep(run="r1", sumary=GOOD)
    with pytest.raises(TypeError, match="summary"):
        Sweep(run="r1")  # the declared table left out
    t = Sweep(run="r1", summary=GOOD)
    with pytest.raises(AttributeError):
        t.sumary  # noqa: B018
    with pytest.raises(KeyError, match="no table 'sumary'; it has run, summary"):
        t["sumary"]


def test_a_misspelt_or_missing_column_fails_at_definition():
    misspelt = GOOD.rename(columns={"test_acc": "test_ac"})
    with pytest.raises(TableError, match=r"Sweep.summary lacks its declared column\(s\) "
                                         r"test_acc; it has width, test_ac, extra"):
        Sweep(run="r1", summary=misspelt)

    @dataclass(frozen=True)
    class Typo(StudyTables):  # the declaration misspelt: the real frame lacks "widht"
        summary: pd.DataFrame = table("widht")

    with pytest.raises(TableError, match="Typo.summary lacks .* widht"):
        Typo(summary=GOOD)
    with pytest.raises(TableError, match="must be a DataFrame, got dict"):
        Sweep(run="r1", summary={"width": [16]})
    with pytest.raises(TableError, match="distinct"):
        table("width", "width")


def test_converted_studies_declare_the_columns_they_read():
    assert VarianceTables.declared()["summary"][:3] == ("width", "replicates", "shapiro_w")
    summary = pd.DataFrame({c: [1.0] for c in VarianceTables.declared()["summary"]})
    mixtures = pd.DataFrame({"width": [16], "gamma_useless": [0.1]})  # expnormal_useless gone
    with pytest.raises(TableError, match="VarianceTables.mixtures lacks .*expnormal_useless"):
        VarianceTables(run="r", stds={}, summary=summary, mixtures=mixtures, turning={})
    from widthlab.studies.growth.analysis import spreads

    # an all-failed growth run: no rows, but the declared columns are there
    models = pd.DataFrame({c: [] for c in GrowthTables.declared()["models"]})
    models["status"] = pd.Series([], dtype=str)
    empty = spreads(models)
    assert len(empty) == 0
    curves = pd.DataFrame({c: [] for c in GrowthTables.declared()["curves"]})
    GrowthTables(models=models, spreads=empty, curves=curves, runs=["r"])


@dataclass(frozen=True, kw_only=True)
class Partial(StudyTables):
    runs: list = value("run ids")
    sweep: pd.DataFrame = table("width", "test_acc", optional=True)
    static: str | None = value("a reference run", optional=True)


def test_an_optional_table_may_be_left_out_but_not_misspelt():
    t = Partial(runs=["r"])
    assert "sweep" not in t and t["sweep"] is None and t.get("sweep", "none") == "none"
    assert t.keys() == ["runs"] and list(t) == ["runs"]
    full = Partial(runs=["r"], sweep=GOOD, static="s")
    assert "sweep" in full and full.keys() == ["runs", "sweep", "static"]
    assert "swep" not in full
    with pytest.raises(KeyError, match="no table 'swep'"):
        full.get("swep")
    with pytest.raises(TableError, match="Partial.sweep lacks its declared column"):
        Partial(runs=["r"], sweep=GOOD.drop(columns="test_acc"))
    with pytest.raises(TypeError, match="swep"):
        Partial(runs=["r"], swep=GOOD)


def _all_study_tables() -> list[type[StudyTables]]:
    from widthlab.studies import ORDER, get_study

    out = []
    for name in ORDER:
        mod = __import__(type(get_study(name)).__module__, fromlist=["x"])
        out += [v for v in vars(mod).values() if isinstance(v, type)
                and issubclass(v, StudyTables) and v is not StudyTables
                and v.__module__ == mod.__name__]
    return out


def test_every_study_declares_its_tables():
    classes = _all_study_tables()
    names = {c.__name__ for c in classes}
    assert names >= {"VarianceTables", "PCATables", "FlexibleTables", "SparsifierTables",
                     "ImportanceTables", "OrderingTables", "OptimizerTables", "FrontierTables",
                     "GrowthTables", "LenetTables"}
    for cls in classes:
        declared = cls.declared()
        frames = {n: c for n, c in declared.items() if c}
        assert frames, f"{cls.__name__} declares no table with columns"
        for name, columns in frames.items():
            # a frame of the declared columns minus the last one is refused, naming it
            bad = pd.DataFrame({c: [1] for c in columns[:-1]})
            kwargs = {n: (pd.DataFrame({c: [1] for c in declared[n]}) if declared[n]
                          is not None else None) for n in declared}
            kwargs[name] = bad
            with pytest.raises(TableError, match=f"{cls.__name__}.{name} lacks .*"
                                                 f"{columns[-1]}"):
                cls(**kwargs)
