"""Run labels as columns: study_name / experiment / model stored with each run (schema 2), and
a schema-1 store read as it is, then migrated on its first write."""

from __future__ import annotations

import sqlite3

import pytest

import widthlab.store.sqlite as store_mod
from widthlab.store import Store

MODELS = [{"name": "w8", "arch": [8], "seed": 0}]
LABELS = {  # run id -> (label, model kind, the expected columns written by hand)
    "r-var": ("variance", "MLPBank", ("variance", None)),
    "r-spa": ("sparsifier:static", "MLPBank", ("sparsifier", "static")),
    "r-opt": ("optimizer:adam-static", None, ("optimizer", "adam-static")),
    "r-len": ("lenet:gated:300", "LeNet300", ("lenet", "gated:300")),
}


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch):
    monkeypatch.delenv("WIDTHLAB_STORE", raising=False)


def _fill(store: Store, ids) -> None:
    for run_id in ids:
        label, model, _ = LABELS[run_id]
        store.create_run(run_id, study=label, dataset="mnist", config={}, models=MODELS,
                         seed=0, device="cpu", precision="fp32", code_version="t", model=model)


def _columns(store: Store) -> dict:
    runs = store.runs().set_index("run_id")
    return {r: (runs.loc[r, "study"], runs.loc[r, "study_name"], runs.loc[r, "experiment"],
                runs.loc[r, "model"]) for r in runs.index}


def _expected(ids, models=True) -> dict:
    return {r: (LABELS[r][0], *LABELS[r][2], LABELS[r][1] if models else None) for r in ids}


def _none(d: dict) -> dict:  # pandas reads SQL NULL as None; compare None-normalised
    return {k: tuple(None if v != v else v for v in t) for k, t in d.items()}


def test_new_runs_store_their_label_parts_and_model_kind(tmp_path):
    st = Store(tmp_path / "s")
    _fill(st, LABELS)
    assert _none(_columns(st)) == _expected(LABELS)
    for run_id in LABELS:
        run = st.get_run(run_id)
        assert (run["study_name"], run["experiment"], run["model"]) == \
            (*LABELS[run_id][2], LABELS[run_id][1])


def _downgrade(st: Store) -> None:
    """Make ``st`` a schema-1 store: the runs table without the label columns."""
    with sqlite3.connect(st.db_path) as conn:
        for col in ("study_name", "experiment", "model"):
            conn.execute(f"ALTER TABLE runs DROP COLUMN {col}")
        conn.execute("PRAGMA user_version=1")


def _version(st: Store) -> int:
    with sqlite3.connect(st.db_path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def test_schema_1_store_reads_the_same_columns_then_migrates_on_write(tmp_path):
    st = Store(tmp_path / "s")
    _fill(st, ["r-var", "r-spa", "r-opt"])
    _downgrade(st)
    assert _version(st) == 1 and store_mod.SCHEMA_VERSION == 2
    old = _expected(["r-var", "r-spa", "r-opt"], models=False)  # an old run's kind: unknown
    # read only: the parts come from the labels, the file is not changed
    assert _none(_columns(st)) == old
    assert st.get_run("r-spa")["experiment"] == "static" and st.get_run("r-spa")["model"] is None
    assert _version(st) == 1
    # the first write migrates in its transaction: old rows filled, the new run complete
    _fill(st, ["r-len"])
    assert _version(st) == 2
    with sqlite3.connect(st.db_path) as conn:
        rows = dict((r[0], r[1:]) for r in conn.execute(
            "SELECT run_id, study_name, experiment, model FROM runs"))
    assert rows == {"r-var": ("variance", None, None), "r-spa": ("sparsifier", "static", None),
                    "r-opt": ("optimizer", "adam-static", None),
                    "r-len": ("lenet", "gated:300", "LeNet300")}
    assert _none(_columns(st)) == {**old, **_expected(["r-len"])}


def test_engine_and_module_runs_record_their_model_kind(tmp_path):
    from tests.engine.child_run import CONFIG, SPECS, synthetic
    from widthlab.engine.trainer import TrainConfig, train

    st = Store(tmp_path / "s")
    run_id = train(SPECS, TrainConfig(**{**CONFIG, "epochs": 1, "study": "mine:sweep"}), st,
                   data=synthetic(), progress=None)
    run = st.get_run(run_id)
    assert (run["study"], run["study_name"], run["experiment"], run["model"]) == \
        ("mine:sweep", "mine", "sweep", "MLPBank")


def test_a_module_run_records_its_module_class(tmp_path):
    import dataclasses

    from tests.engine.child_module_run import CONFIG, make_run
    from widthlab.engine.lifecycle import run_trainable

    run = make_run("cnn:bn", cfg=dataclasses.replace(CONFIG, epochs=1))
    run_id = run_trainable(run, tmp_path / "s", None)
    info = Store(tmp_path / "s").get_run(run_id)
    assert (info["study_name"], info["experiment"], info["model"]) == ("cnn", "bn", "SmallCNN")
