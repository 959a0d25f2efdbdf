"""The report is drawn from the store alone: figures, embedded images, verdicts, errors."""

import base64
import re

import pytest

from tests.engine.child_run import synthetic
from widthlab.cli import main
from widthlab.data.tensors import DatasetSplits
from widthlab.engine import trainer
from widthlab.store import Store
from widthlab.studies import variance


def _named(name, seed):
    d = synthetic(seed=seed)
    return DatasetSplits(name, d.train, d.val, d.test, d.mean, d.std, d.seed)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    for name, seed in (("mnist", 0), ("fashion-mnist", 1)):
        variance.run(name, widths=[2, 4, 8, 16], seeds=3, epochs=2, store=root,
                     progress=False, data=_named(name, seed), batch_size=32, device="cpu")
    return root


def test_report_from_store_without_training(store, tmp_path, monkeypatch):
    def no_training(self):
        raise AssertionError("the report must not train")

    monkeypatch.setattr(trainer.Engine, "run", no_training)
    out = tmp_path / "r" / "report.html"
    assert main(["report", "--store", str(store), "-o", str(out)]) == 0
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    # 7 figures per dataset + the side-by-side comparison
    assert len(images) == 15
    for data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    figs = sorted(p.name for p in (tmp_path / "r" / "report-figures").iterdir())
    assert len([f for f in figs if f.endswith(".svg")]) == 15
    assert len([f for f in figs if f.endswith(".png")]) == 15
    assert not [f for f in figs if f.endswith(".tmp")]
    for claim in ("dead neurons grow with width", "total std grows logarithmically",
                  "most normal width", "FashionMNIST", "accuracy saturates"):
        assert claim in page
    assert page.count("code_version") == 2  # each run's config and code version


def test_report_of_named_runs_and_errors(store, tmp_path, capsys):
    st = Store(store)
    first = st.runs()["run_id"].iloc[0]
    out = tmp_path / "one.html"
    assert main(["report", first[:14], "--store", str(store), "-o", str(out)]) == 0
    assert len(re.findall(r"<img ", out.read_text())) == 7  # one dataset, no comparison
    assert main(["report", "nope", "--store", str(store), "-o", str(out)]) == 2
    empty = tmp_path / "empty"
    assert main(["report", "--store", str(empty), "-o", str(tmp_path / "x.html")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
