"""``widthlab train`` on real MNIST: trains, stores, resumes as a no-op, rejects misuse."""

import pytest

from widthlab.cli import main
from widthlab.store import Store


@pytest.mark.realdata
def test_train_cli_runs_stores_and_skips_a_done_run(real_cache, tmp_path, capsys):
    store = str(tmp_path / "runs")
    args = ["train", "--widths", "16,64", "--seeds", "2", "--train-size", "2048",
            "--store", store, "--quiet", "--device", "cpu"]
    assert main(args) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    st = Store(store)
    models = st.models(run_id)
    assert models["width"].tolist() == [16, 16, 64, 64]
    assert models["seed"].tolist() == [0, 1, 0, 1]
    m = st.metrics(run_id)
    acc = m[(m.split == "test") & (m.name == "acc")]["value"].to_numpy()
    # 16 Adam steps on MNIST: all far above chance (0.1), the wider models ahead
    assert len(acc) == 4 and (acc > 0.35).all()
    assert acc[2:].mean() > acc[:2].mean() + 0.1
    assert len(st.arrays(run_id, "act_std")) == 4
    created = st.get_run(run_id)["created_at"]
    assert main(args) == 0  # same command: the finished run is found, not retrained
    assert capsys.readouterr().out.strip().splitlines()[-1] == run_id
    assert st.get_run(run_id)["created_at"] == created
    assert len(st.runs()) == 1


@pytest.mark.parametrize("bad, words", [
    (["--widths", "16:x"], "cannot read widths"),
    (["--seeds", "a,b"], "cannot read seeds"),
    (["--epochs", "0"], "epochs"),
    (["--precision", "fp8"], "precision"),
])
def test_train_cli_misuse_exits_2(bad, words, tmp_path, capsys):
    assert main(["train", "--store", str(tmp_path), *bad]) == 2
    assert words in capsys.readouterr().err
