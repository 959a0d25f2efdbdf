"""The results store: round trips, atomic epochs, checkpoints, rollback, two writers, the CLI."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import widthlab.store.sqlite as store_mod
from widthlab.cli import app, main
from widthlab.errors import UsageError, WidthlabError
from widthlab.store import ArrayRow, MetricRow, Store

MODELS = [
    {"name": "w8", "arch": [8], "seed": 0, "variant": "plain", "options": {"lr": 0.1}},
    {"name": "w16", "arch": [16, 4], "seed": 1, "variant": "dropout", "options": {"p": 0.5}},
]


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch):
    monkeypatch.delenv("WIDTHLAB_STORE", raising=False)


def new_run(store: Store, run_id: str = "run-a", models=MODELS) -> str:
    store.create_run(run_id, study="sweep", dataset="mnist", config={"lr": 0.1, "epochs": 3},
                     models=models, seed=7, device="cpu", precision="float32",
                     code_version="test 1")
    return run_id


def epoch_metrics(epoch: int, n_models: int = 2) -> list[MetricRow]:
    rows = []
    for m in range(n_models):
        for split in ("val", "test"):
            rows += [MetricRow(m, epoch, split, "loss", 1.0 / (epoch + m + 1)),
                     MetricRow(m, epoch, split, "acc", 0.5 + 0.1 * epoch + 0.01 * m)]
    return rows


def count(store: Store, sql: str, *params) -> int:
    with sqlite3.connect(store.db_path) as conn:
        return conn.execute(sql, params).fetchone()[0]


# ------------------------------------------------------------------------------ round trip
def test_runs_and_models_round_trip(tmp_path):
    store = Store(tmp_path / "s")
    new_run(store)
    run = store.get_run("run-a")
    assert run["config"] == {"lr": 0.1, "epochs": 3}
    assert (run["status"], run["epochs_done"], run["timings"]) == ("running", 0, {})
    assert (run["study"], run["dataset"], run["seed"], run["precision"]) == \
        ("sweep", "mnist", 7, "float32")
    assert run["host"] and run["created_at"] and run["finished_at"] is None
    assert store.get_run("nope") is None

    models = store.models("run-a")
    assert models["model"].tolist() == [0, 1]
    assert models["arch"].tolist() == [[8], [16, 4]]
    assert models["width"].tolist() == [8, 16]
    assert models["options"].tolist() == [{"lr": 0.1}, {"p": 0.5}]
    assert models["status"].tolist() == ["ok", "ok"]

    runs = store.runs()
    assert runs[["run_id", "status", "n_models", "n_failed"]].values.tolist() == \
        [["run-a", "running", 2, 0]]

    store.finish_run("run-a", timings={"train_s": 1.5})
    run = store.get_run("run-a")
    assert run["status"] == "done" and run["finished_at"] and run["timings"] == {"train_s": 1.5}

    with pytest.raises(UsageError, match="already exists"):
        new_run(store)
    with pytest.raises(UsageError, match="invalid run id"):
        new_run(store, "bad/id")
    with pytest.raises(UsageError, match="give 'name' and 'arch'"):
        new_run(store, "run-b", models=[{"name": "x", "arch": [3], "widht": 3}])


def test_metrics_and_arrays_round_trip_bit_exact(tmp_path):
    store = Store(tmp_path / "s")
    new_run(store)
    rng = np.random.default_rng(0)
    f64 = rng.standard_normal(8)
    f64[[1, 5]] = [np.nan, np.inf]
    f32 = rng.standard_normal(16).astype(np.float32)
    f32[3] = -0.0
    big_endian = np.arange(6, dtype=">f8").reshape(2, 3)
    flags = np.array([True, False, True])
    store.commit_epoch("run-a", 1, metrics=[
        MetricRow(0, 1, "val", "loss", 0.25), MetricRow(0, 1, "val", "acc", math.nan),
        MetricRow(1, 1, "val", "loss", 0.5),
    ], arrays=[
        ArrayRow(0, 1, "std", f64), ArrayRow(1, 1, "std", f32),
        ArrayRow(0, 1, "cov", big_endian), ArrayRow(1, 1, "dead", flags),
        ArrayRow(1, 1, "scale", torch.tensor([1.5, 2.5])),
    ])

    long = store.metrics("run-a")
    assert list(long.columns) == ["model", "epoch", "split", "name", "value"]
    assert len(long) == 3
    acc = long[(long.model == 0) & (long.name == "acc")]["value"]
    assert acc.dtype == np.float64 and np.isnan(acc.item())
    assert long[(long.model == 1) & (long.name == "loss")]["value"].item() == 0.5

    back64, back32 = store.array("run-a", 0, "std"), store.array("run-a", 1, "std")
    assert back64.dtype == np.float64 and back64.tobytes() == f64.tobytes()
    assert back32.dtype == np.float32 and back32.tobytes() == f32.tobytes()
    cov = store.array("run-a", 0, "cov", epoch=1)
    assert cov.shape == (2, 3) and cov.dtype == np.dtype("<f8")
    np.testing.assert_array_equal(cov, big_endian)
    np.testing.assert_array_equal(store.array("run-a", 1, "dead"), flags)
    np.testing.assert_array_equal(store.array("run-a", 1, "scale"), [1.5, 2.5])
    back64[0] = 99.0  # the returned array is writable and a copy
    assert store.array("run-a", 0, "std")[0] == f64[0]

    with pytest.raises(UsageError, match=r"no array 'mean' of model 0.*stored arrays: cov, dead"):
        store.array("run-a", 0, "mean")
    with pytest.raises(UsageError, match="at epoch 2"):
        store.arrays("run-a", "std", epoch=2)
    with pytest.raises(UsageError, match="no run 'run-z'"):
        store.metrics("run-z")


def test_array_latest_epoch_and_per_model(tmp_path):
    store = Store(tmp_path / "s")
    new_run(store)
    for epoch in (1, 2, 3):
        arrays = [ArrayRow(0, epoch, "std", np.full(8, float(epoch)))]
        if epoch < 3:  # model 1 stops storing after epoch 2
            arrays.append(ArrayRow(1, epoch, "std", np.full(16, 10.0 + epoch)))
        store.commit_epoch("run-a", epoch, arrays=arrays)
    assert store.array("run-a", 0, "std")[0] == 3.0
    assert store.array("run-a", 0, "std", epoch=1)[0] == 1.0
    latest = store.arrays("run-a", "std")
    assert sorted(latest) == [0, 1]
    assert latest[0][0] == 3.0 and latest[1][0] == 12.0  # each model's own latest epoch
    assert sorted(store.arrays("run-a", "std", epoch=3)) == [0]

    neurons = store.neurons("run-a")
    assert list(neurons.columns) == ["model", "epoch", "name", "neuron", "value"]
    assert len(neurons) == 3 * 8 + 2 * 16
    row = neurons[(neurons.model == 1) & (neurons.epoch == 2) & (neurons.neuron == 15)]
    assert row["value"].item() == 12.0


def test_wide_metrics(tmp_path):
    store = Store(tmp_path / "s")
    new_run(store)
    for epoch in (1, 2, 3):
        rows = epoch_metrics(epoch)
        if epoch == 2:
            rows.append(MetricRow(1, 2, "val", "dead", 4.0))  # only one row has this metric
        store.commit_epoch("run-a", epoch, metrics=rows)
    wide = store.metrics("run-a", wide=True)
    assert wide.shape == (2 * 3 * 2, 7 + 3)
    assert list(wide.columns[:7]) == ["model", "name", "width", "seed", "variant", "epoch",
                                      "split"]
    assert set(wide.columns[7:]) == {"acc", "loss", "dead"}
    row = wide[(wide.model == 1) & (wide.epoch == 3) & (wide.split == "test")].iloc[0]
    assert (row["name"], row["width"], row["seed"], row["variant"]) == ("w16", 16, 1, "dropout")
    assert row["loss"] == pytest.approx(1 / 5) and row["acc"] == pytest.approx(0.81)
    assert math.isnan(row["dead"])
    assert wide["dead"].notna().sum() == 1
    # The long frame holds the same numbers.
    long = store.metrics("run-a")
    assert len(long) == wide[["acc", "loss", "dead"]].notna().sum().sum()


def test_missing_store_is_not_created_by_reads(tmp_path):
    store = Store(tmp_path / "nowhere")
    assert store.runs().empty and "run_id" in store.runs().columns
    assert store.get_run("x") is None
    assert store.latest_checkpoint("x") is None
    with pytest.raises(UsageError, match="no runs in"):
        store.resolve("x")
    with pytest.raises(UsageError, match="no run 'x'"):
        store.metrics("x")
    assert not (tmp_path / "nowhere").exists()


def test_resolve_prefixes(tmp_path):
    store = Store(tmp_path / "s")
    for run_id in ("abc-1", "abc-2", "abd", "ab"):
        new_run(store, run_id)
    assert store.resolve("abd") == "abd"
    assert store.resolve("abc-2") == "abc-2"
    assert store.resolve("ab") == "ab"  # exact match wins over longer ids
    with pytest.raises(UsageError, match=r"'abc' is ambiguous.*abc-1, abc-2.*runs list --store"):
        store.resolve("abc")
    with pytest.raises(UsageError, match=r"no run 'zz' in .*widthlab runs list --store"):
        store.resolve("zz")
    with pytest.raises(UsageError, match="no run 'a%'"):  # no LIKE wildcards
        store.resolve("a%")


# ---------------------------------------------------------------------------- atomicity
def test_commit_epoch_is_atomic_on_bad_array(tmp_path):
    store = Store(tmp_path / "s")
    new_run(store)
    store.commit_epoch("run-a", 1, metrics=epoch_metrics(1), timings={"train_s": 1.0})
    before = store.metrics("run-a")
    # The metrics are inserted first; the object array fails afterwards, inside the transaction.
    with pytest.raises(UsageError, match="dtype object cannot be stored"):
        store.commit_epoch("run-a", 2, metrics=epoch_metrics(2), timings={"train_s": 2.0},
                           arrays=[ArrayRow(0, 2, "std", np.ones(8)),
                                   ArrayRow(1, 2, "std", np.array([{}, "x"], dtype=object))])
    pd.testing.assert_frame_equal(store.metrics("run-a"), before)
    assert count(store, "SELECT count(*) FROM arrays") == 0
    run = store.get_run("run-a")
    assert run["epochs_done"] == 1 and run["timings"] == {"train_s": 1.0}


def test_commit_epoch_is_atomic_on_late_failure(tmp_path, monkeypatch):
    store = Store(tmp_path / "s")
    new_run(store)
    path = store.save_checkpoint("run-a", 1, {"w": torch.ones(2)})
    store.commit_epoch("run-a", 1, metrics=epoch_metrics(1), checkpoint=path)

    def broken(self, conn, run_id, timings):  # fails after metrics, arrays and failures
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Store, "_merge_timings", broken)
    path2 = store.save_checkpoint("run-a", 2, {"w": torch.zeros(2)})
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.commit_epoch("run-a", 2, metrics=epoch_metrics(2), checkpoint=path2,
                           arrays=[ArrayRow(0, 2, "std", np.ones(8))], failures=[(1, 2, "nan")])
    assert store.metrics("run-a")["epoch"].unique().tolist() == [1]
    assert count(store, "SELECT count(*) FROM arrays") == 0
    assert store.models("run-a")["status"].tolist() == ["ok", "ok"]
    assert store.get_run("run-a")["epochs_done"] == 1
    assert path.exists()  # the committed checkpoint was not dropped
    assert store.latest_checkpoint("run-a")[0] == 1


def test_unknown_model_is_a_usage_error_and_rolls_back(tmp_path):
    store = Store(tmp_path / "s")
    new_run(store)
    with pytest.raises(UsageError, match="must name models of the run"):
        store.commit_epoch("run-a", 1, metrics=[MetricRow(0, 1, "val", "acc", 0.5),
                                                MetricRow(5, 1, "val", "acc", 0.5)])
    with pytest.raises(UsageError, match="no model 7"):
        store.commit_epoch("run-a", 1, metrics=epoch_metrics(1), failures=[(7, 1, "nan")])
    assert store.metrics("run-a").empty
    with pytest.raises(UsageError, match="no run 'run-z'"):
        store.commit_epoch("run-z", 1)


# -------------------------------------------------------------------------- checkpoints
def test_checkpoints_save_commit_latest_and_prune(tmp_path):
    store = Store(tmp_path / "s")
    new_run(store)
    new_run(store, "run-b")
    assert store.latest_checkpoint("run-a") is None
    other = store.save_checkpoint("run-b", 1, {"b": 1})
    store.commit_epoch("run-b", 1, checkpoint=other)

    p1 = store.save_checkpoint("run-a", 1, {"w": torch.arange(3.0), "epoch": 1})
    assert p1 == store.root / "checkpoints" / "run-a-e0001.pt"
    store.commit_epoch("run-a", 1, metrics=epoch_metrics(1), checkpoint=p1)
    epoch, state = store.latest_checkpoint("run-a")
    assert epoch == 1 and torch.equal(state["w"], torch.arange(3.0))

    p2 = store.save_checkpoint("run-a", 2, {"w": torch.arange(4.0), "epoch": 2})
    store.commit_epoch("run-a", 2, checkpoint=p2)
    assert not p1.exists() and p2.exists() and other.exists()
    epoch, state = store.latest_checkpoint("run-a")
    assert epoch == 2 and state["epoch"] == 2
    assert count(store, "SELECT count(*) FROM checkpoints WHERE run_id = 'run-a'") == 1
    assert not list((store.root / "checkpoints").glob("*.tmp"))

    with pytest.raises(UsageError, match="not inside the store"):
        outside = tmp_path / "x.pt"
        outside.write_bytes(b"x")
        store.commit_epoch("run-a", 3, checkpoint=outside)

    data = bytearray(p2.read_bytes())
    data[len(data) // 2] ^= 0x01
    p2.write_bytes(bytes(data))  # corrupt the newest (and only) file
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert store.latest_checkpoint("run-a") is None
    p2.unlink()
    with pytest.warns(RuntimeWarning, match="missing"):
        assert store.latest_checkpoint("run-a") is None


def test_corrupt_newest_falls_back_to_older_record(tmp_path, monkeypatch):
    """A crash between the commit and the pruning leaves two records; the older one is used."""
    store = Store(tmp_path / "s")
    new_run(store)
    monkeypatch.setattr(Store, "_drop_checkpoints", lambda *a: None)
    for epoch in (1, 2):
        path = store.save_checkpoint("run-a", epoch, {"epoch": epoch})
        store.commit_epoch("run-a", epoch, checkpoint=path)
    path.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="e0002.pt .*corrupt"):
        assert store.latest_checkpoint("run-a") == (1, {"epoch": 1})


# -------------------------------------------------------------------- rollback, delete
def test_rollback(tmp_path):
    store = Store(tmp_path / "s")
    new_run(store)
    for epoch in range(1, 6):
        failures = [(1, 4, "loss is nan")] if epoch == 4 else []
        failures += [(0, 2, "diverged")] if epoch == 2 else []
        path = store.save_checkpoint("run-a", epoch, {"epoch": epoch})
        store.commit_epoch("run-a", epoch, metrics=epoch_metrics(epoch), checkpoint=path,
                           arrays=[ArrayRow(0, epoch, "std", np.ones(8))], failures=failures)
    store.finish_run("run-a", "failed")
    assert store.models("run-a")["status"].tolist() == ["failed", "failed"]

    store.rollback("run-a", 3)
    assert store.metrics("run-a")["epoch"].max() == 3
    assert len(store.metrics("run-a")) == 3 * len(epoch_metrics(1))
    assert sorted(store.neurons("run-a")["epoch"].unique()) == [1, 2, 3]
    models = store.models("run-a")
    assert models["status"].tolist() == ["failed", "ok"]  # model 0 failed at 2 <= 3
    assert models["failed_epoch"].isna().tolist() == [False, True]
    run = store.get_run("run-a")
    assert (run["epochs_done"], run["status"], run["finished_at"]) == (3, "running", None)
    # The epoch-5 checkpoint describes a state that no longer exists.
    assert store.latest_checkpoint("run-a") is None
    assert not list((store.root / "checkpoints").glob("run-a-*"))


def test_delete_run(tmp_path):
    store = Store(tmp_path / "s")
    new_run(store)
    new_run(store, "run-ab")
    for run_id in ("run-a", "run-ab"):
        path = store.save_checkpoint(run_id, 1, {})
        store.commit_epoch(run_id, 1, metrics=epoch_metrics(1), checkpoint=path,
                           arrays=[ArrayRow(0, 1, "std", np.ones(8))])
    stray = store.save_checkpoint("run-a", 2, {})  # saved, never committed
    store.delete_run("run-a")
    assert store.runs()["run_id"].tolist() == ["run-ab"]
    for table in ("models", "metrics", "arrays", "checkpoints"):
        assert count(store, f"SELECT count(*) FROM {table} WHERE run_id = 'run-a'") == 0
        assert count(store, f"SELECT count(*) FROM {table} WHERE run_id = 'run-ab'") > 0
    assert not stray.exists()
    assert [p.name for p in (store.root / "checkpoints").iterdir()] == ["run-ab-e0001.pt"]
    with pytest.raises(UsageError, match="no run 'run-a'"):
        store.delete_run("run-a")


# ---------------------------------------------------------------------- two processes
WRITER = textwrap.dedent("""
    import pathlib, sys, time
    import numpy as np
    from widthlab.store import ArrayRow, MetricRow, Store

    root, tag = sys.argv[1], sys.argv[2]
    go = pathlib.Path(root).parent / "go"
    (pathlib.Path(root).parent / f"ready-{tag}").write_text("")
    while not go.exists():
        time.sleep(0.005)
    store = Store(root)
    run_id = f"run-{tag}"
    store.create_run(run_id, study="c", dataset="d", config={"tag": tag}, seed=0,
                     device="cpu", precision="float32", code_version="t",
                     models=[{"name": f"m{i}", "arch": [4]} for i in range(3)])
    for epoch in range(1, 51):
        metrics = [MetricRow(m, epoch, s, n, epoch + m / 10)
                   for m in range(3) for s in ("val", "test") for n in ("loss", "acc")]
        arrays = [ArrayRow(m, epoch, "std", np.full(4, epoch, dtype=np.float32))
                  for m in range(3)]
        store.commit_epoch(run_id, epoch, metrics=metrics, arrays=arrays,
                           timings={"epoch": epoch})
    store.finish_run(run_id)
