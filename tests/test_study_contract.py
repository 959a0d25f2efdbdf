"""The study contract end to end on the documented example study (docs/examples/deadwidth), and
the one run identity: editing a figure or a verdict redraws the report and never retrains,
editing an analysis recomputes it, editing training code retrains."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.child_run import synthetic
from widthlab.engine import Engine, TrainConfig, identity
from widthlab.errors import UsageError
from widthlab.nn import ModelSpec
from widthlab.report import build_report
from widthlab.reproduce import report_code_hash
from widthlab.store import Store
from widthlab.studies import get_study
from widthlab.studies.base import newest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "examples"))
from deadwidth.study import STUDY as DEAD  # noqa: E402

PROFILE = dict(widths=(4, 16, 64), seeds=2, epochs=2, train_size=None)


def data():
    return replace(synthetic(n_train=640, seed=3), name="mnist")


def edited(monkeypatch, module: str, extra: str = "\nedited = 1\n") -> None:
    """Pretend ``module``'s source was edited (for the code hashes only)."""
    original = identity._module_source
    monkeypatch.setattr(identity, "_module_source",
                        lambda name: original(name) + (extra if name == module else ""))


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    torch.set_num_threads(1)
    store = Store(tmp_path_factory.mktemp("example"))
    runs = DEAD.run("mnist", "quick", store=store, data=data(), device="cpu", **PROFILE)
    return store, runs


def test_example_study_trains_stores_its_analysis_and_reports(example, tmp_path):
    store, runs = example
    assert set(runs.runs) == {"sweep", "module", "norms"}
    assert store.get_run(runs["sweep"])["study"] == "deadwidth:sweep"
    # the user module's run: stored per epoch like every run, and it learned
    module = store.metrics(runs["module"])
    assert store.get_run(runs["module"])["study"] == "deadwidth:module"
    assert sorted(set(module.epoch)) == [1, 2]
    assert module[module.name == "error"].value.iloc[-1] < 0.5
    # the stored analysis equals the norms recomputed from the raw checkpoint
    _, ckpt = store.latest_checkpoint(runs["sweep"])
    w0 = ckpt["bank"]["w0"].double().numpy()
    models = store.models(runs["sweep"])
    start = 0
    for m, width in enumerate(models.width):
        want = np.sqrt((w0[start:start + width] ** 2).sum(axis=1))
        np.testing.assert_allclose(store.array(runs["norms"], m, "w_norm"), want, rtol=1e-12)
        start += width
    tables = DEAD.tables(store, newest(store, runs.ids()))
    dead = tables["mnist"]["dead"]
    for row in dead.itertuples():  # dead counts are the stored dead masks
        assert row.dead == store.array(runs["sweep"], row.model, "dead", epoch=2).sum()
    out = build_report(store, [runs["sweep"]], tmp_path / "r.html", studies=[DEAD])
    page = out.read_text()
    verdict = DEAD.verdicts(tables)["mnist"][0].text
    assert verdict in page and len(re.findall("<img ", page)) == 1
    assert "Training budget" in page and "2 epochs, 6 models (2 seeds)" in page


def test_profiles_are_validated_and_overrides_checked():
    with pytest.raises(UsageError, match="unknown setting.*widht"):
        DEAD.profile("quick", widht=(4,))
    with pytest.raises(UsageError, match="unknown profile"):
        DEAD.profile("huge")
    assert DEAD.profile("quick", widths=[8, 9]).widths == (8, 9)  # lists become tuples


def test_editing_a_figure_or_verdict_redraws_and_never_retrains(example, monkeypatch):
    store, runs = example
    sp = get_study("sparsifier")
    keys = {DEAD.code_hash(), sp.code_hash()}
    report = report_code_hash()
    edited(monkeypatch, "widthlab.studies.sparsifier.figures")
    assert report_code_hash() != report  # the report is drawn again ...
    edited(monkeypatch, "deadwidth.study")
    assert {DEAD.code_hash(), sp.code_hash()} == keys  # ... nothing is retrained
    before = store.runs()
    again = DEAD.run("mnist", "quick", store=store, data=data(), device="cpu", **PROFILE)
    assert again == runs and len(store.runs()) == len(before)


def test_editing_an_analysis_recomputes_it_and_keeps_the_training(example, monkeypatch):
    store, runs = example
    key = DEAD.code_hash()
    edited(monkeypatch, "deadwidth.compute")
    assert DEAD.code_hash() != key  # the job runs again
    again = DEAD.run("mnist", "quick", store=store, data=data(), device="cpu", **PROFILE)
    assert again["sweep"] == runs["sweep"]  # the engine run is reused
    assert again["norms"] != runs["norms"]  # the analysis is recomputed ...
    for m in range(6):  # ... to the same numbers (the edit did not change the math)
        np.testing.assert_array_equal(store.array(again["norms"], m, "w_norm"),
                                      store.array(runs["norms"], m, "w_norm"))


@pytest.mark.parametrize("module", ["widthlab.engine.trainer", "widthlab.nn.bank",
                                    "widthlab.nn.gated"])
def test_editing_training_code_retrains(tmp_path, monkeypatch, module):
    from widthlab.nn.gated import SparsifierGate

    cfg = TrainConfig(dataset="synthetic", epochs=1, device="cpu")
    specs = [ModelSpec((8,), seed=0)]

    def run_id():
        return Engine(specs, cfg, tmp_path, data=synthetic(),
                      modifiers=[lambda: SparsifierGate([1e-3])]).run_id

    first = run_id()
    edited(monkeypatch, module, extra="\n# a comment\n")
    assert run_id() == first  # comments, blank lines and docstrings do not count
    edited(monkeypatch, module)
    assert run_id() != first


def test_docstrings_do_not_change_the_code_hash():
    src = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    same = 'def f(x):\n    """Another doc."""\n\n    # why\n    return x + 1\n'
    other = 'def f(x):\n    return x + 2\n'
    h = identity._normalised_hash
    assert h(src) == h(same) != h(other)


def test_a_lower_layer_importing_a_higher_one_fails_the_layers_contract(tmp_path):
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed")
    shutil.copytree(ROOT / "src", tmp_path / "src")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([str(lint)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout[-2000:]
    stats = tmp_path / "src" / "widthlab" / "engine" / "stats.py"
    stats.write_text(stats.read_text() + "\nimport widthlab.report  # noqa\n")
    bad = subprocess.run([str(lint)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "widthlab.engine.stats -> widthlab.report" in bad.stdout
