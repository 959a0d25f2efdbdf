"""scripts/compare_stores.py: runs matched by label and dataset (and through a run id embedded
in a dataset name), computed numbers compared exactly, measured times apart, runs only in the
new store counted as new, verdicts compared per report section."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from widthlab.store import MetricRow, Store

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_stores.py"
spec = importlib.util.spec_from_file_location("compare_stores", SCRIPT)
cs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cs)


def run(st: Store, run_id: str, label: str, dataset: str, values: dict,
        model: dict | None = None) -> None:
    st.create_run(run_id, study=label, dataset=dataset, config={}, device="cpu",
                  models=[model or {"name": "m", "arch": [4]}], seed=0, precision="fp32",
                  code_version="t")
    st.commit_epoch(run_id, 1, metrics=[MetricRow(0, 1, s, n, v)
                                        for (s, n), v in values.items()])
    st.finish_run(run_id)


BASE = {("val", "error"): 0.125, ("train", "loss"): 0.5, ("train", "epoch_time"): 2.0}


@pytest.fixture
def stores(tmp_path):
    old, new = Store(tmp_path / "old"), Store(tmp_path / "new")
    run(old, "v-mnist-aaaaaaaaaaaa", "variance", "mnist", BASE)
    run(new, "v-mnist-bbbbbbbbbbbb", "variance", "mnist", BASE)
    # named after the variance run: matched through it
    run(old, "c-1", "pca:conjecture", "noise-aaaaaaaaaaaa-m2", BASE)
    run(new, "c-2", "pca:conjecture", "noise-bbbbbbbbbbbb-m2", BASE)
    run(old, "t-1", "lenet:gated", "mnist", BASE)
    run(new, "t-2", "lenet:gated", "mnist", {**BASE, ("train", "epoch_time"): 3.5})
    run(old, "d-1", "optimizer:sgd", "mnist", BASE)
    run(new, "d-2", "optimizer:sgd", "mnist", {**BASE, ("val", "error"): 0.25})
    run(old, "g-1", "lenet:manifest", "mnist", BASE)
    run(old, "m-1", "optimizer:adam", "mnist", BASE)
    run(new, "n-2", "lenet:cut", "mnist", BASE)
    # one label, two models (a sweep's widths), told apart by their names; a static model
    # naming its gated run by id (ids hash the code) matches
    for st, tag in ((old, "1"), (new, "2")):
        run(st, f"w8-{tag}", "tf:sweep", "text", BASE, {"name": "w8", "arch": [8]})
        run(st, f"w16-{tag}", "tf:sweep", "text", BASE, {"name": "w16", "arch": [16]})
        run(st, f"s-{tag}", "tf:static", "text", BASE,  # option renamed lambda -> price
            {"name": "s", "arch": [3], "options": {"of": f"w8-{tag}",
                                                   "lambda" if tag == "1" else "price": 1}})
    return tmp_path / "old", tmp_path / "new"


def test_each_run_gets_its_outcome(stores, capsys):
    assert cs.main([str(stores[0]), str(stores[1]), "--retired", "lenet:manifest",
                    "--synonyms", "lambda=price"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "same variance / mnist" in out
    assert "same pca:conjecture / noise-aaaaaaaaaaaa-m2" in out
    assert ("same* lenet:gated / mnist: times: 1 metric values differ (max 1.5; "
            "['train/epoch_time'])") in out
    assert ("DIFF optimizer:sgd / mnist: 1 metric values differ (max 0.125; ['val/error'])"
            in out)
    assert "MISSING optimizer:adam / mnist: only in old" in out
    assert "RETIRED lenet:manifest / mnist: only in old" in out
    assert "NEW lenet:cut / mnist: only in new" in out
    assert "same tf:sweep / text [w8[8]]" in out and "same tf:sweep / text [w16[16]]" in out
    assert "same tf:static / text" in out
    assert out[-3:] == ["runs_old=9 runs_new=8 compared=7",
                        "identical_runs=6 (of which measured times differ: 1)",
                        "differing_runs=1 missing_runs=1 retired=1 new_runs=1"]


def test_new_runs_and_measured_times_are_not_failures(stores, capsys):
    assert cs.main([str(stores[0]), str(stores[1]), "--studies", "variance,lenet,pca,tf",
                    "--retired", "lenet:manifest", "--synonyms", "lambda=price"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "differing_runs=0 missing_runs=0 retired=1 new_runs=1")


def page(*sections: tuple[str, list[tuple[str, str]]]) -> str:
    body = ""
    for title, items in sections:
        body += f"<h2 id='x'>{title}</h2><ul>"
        body += "".join(f'<li class="{c}"><b>{c}:</b> {t}</li>' for c, t in items)
        body += "</ul>"
    return f"<html>{body}</html>"


def test_a_renamed_option_is_a_difference_unless_named_a_synonym(stores, capsys):
    assert cs.main([str(stores[0]), str(stores[1]), "--studies", "tf"]) == 1
    assert "DIFF tf:static / text: models differ" in capsys.readouterr().out.splitlines()


def test_verdicts_are_compared_per_shared_section(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cs, "SYNONYMS", {"lambda": "price"})
    old = page(("Optimizer: MNIST", [("holds", "adam spikes 3 times at lambda 0.1"),
                                     ("fails", "sgd &lt; adam")]),
               ("LeNet: MNIST", [("holds", "faster: 2.28s -> 1.45s (0.64)")]),
               ("Variance: MNIST", [("holds", "only in the old report")]))
    new = page(("Optimizer: MNIST", [("holds", "adam spikes 3 times at price 0.1"),
                                     ("holds", "sgd &lt; adam")]),
               ("LeNet: MNIST", [("fails", "faster: 2.51s -> 2.60s (1.04)")]))
    (tmp_path / "a.html").write_text(old)
    (tmp_path / "b.html").write_text(new)
    assert cs.verdicts(old)[1] == ("Optimizer: MNIST", False, "sgd < adam")
    new = new.replace("</html>", '<h2>Optimizer: MNIST</h2><li class="holds"><b>holds:</b> '
                      'added since</li></html>')
    (tmp_path / "b.html").write_text(new)
    assert cs.compare_reports(str(tmp_path / "a.html"), str(tmp_path / "b.html")) == 1
    out = capsys.readouterr().out.splitlines()
    assert "VERDICT only in old [Optimizer: MNIST] (fails): sgd < adam" in out
    assert "NEW verdict [Optimizer: MNIST] (holds): sgd < adam" in out
    assert "NEW verdict [Optimizer: MNIST] (holds): added since" in out
    assert "verdicts_differing=1 verdicts_new=2" in out
    assert any(line.startswith("TIMED verdict [LeNet: MNIST] outcome True -> False")
               for line in out)
    assert "verdict_sections_compared=2 only_old=1 only_new=0" in out
    assert "verdicts_compared_old=3 verdicts_compared_new=4 timed=1 timed_outcome_changed=1" \
        in out
