"""Issue 30: runs that fail `runs check` are named in the report itself; when every run is
left out, `widthlab report` exits 1 (the page that names them is still written)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.engine.child_run import synthetic
from widthlab.cli import main
from widthlab.store import Store
from widthlab.studies import variance


@pytest.fixture
def one_run(tmp_path):
    torch.set_num_threads(1)
    store = tmp_path / "s"
    data = replace(synthetic(n_train=160, seed=0), name="mnist")
    runs = variance.run("mnist", "quick", store=store, data=data, device="cpu",
                        widths=(8, 16), seeds=1, epochs=1, train_size=None)
    return store, runs.ids()[0]


def test_every_run_left_out_exits_1_and_the_page_names_it(tmp_path, capsys, one_run):
    store, run = one_run
    ckpt = next((store / "checkpoints").glob("*.pt"))
    ckpt.write_bytes(ckpt.read_bytes()[:-10] + b"0123456789")  # fails runs check
    capsys.readouterr()
    out = tmp_path / "r.html"
    assert main(["report", "--store", str(store), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("widthlab: error: every run was left out") and run in last
    assert "--repair" in last and str(out) in last
    page = out.read_text()
    assert "Runs left out of this report" in page and run in page and "sha256" in page


def test_a_healthy_store_has_no_left_out_section(tmp_path, capsys, one_run):
    store, run = one_run
    assert Store.open(store).check([run]) == []
    out = tmp_path / "r.html"
    main(["report", "--store", str(store), "-o", str(out)])  # a 1-epoch run may not draw
    assert "Runs left out" not in out.read_text()
