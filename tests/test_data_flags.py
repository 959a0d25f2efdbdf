"""Issue 30: `--data` together with an explicit `--dataset` is a usage error (exit 2), not a
silent override; `--data` alone still works."""

from __future__ import annotations

import numpy as np
import pytest

from widthlab.cli import main


@pytest.fixture
def csv(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    rows = "\n".join(f"{a},{b},{c},{int(a > 0)}" for a, b, c in x)
    path = tmp_path / "mine.csv"
    path.write_text("f0,f1,f2,label\n" + rows + "\n")
    return path


@pytest.mark.parametrize("cmd", [
    ["train", "--dataset", "mnist"],
    ["study", "variance", "--dataset", "fashion-mnist"],
    ["reproduce", "--datasets", "mnist"],
    ["frontier", "--model", "m.pt", "--layer", "0", "--dataset", "mnist"],
])
def test_data_and_dataset_together_is_a_usage_error(tmp_path, capsys, csv, cmd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pt").write_bytes(b"")
    store = [] if cmd[0] == "frontier" else ["--store", str(tmp_path / "s")]
    rc = main([*cmd, "--data", str(csv), "--target", "label", *store])
    err = capsys.readouterr().err
    assert rc == 2, err
    flag = "--datasets" if "--datasets" in cmd else "--dataset"
    assert f"--data {csv} and {flag} both name the data" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()  # refused before anything was stored


def test_data_alone_still_trains(tmp_path, csv, capsys):
    rc = main(["train", "--data", str(csv), "--target", "label", "--epochs", "1", "--widths",
               "4", "--seeds", "1", "--store", str(tmp_path / "s"), "-q"])
    assert rc == 0, capsys.readouterr().err
