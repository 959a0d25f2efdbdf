"""A user's own data through every entry point: the same arrays given as arrays, an .npz and a
CSV train to identical stored numbers; bad files exit 2 with one line and write nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from widthlab.cli import main
from widthlab.data import from_arrays, load_data
from widthlab.engine import TrainConfig, train
from widthlab.nn import ModelSpec
from widthlab.store import Store


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 37))                         # 37 inputs
    y = (x[:, :3] @ rng.normal(size=(3, 3))).argmax(1)    # 3 classes
    return x, y


def _files(tmp_path, x, y):
    npz = tmp_path / "mine.npz"
    np.savez(npz, x=x, y=y)
    csv = tmp_path / "mine.csv"
    pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])]).assign(label=y).to_csv(
        csv, index=False)
    return npz, csv


def test_arrays_npz_and_csv_train_to_identical_numbers(arrays, tmp_path):
    torch.set_num_threads(1)
    x, y = arrays
    npz, csv = _files(tmp_path, x, y)
    sources = {"arrays": from_arrays(x, y, name="mine"), "npz": load_data(npz),
               "csv": load_data(csv, target="label")}
    specs = [ModelSpec((w,), seed=s) for w in (4, 16) for s in (0, 1)]
    cfg = TrainConfig(dataset="mine", epochs=2, batch_size=32, device="cpu", val_size=0)
    ids, tables = {}, {}
    for kind, data in sources.items():
        assert (data.n_features, data.n_classes) == (37, 3)
        ids[kind] = train(specs, cfg, tmp_path / kind, data=data)
        tables[kind] = Store(tmp_path / kind).metrics(ids[kind])
    assert len(set(ids.values())) == 1  # the run id hashes the content, not the format
    for kind in ("npz", "csv"):
        pd.testing.assert_frame_equal(tables[kind], tables["arrays"])
    info = Store(tmp_path / "csv").get_run(ids["csv"])
    assert info["config"]["data"]["n_features"] == 37 and info["config"]["data"]["n_classes"] == 3
    # a changed value is another dataset: another run
    x2 = x.copy()
    x2[0, 0] += 1.0
    other = train(specs, cfg, tmp_path / "arrays", data=from_arrays(x2, y, name="mine"))
    assert other != ids["arrays"]


def test_cli_train_on_a_csv(arrays, tmp_path, capsys):
    x, y = arrays
    _, csv = _files(tmp_path, x, y)
    store = tmp_path / "store"
    assert main(["train", "--data", str(csv), "--target", "label", "--widths", "4,8",
                 "--seeds", "1", "--epochs", "1", "--store", str(store), "--device", "cpu",
                 "-q"]) == 0
    run_id = capsys.readouterr().out.split()[-1]
    assert Store(store).get_run(run_id)["dataset"] == "mine"


def _bad_cases(tmp_path, x, y):
    nan = x.copy()
    nan[5, 2] = np.nan
    cases = {"nan": ({"x": nan, "y": y}, "NaN"), "inf": ({"x": x * np.inf, "y": y}, "inf"),
             "negative": ({"x": x, "y": y - 1}, "negative"),
             "fraction": ({"x": x, "y": y + 0.5}, "integer"),
             "one-class": ({"x": x, "y": np.zeros_like(y)}, "class"),
             "lengths": ({"x": x, "y": y[:-3]}, "")}
    out = {}
    for name, (arrs, what) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrs)
        out[name] = ([str(path)], what)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    out["empty"] = ([str(empty), "--target", "label"], "empty")
    _, csv = _files(tmp_path, x, y)
    out["column"] = ([str(csv), "--target", "lbl"], "lbl")
    tiny = tmp_path / "tiny.npz"
    np.savez(tiny, x=x[:2], y=np.array([0, 1]))
    out["too-few"] = ([str(tiny)], "")
    return out


def test_bad_data_exits_2_with_one_line_and_writes_nothing(arrays, tmp_path, capsys):
    x, y = arrays
    for name, (args, what) in _bad_cases(tmp_path, x, y).items():
        store = tmp_path / f"store-{name}"
        for cmd in (["train"], ["study", "sparsifier", "--epochs", "1"]):
            code = main([*cmd, "--data", *args, "--store", str(store), "-q"])
            err = capsys.readouterr().err.strip()
            assert code == 2, (name, cmd, err)
            assert len(err.splitlines()) == 1 and err.startswith("widthlab: error: "), err
            assert args[0] in err and what in err, (name, err)
            assert "Traceback" not in err and not store.exists(), name


def test_reproduce_on_a_users_file(arrays, tmp_path, capsys):
    x, y = arrays
    npz, _ = _files(tmp_path, x, y)
    args = ["reproduce", "--data", str(npz), "--studies", "variance,sparsifier", "--store",
            str(tmp_path / "s"), "-o", str(tmp_path / "r.html"), "-q"]
    assert main(args) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Variance study: mine" in page and "Sparsifier networks: mine" in page
    runs = Store(tmp_path / "s").runs()
    assert set(runs.dataset) == {"mine"} and (runs.status == "done").all()
    assert main(args) == 0  # the same file: every job is found done, nothing trains
    assert len(Store(tmp_path / "s").runs()) == len(runs)
