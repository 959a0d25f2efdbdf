"""The PCA study on a real (small) MNIST sweep: streamed spectra against numpy on the activation
matrix, reconstruction at k = width against the plain accuracy, reuse without retraining."""

import numpy as np
import pytest
import torch

from widthlab.cli import main
from widthlab.data.tensors import load_splits
from widthlab.engine import TrainConfig, load_bank, train
from widthlab.errors import UsageError
from widthlab.nn import ModelSpec
from widthlab.nn.bank import MLP
from widthlab.report.builder import study_sections
from widthlab.store import Store
from widthlab.studies import pca, variance


def _run(store):
    sweep = variance.run("mnist", store=store, **SWEEP)
    return pca.run("mnist", TINY, store=store, upstream={"variance": sweep}, device="cpu")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store = tmp_path_factory.mktemp("pca") / "store"
    return store, _run(store)["analysis"]


TINY = pca.PCAProfile(seeds=(0,), cov_samples=3000, teacher_width=16, conj_widths=(4, 16),
                      conj_seeds=1, conj_train=2000, conj_epochs=1)
SWEEP = dict(widths=[16, 22, 45], seeds=[0], epochs=1, train_size=5000, device="cpu")


@pytest.mark.realdata
def test_spectra_match_numpy_on_the_activation_matrix(study):
    store, run_id = study
    st = Store(store)
    d = pca.load(st, run_id)
    bank = load_bank(st, d["source"])
    data = load_splits("mnist")
    x = data.train.x[:d["info"]["config"]["cov_samples"]]
    with torch.no_grad():
        z = bank.hidden(x, track=False)[0].double().numpy()  # (N, H) the stored activations
    for row in d["table"].itertuples():
        src = int(st.models(run_id).set_index("model").loc[row.model, "options"]["source_model"])
        a, b = bank.slices[src]
        ref = np.sort(np.linalg.eigvalsh(np.cov(z[:, a:b], rowvar=False)))[::-1]
        got = d["curves"]["pca_values"][row.model]
        np.testing.assert_allclose(got, np.clip(ref, 0, None), rtol=1e-8, atol=1e-8 * ref[0])
        assert row.n99 >= row.n95 >= row.n90 >= 1


@pytest.mark.realdata
def test_full_k_reconstruction_is_the_plain_accuracy_exactly(study):
    store, run_id = study
    st = Store(store)
    d = pca.load(st, run_id)
    bank = load_bank(st, d["source"])
    test = load_splits("mnist").test
    for row in d["table"].itertuples():
        src = int(st.models(run_id).set_index("model").loc[row.model, "options"]["source_model"])
        mlp = bank.export(src)
        with torch.no_grad():
            plain = float((mlp(test.x).argmax(1) == test.y).double().mean())
        acc = d["curves"]["recon_acc"][row.model]
        assert acc[-1] == plain
        assert d["curves"]["recon_k"][row.model][-1] == row.width
        assert acc[0] < plain - 0.3  # the mean pre-activation alone is far worse
        dist = d["curves"]["recon_dist"][row.model]
        assert dist[-1] == pytest.approx(0, abs=1e-3 * dist[0]) and np.all(np.diff(dist) <= 1e-6)


@pytest.mark.realdata
def test_second_run_reuses_everything_and_reports(study, tmp_path):
    store, run_id = study
    before = Store(store).runs()
    again = _run(store)
    assert again["analysis"] == run_id
    assert len(Store(store).runs()) == len(before)  # nothing trained or analysed again
    rendered = study_sections(pca.STUDY, Store(store), [run_id], tmp_path / "figs")
    (sec,) = rendered
    assert len(sec.figures) == 5 and all(p.is_file() for _, p in sec.figures)
    sec = sec.section
    claims = [v.claim for v in sec.verdicts]
    assert any("conjecture" in c for c in claims)
    conj = next(v for v in sec.verdicts if "conjecture" in v.claim)
    assert conj.numbers["teacher_noise_acc"] == 1.0


def test_separation_verdict_reads_the_ratios():
    import pandas as pd

    a = pd.DataFrame({"width": [16, 32, 64], "n90": [5, 6, 7], "n95": [8, 9, 10],
                      "n99": [12, 20, 30], "participation_ratio": [3.0, 3.5, 4.0],
                      "k_recon": [8, 8, 16]})
    b = a.copy()
    assert not pca.separation_verdict(a, b).holds
    b["n99"] = a["n99"] * 1.5
    v = pca.separation_verdict(a, b)
    assert v.holds and v.numbers["n99"]["median_ratio"] == pytest.approx(1.5)


def test_cli_unknown_profile_exits_2(capsys):
    assert main(["study", "pca", "--profile", "huge"]) == 2
    assert "huge" in capsys.readouterr().err


def test_pca_needs_the_variance_runs(tmp_path):
    with pytest.raises(UsageError, match="variance"):
        pca.run("mnist", TINY, store=tmp_path, device="cpu")


def test_noise_task_keeps_every_class_of_its_teacher(tmp_path):
    teacher = MLP([6, 5, 10], seed=0).eval()
    with torch.no_grad():  # the teacher only ever predicts classes 0, 1 and 2
        teacher.layers[-1].bias[3:] = -1e3
    task = pca.noise_task(teacher, 300, 100, 6, seed=3, name="noise-test")
    labels = set(torch.cat([task.train.y, task.val.y, task.test.y]).tolist())
    assert labels <= {0, 1, 2} and task.n_classes == 10
    assert len(task.train) == 300 and len(task.val) == 20 and len(task.test) == 100
    with torch.no_grad():
        assert torch.equal(teacher(task.test.x).argmax(1), task.test.y)
    assert task.to("cpu").n_classes == 10
    run_id = train([ModelSpec((4,), seed=0)], TrainConfig(dataset=task.name, epochs=1,
                                                          val_size=20, device="cpu"),
                   tmp_path, data=task)
    assert load_bank(tmp_path, run_id).export(0).sizes == [6, 4, 10]
