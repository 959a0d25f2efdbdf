"""Item 3: one small run cannot block the whole report: its section says why (and stderr names
the run), the good sections are written."""

from __future__ import annotations

from dataclasses import replace

import torch

from tests.engine.child_run import synthetic
from widthlab.cli import main
from widthlab.studies import sparsifier, variance


def test_an_undrawable_run_is_named_and_the_rest_is_written(tmp_path, capsys):
    torch.set_num_threads(1)
    store = tmp_path / "s"
    data = replace(synthetic(n_train=320, seed=0), name="mnist")
    # two widths, one seed, one epoch: too few points for the variance study's trend fits
    small = variance.run("mnist", "quick", store=store, data=data, device="cpu",
                         widths=(16, 32), seeds=1, epochs=1, train_size=None)
    good = sparsifier.run("mnist", "quick", store=store, data=data, device="cpu",
                          prices=(0.0, 1e-2), starts=(16, 32), start_prices=(1e-2,),
                          seeds=1, epochs=2, train_size=None, batch_size=32)
    capsys.readouterr()
    out = tmp_path / "r.html"
    assert main(["report", "--store", str(store), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    page = out.read_text()
    bad = small["sweep"] if "sweep" in small else small.ids()[0]
    assert f"could not be drawn from runs {bad}" in err and "Traceback" not in err
    assert "could not be drawn" in page and bad in page
    assert "Sparsifier networks: MNIST" in page  # the good runs are reported
    assert good["lambda-sweep"] in page and page.count("<img ") >= 3
