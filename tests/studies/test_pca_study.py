"""The PCA study on a real (small) MNIST sweep: streamed spectra against numpy on the activation
matrix, reconstruction at k = width against the plain accuracy, reuse without retraining."""

import numpy as np
import pytest
import torch

from widthlab.cli import main
from widthlab.data.tensors import load_splits
from widthlab.engine import load_bank
from widthlab.store import Store
from widthlab.studies import pca

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store = tmp_path_factory.mktemp("pca") / "store"
    run_id = pca.run("mnist", TINY, store=store, **SWEEP)
    return store, run_id


TINY = pca.Profile("quick", seeds=(0,), cov_samples=3000, teacher_width=16, conj_widths=(4, 16),
                   conj_seeds=1, conj_train=2000, conj_epochs=1)
SWEEP = dict(widths=[16, 22, 45], seeds=[0], epochs=1, train_size=5000, progress=False,
             device="cpu")


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


def test_second_run_reuses_everything_and_reports(study, tmp_path):
    store, run_id = study
    before = Store(store).runs()
    again = pca.run("mnist", TINY, store=store, **SWEEP)
    assert again == run_id
    assert len(Store(store).runs()) == len(before)  # nothing trained or analysed again
    sections = pca.report_sections(Store(store), [run_id], tmp_path / "figs")
    (sec,) = sections
    assert len(sec.figures) == 5 and all(p.is_file() for _, p in sec.figures)
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
