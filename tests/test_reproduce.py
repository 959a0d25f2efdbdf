"""`widthlab reproduce`: jobs in the journal's order, a report with contents and timings, and a
second invocation that trains nothing and keeps the report."""

from __future__ import annotations

import time

import pytest

import widthlab.reproduce as rp
from widthlab.cli import main
from widthlab.errors import UsageError
from widthlab.executors import Job
from widthlab.studies import ORDER

SMALL = (("widths", (8, 16, 22)), ("seeds", (0,)), ("epochs", 1), ("train_size", 2000),
         ("device", "cpu"))
# the PCA job analyses the variance job's sweep; its own conjecture sweep is kept small
PCA_SMALL = (("seeds", (0,)), ("conj_widths", (4, 8)), ("conj_seeds", 1), ("conj_train", 2000),
             ("conj_epochs", 1), ("device", "cpu"))


def test_jobs_follow_the_journal_order_and_needs():
    jobs = rp.jobs_for("quick", ["mnist", "fashion-mnist"])
    studies = list(dict.fromkeys(j.study for j in jobs))
    assert studies == [s for s in ORDER if s in studies] and studies[0] == "variance"
    pca = [j for j in jobs if j.study == "pca"]
    assert pca and all(j.needs == ("variance",) for j in pca)
    with pytest.raises(UsageError, match="unknown study"):
        rp.jobs_for("quick", ["mnist"], ["varience"])
    with pytest.raises(UsageError, match="profile"):
        rp.jobs_for("huge")


@pytest.mark.realdata
def test_second_invocation_trains_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rp, "jobs_for", lambda *a, **k: [
        Job("variance", "mnist", "quick", options=SMALL),
        Job("pca", "mnist", "quick", options=PCA_SMALL, needs=("variance",))])
    args = ["reproduce", "--store", str(tmp_path / "s"), "-o", str(tmp_path / "r.html")]
    assert main(args) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Contents" in page and "Timings and environment" in page
    assert "The journal concluded" in page and page.count("<img") >= 8
    first = capsys.readouterr().err
    assert "variance/mnist/quick" in first and "already stored" not in first
    # not a terminal: one plain line per job and per epoch of a run, with elapsed time and ETA
    assert "[1/2] variance/mnist/quick" in first and "epoch 1/1" in first and "eta" in first
    t0 = time.perf_counter()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("already stored") == 2 and "up to date" in err
    assert time.perf_counter() - t0 < 30
    assert main([*args, "-q"]) == 0  # --quiet: silent
    assert capsys.readouterr().err == ""
