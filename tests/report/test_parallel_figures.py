"""The report's figures saved by forked workers: the same files as saving them in this
process, a failing figure named and turned into its study's explaining section."""

from __future__ import annotations

import multiprocessing as mp

import matplotlib.pyplot as plt
import numpy as np
import pytest

from widthlab.errors import UsageError
from widthlab.report.builder import report_workers, save_figures
from widthlab.studies.base import Figure

pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods(),
                                reason="forked workers need fork")


def _line(seed: int):
    def draw():
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(np.random.default_rng(seed).standard_normal(20))
        ax.set_title(f"seed {seed}")
        return fig
    return draw


def _broken():
    raise ValueError("no such column 'acc'")


def test_forked_workers_write_the_same_pngs_as_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDTHLAB_FIGURE_FORMATS", "png,svg")
    figs = [Figure(f"f{i}", "c", _line(i)) for i in range(5)]
    one = save_figures([(f, tmp_path / "one", f.key) for f in figs], workers=1)
    two = save_figures([(f, tmp_path / "two", f.key) for f in figs], workers=2)
    assert [p.name for p in one] == [p.name for p in two] == [f"f{i}.png" for i in range(5)]
    for a, b in zip(one, two, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.with_suffix(".svg").exists() and b.with_suffix(".svg").exists()
    # distinct figures, not one figure written five times
    assert len({p.read_bytes() for p in one}) == 5


def test_a_failing_figure_is_reported_by_name_and_the_others_are_saved(tmp_path):
    jobs = [(Figure("ok", "c", _line(0)), tmp_path, "ok"),
            (Figure("bad", "c", _broken), tmp_path, "bad"),
            (Figure("ok2", "c", _line(1)), tmp_path, "ok2")]
    out = save_figures(jobs, workers=2)
    assert out[0] == tmp_path / "ok.png" and out[2] == tmp_path / "ok2.png"
    assert isinstance(out[1], str) and "no such column 'acc'" in out[1] and "bad" in out[1]
    assert not (tmp_path / "bad.png").exists()


def test_report_workers_env(monkeypatch):
    monkeypatch.setenv("WIDTHLAB_REPORT_WORKERS", "3")
    assert report_workers() == 3
    monkeypatch.setenv("WIDTHLAB_REPORT_WORKERS", "two")
    with pytest.raises(UsageError, match="WIDTHLAB_REPORT_WORKERS"):
        report_workers()
    monkeypatch.delenv("WIDTHLAB_REPORT_WORKERS")
    assert 1 <= report_workers() <= 4


def test_figure_formats_png_by_default_svg_on_request(tmp_path, monkeypatch):
    monkeypatch.delenv("WIDTHLAB_FIGURE_FORMATS", raising=False)
    (png,) = save_figures([(Figure("a", "c", _line(0)), tmp_path / "d", "a")], workers=1)
    assert png.suffix == ".png" and not png.with_suffix(".svg").exists()
    monkeypatch.setenv("WIDTHLAB_FIGURE_FORMATS", "SVG")  # PNG is always written
    (png,) = save_figures([(Figure("a", "c", _line(0)), tmp_path / "s", "a")], workers=1)
    assert png.exists() and png.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    monkeypatch.setenv("WIDTHLAB_FIGURE_FORMATS", "png,pdf")
    (err,) = save_figures([(Figure("a", "c", _line(0)), tmp_path / "p", "a")], workers=1)
    assert isinstance(err, str) and "WIDTHLAB_FIGURE_FORMATS" in err and "pdf" in err
    assert not (tmp_path / "p").exists()  # nothing written for a bad setting
