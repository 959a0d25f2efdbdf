"""The report is drawn from the store alone: figures, embedded images, verdicts, errors."""

import base64
import re

from widthlab.cli import main
from widthlab.engine import trainer
from widthlab.store import Store


def test_report_from_store_without_training(store, tmp_path, monkeypatch):
    def no_training(self):
        raise AssertionError("the report must not train")

    monkeypatch.setattr(trainer.Engine, "run", no_training)
    out = tmp_path / "r" / "report.html"
    assert main(["report", "--store", str(store), "-o", str(out)]) == 0
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    # 8 figures per dataset + the side-by-side comparison
    assert len(images) == 17
    for data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    figs = sorted(p.name for p in (tmp_path / "r" / "report-figures").iterdir())
    assert not [f for f in figs if f.endswith(".svg")]  # SVG only on request
    assert len([f for f in figs if f.endswith(".png")]) == 17
    assert not [f for f in figs if f.endswith(".tmp")]
    for claim in ("dead neurons grow with width", "total std grows logarithmically",
                  "most normal width", "FashionMNIST", "accuracy saturates",
                  "turns closest to the test accuracy plateau"):
        assert claim in page
    assert page.count("code_version") == 2  # each run's config and code version


def test_report_of_named_runs_and_errors(store, tmp_path, capsys):
    st = Store(store)
    first = st.runs()["run_id"].iloc[0]
    out = tmp_path / "one.html"
    assert main(["report", first[:14], "--store", str(store), "-o", str(out)]) == 0
    assert len(re.findall(r"<img ", out.read_text())) == 8  # one dataset, no comparison
    assert main(["report", "nope", "--store", str(store), "-o", str(out)]) == 2
    empty = tmp_path / "empty"
    assert main(["report", "--store", str(empty), "-o", str(tmp_path / "x.html")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
