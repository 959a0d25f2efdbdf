"""The variance study end to end on a synthetic problem, checked against the stored arrays."""

import numpy as np
import pytest
from scipy import stats

from tests.engine.child_run import synthetic
from widthlab.cli import main
from widthlab.cli_study import _overrides
from widthlab.errors import UsageError
from widthlab.store import Store
from widthlab.studies import variance


def test_summary_rows_recompute_from_stored_arrays(tmp_path):
    data = synthetic()
    runs = variance.run("synthetic", widths=[4, 8, 16], seeds=3, epochs=2, store=tmp_path,
                        data=data, batch_size=32, device="cpu")
    run_id = runs["sweep"]
    assert runs.ids() == [run_id] and Store(tmp_path).get_run(run_id)["study"] == "variance"
    assert run_id.startswith("variance-synthetic-")
    table = variance.summarize(tmp_path, run_id)
    assert table["width"].tolist() == [4, 8, 16]
    assert (table["replicates"] == 3).all()
    st = Store(tmp_path)
    models = st.models(run_id)
    stds = st.arrays(run_id, "act_std")
    dead = st.arrays(run_id, "dead")
    m = st.metrics(run_id)
    for row in table.itertuples():
        idx = models.index[models.width == row.width].tolist()
        pooled = np.concatenate([stds[i] for i in idx])
        w, p = stats.shapiro(pooled)
        assert row.shapiro_w == pytest.approx(w, rel=1e-9)
        totals = [stds[i].sum() for i in idx]
        assert row.total_std == pytest.approx(np.mean(totals), rel=1e-12)
        half = stats.t.ppf(0.975, 2) * np.std(totals, ddof=1) / np.sqrt(3)
        assert row.total_std_hi - row.total_std == pytest.approx(half, rel=1e-9)
        assert row.dead == pytest.approx(np.mean([dead[i].sum() for i in idx]))
        acc = m[(m.name == "acc") & (m.split == "test") & (m.epoch == 2) & m.model.isin(idx)]
        assert row.test_acc == pytest.approx(acc["value"].mean(), rel=1e-12)
    # summarising again reads the store only: the same table
    again = variance.summarize(tmp_path, run_id)
    assert again.equals(table)


def test_profiles_and_errors(tmp_path):
    (exp,) = variance.STUDY.experiments(variance.STUDY.profile("full"), "mnist")
    specs, cfg = exp.specs, exp.config
    assert sorted({s.hidden[0] for s in specs})[-1] == 11585 and len(specs) == 20 * 11
    assert cfg.epochs == 30 and cfg.stats_epochs == "last"
    exp = variance.sweep(variance.STUDY.profile("quick", seeds=[5], epochs=1))
    specs, cfg = exp.specs, exp.config
    assert {s.seed for s in specs} == {5} and cfg.epochs == 1
    with pytest.raises(UsageError, match="profile"):
        variance.STUDY.profile("huge")
    with pytest.raises(UsageError, match="unknown setting"):
        variance.STUDY.profile("quick", width=[16])
    with pytest.raises(UsageError, match="widths"):
        variance.STUDY.profile("quick", widths=[0, 16])
    with pytest.raises(UsageError, match="no run"):
        variance.summarize(tmp_path, "nope")


@pytest.mark.realdata
def test_cli_study_variance_on_mnist(real_cache, tmp_path, capsys):
    store = str(tmp_path / "runs")
    args = ["study", "variance", "--dataset", "mnist", "--widths", "16,64,256", "--seeds", "2",
            "--epochs", "1", "--device", "cpu", "--store", store, "--csv", str(tmp_path / "t")]
    assert main(args) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    import pandas as pd

    table = pd.read_csv(tmp_path / "t" / f"{run_id}.csv")
    assert table["width"].tolist() == [16, 64, 256]
    # one epoch of MNIST: wider is more accurate; every model far above chance
    assert table["test_acc"].is_monotonic_increasing and (table["test_acc"] > 0.85).all()
    assert main(["study", "variance", "--profile", "nope", "--store", store]) == 2


def test_cli_overrides_read_the_journal_grid_and_seed_counts():
    got = _overrides(variance.STUDY, "quick", {"widths": "16:45", "seeds": "2", "epochs": "3",
                                               "train_size": None})
    assert got == {"widths": (16, 22, 32, 45), "seeds": (0, 1), "epochs": 3}
    prof = variance.STUDY.profile("quick", **_overrides(variance.STUDY, "quick",
                                                        {"seeds": "0,4,7"}))
    assert sorted({s.seed for s in variance.sweep(prof).specs}) == [0, 4, 7]