""")


@pytest.mark.slow
def test_two_processes_write_concurrently(tmp_path):
    root = tmp_path / "s"  # does not exist yet: both processes race to create it
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), tag],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("x", "y")]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{t}").exists() for t in "xy"):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [p.communicate() for p in procs]
        time.sleep(0.01)
    (tmp_path / "go").write_text("")
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err

    store = Store(root)
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION == 2
    runs = store.runs().set_index("run_id")
    assert sorted(runs.index) == ["run-x", "run-y"]
    for run_id in runs.index:
        assert runs.loc[run_id, "status"] == "done" and runs.loc[run_id, "epochs_done"] == 50
        assert store.get_run(run_id)["timings"] == {"epoch": 50}
        long = store.metrics(run_id)
        assert len(long) == 50 * 3 * 2 * 2
        expected = {(m, e, s, n): e + m / 10 for m in range(3) for e in range(1, 51)
                    for s in ("val", "test") for n in ("loss", "acc")}
        got = {(r.model, r.epoch, r.split, r.name): r.value for r in long.itertuples()}
        assert got == expected
        assert len(store.neurons(run_id)) == 50 * 3 * 4


# ------------------------------------------------------------------------------ export
def filled_store(tmp_path) -> Store:
    store = Store(tmp_path / "s")
    new_run(store, "sweep-mnist-0123")
    for epoch in (1, 2):
        failures = [(1, 2, "loss is nan")] if epoch == 2 else []
        store.commit_epoch("sweep-mnist-0123", epoch, metrics=epoch_metrics(epoch),
                           failures=failures,
                           arrays=[ArrayRow(0, epoch, "std", np.linspace(0, 1, 8)),
                                   ArrayRow(1, epoch, "std", np.arange(16, dtype=np.float32)),
                                   ArrayRow(1, epoch, "cov", np.eye(2))])
    store.finish_run("sweep-mnist-0123", timings={"train_s": 3.25})
    return store


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trip(tmp_path, fmt):
    store = filled_store(tmp_path)
    out = tmp_path / "out" / "nested"
    paths = store.export("sweep-mnist-0123", out, fmt)
    assert [p.name for p in paths] == [f"sweep-mnist-0123-{part}.{fmt}"
                                       for part in ("models", "metrics", "neurons")]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temps
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    models, metrics, neurons = (read(p) for p in paths)

    assert models["arch"].map(json.loads).tolist() == [[8], [16, 4]]
    assert models["options"].map(json.loads).tolist() == [{"lr": 0.1}, {"p": 0.5}]
    assert models["status"].tolist() == ["ok", "failed"]
    pd.testing.assert_frame_equal(metrics, store.metrics("sweep-mnist-0123", wide=True),
                                  check_dtype=False)
    expected = store.neurons("sweep-mnist-0123")
    assert len(expected) == 2 * (8 + 16)  # the 2-D 'cov' is not a per-neuron array
    pd.testing.assert_frame_equal(neurons, expected, check_dtype=False)

    with pytest.raises(UsageError, match="unknown export format 'xlsx'"):
        store.export("sweep-mnist-0123", out, "xlsx")


# --------------------------------------------------------------------------------- CLI
def test_cli_list_show_export(tmp_path):
    store = filled_store(tmp_path)
    new_run(store, "other-run")
    runner = CliRunner()

    result = runner.invoke(app, ["runs", "list", "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    assert "sweep-mnist-0123" in result.output and "other-run" in result.output
    assert "done" in result.output and "running" in result.output

    result = runner.invoke(app, ["runs", "show", "sweep", "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "run_id: sweep-mnist-0123" in out and '"epochs": 3' in out  # fields and config
    assert "train_s" in out and "loss is nan" in out and "failed" in out
    assert "val acc (epoch)" in out and "0.7000 (2)" in out and "0.7100 (2)" in out

    out_dir = tmp_path / "exported"
    result = runner.invoke(app, ["runs", "export", "sweep-mnist", "--format", "parquet",
                                 "--out", str(out_dir)], env={"WIDTHLAB_STORE": str(store.root)})
    assert result.exit_code == 0, result.output
    printed = result.output.split()
    assert printed == [str(out_dir / f"sweep-mnist-0123-{p}.parquet")
                       for p in ("models", "metrics", "neurons")]
    pd.testing.assert_frame_equal(pd.read_parquet(printed[1]),
                                  store.metrics("sweep-mnist-0123", wide=True),
                                  check_dtype=False)


def test_cli_default_store_and_csv_export(tmp_path, monkeypatch):
    filled_store(tmp_path)
    (tmp_path / "s").rename(tmp_path / "widthlab-runs")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["runs", "export", "sweep-mnist-0123"])
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(tmp_path / "sweep-mnist-0123-metrics.csv")
    expected = Store("widthlab-runs").metrics("sweep-mnist-0123", wide=True)
    pd.testing.assert_frame_equal(metrics, expected, check_dtype=False)


def test_main_exit_codes(tmp_path, capsys):
    store = filled_store(tmp_path)
    root = str(store.root)
    assert main(["runs", "list", "--store", root]) == 0
    assert main(["runs", "show", "sweep-mnist-0123", "--store", root]) == 0
    capsys.readouterr()

    assert main(["runs", "show", "nope", "--store", root]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("widthlab: error: no run 'nope' in ")
    assert f"widthlab runs list --store {root}" in err[0]

    assert main(["runs", "export", "nope", "--store", root]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

    assert main(["runs", "export", "sweep", "--format", "xlsx", "--store", root]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "xlsx" in err[0]

    missing = str(tmp_path / "missing")
    assert main(["runs", "list", "--store", missing]) == 0
    assert "no runs in" in capsys.readouterr().out
    assert main(["runs", "show", "x", "--store", missing]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no runs in" in err[0]
    assert not (tmp_path / "missing").exists()


def test_schema_from_the_future_is_refused(tmp_path):
    store = Store(tmp_path / "s")
    new_run(store)
    with sqlite3.connect(store.db_path) as conn:
        conn.execute(f"PRAGMA user_version={store_mod.SCHEMA_VERSION + 1}")
    with pytest.raises(UsageError, match="newer than this widthlab"):
        store.runs()


def test_dump_and_load_runs_copy_everything(tmp_path):
    from tests.engine.child_run import CONFIG, SPECS, synthetic
    from widthlab.engine.trainer import TrainConfig, train

    src = Store(tmp_path / "a")
    run_id = train(SPECS, TrainConfig(**{**CONFIG, "epochs": 2}), src, data=synthetic(),
                   progress=False)
    dump = src.dump_runs([run_id])
    dst = Store(tmp_path / "b")
    assert dst.load_runs(dump) == [run_id]
    assert dst.load_runs(dump) == []  # already there: kept
    for table in ("runs", "models", "metrics", "arrays", "checkpoints"):
        rows = [sorted(sqlite3.connect(s.db_path).execute(f"SELECT * FROM {table}").fetchall(),
                       key=repr) for s in (src, dst)]
        assert rows[0] == rows[1], table
    a, b = src.latest_checkpoint(run_id), dst.latest_checkpoint(run_id)
    assert a[0] == b[0] and all(torch.equal(a[1]["bank"][k], b[1]["bank"][k])
                                for k in a[1]["bank"])
    bad = src.dump_runs([run_id])
    rel = next(iter(bad["files"]))
    bad["files"][rel] = b"corrupt"
    with pytest.raises(WidthlabError, match="corrupt"):
        Store(tmp_path / "c").load_runs(bad)
    assert Store(tmp_path / "c").runs().empty  # nothing half-loaded


class _Evil:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        import os

        return (os.makedirs, (self.target,))


def test_replaced_checkpoint_runs_no_code(tmp_path):
    """Issue 30: a checkpoint replaced by a pickled object (its hash row updated to match)
    is read weights-only: nothing in it runs, and it is skipped like a corrupt one."""
    import sqlite3

    from widthlab.store.sqlite import _sha256_file

    store = Store(tmp_path / "s")
    new_run(store)
    p1 = store.save_checkpoint("run-a", 1, {"w": torch.arange(3.0)})
    store.commit_epoch("run-a", 1, metrics=epoch_metrics(1), checkpoint=p1)
    assert torch.equal(store.latest_checkpoint("run-a")[1]["w"], torch.arange(3.0))
    marker = tmp_path / "pwned"
    torch.save({"w": _Evil(marker)}, p1)
    with sqlite3.connect(store.root / "widthlab.sqlite") as conn:
        conn.execute("UPDATE checkpoints SET sha256 = ?", (_sha256_file(p1),))
    with pytest.warns(RuntimeWarning, match="not a weights-only checkpoint"):
        assert store.latest_checkpoint("run-a") is None
    assert not marker.exists()
