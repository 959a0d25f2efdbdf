"""Issue 19: every study's quick profile runs on a user's dataset with 37 inputs and 3 classes
(nothing assumes 784 inputs or 10 classes), and the report draws every section from it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from widthlab.cli import main
from widthlab.store import Store
from widthlab.studies import available as _all
from widthlab.studies.base import DATASETS


def available():
    """The studies of the image datasets (a study of its own corpus, e.g. the transformer's
    text, takes ``--data corpus.txt`` instead: tests/studies/test_transformer_study.py)."""
    return [s for s in _all() if s.datasets == DATASETS]


@pytest.fixture(scope="module")
def user_store(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("user37")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 37))
    y = (x[:, :3] @ rng.normal(size=(3, 3))).argmax(1)
    np.savez(root / "mine.npz", x=x, y=y)
    codes = {}
    for study in available():
        name = study.command or study.name
        codes[name] = main(["study", name, "--data", str(root / "mine.npz"), "--profile",
                            "quick", "--store", str(root / "store"), "--device", "cpu", "-q"])
    return root, codes


def test_every_study_runs_its_quick_profile_on_37_inputs_and_3_classes(user_store):
    root, codes = user_store
    assert codes and all(code == 0 for code in codes.values()), codes
    st = Store(root / "store")
    runs = st.runs()
    # the PCA conjecture trains on its own teacher-labelled noise task
    assert {d for d in runs.dataset if not d.startswith("noise-")} == {"mine"}
    assert (runs.status == "done").all()
    for run_id in runs.run_id:
        data = st.get_run(run_id)["config"].get("data")
        if data:  # engine runs record what they trained on (analyses have no data of their own)
            assert (data["n_features"], data["n_classes"]) in ((37, 3), (37, 10))


def test_the_report_draws_every_study_from_the_users_data(user_store):
    root, _ = user_store
    out = root / "report.html"
    assert main(["report", "--store", str(root / "store"), "-o", str(out)]) == 0
    page = out.read_text()
    assert "could not be drawn" not in page
    titles = re.findall(r'<h2 id="s\d+">([^<]*)', page)
    for study in available():
        assert any(t.startswith(study.title.split(":")[0][:12]) or study.name in t.lower()
                   for t in titles), (study.name, titles)
    assert len(re.findall("<img ", page)) >= 2 * len(available())
