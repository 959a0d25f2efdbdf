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


@pytest.mark.parametrize("bad, words", [
    (["--widths", "16,64,16"], "16 more than once"),
    (["--seeds", "0,4,0"], "0 more than once"),
    (["--data-seed", "-1"], "--data-seed must be >= 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--train-size", "0"], "--train-size must be >= 1"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--epochs", "two"], "cannot read --epochs 'two'"),
    (["--optimizer", "lbfgs"], "optimizer"),
    (["--stats-epochs", "some"], "stats-epochs"),
    (["--target", "y"], "--target names the label column"),
])
def test_train_cli_more_misuse_exits_2_before_training(bad, words, tmp_path, capsys,
                                                       monkeypatch):
    import widthlab.cli_train as cli_train

    monkeypatch.setattr(cli_train, "train", lambda *a, **k: pytest.fail("trained"))
    assert main(["train", "--store", str(tmp_path), *bad]) == 2
    assert words in capsys.readouterr().err


def test_train_cli_builds_the_sweep_from_profile_fields(tmp_path, monkeypatch):
    """Every option is generated from TrainProfile and reaches the engine's specs/config."""
    import dataclasses

    import widthlab.cli_train as cli_train
    from widthlab.studies.train_profile import TrainProfile

    seen = {}

    def fake_train(specs, cfg, store, progress=None, data=None):
        seen.update(specs=specs, cfg=cfg)
        raise cli_train.WidthlabError("stop after building")

    monkeypatch.setattr(cli_train, "train", fake_train)
    args = ["train", "--store", str(tmp_path), "--quiet", "--dataset", "fashion-mnist",
            "--widths", "16:45", "--seeds", "1,5", "--epochs", "3", "--lr", "0.01",
            "--batch-size", "64", "--weight-decay", "1e-4", "--optimizer", "sgd",
            "--train-size", "500", "--data-seed", "7", "--stats-epochs", "all",
            "--preact-cov", "--precision", "bf16", "--keep-optimizer", "--device", "cpu"]
    assert main(args) == 1
    # the journal's sqrt(2) grid int(2**(i/2)) from 16 to 45, widths outer, seeds inner
    assert [(s.hidden, s.seed, s.weight_decay) for s in seen["specs"]] == [
        ((w,), s, 1e-4) for w in (16, 22, 32, 45) for s in (1, 5)]
    cfg = seen["cfg"]
    assert (cfg.dataset, cfg.epochs, cfg.lr, cfg.batch_size, cfg.optimizer, cfg.train_size,
            cfg.data_seed, cfg.stats_epochs, cfg.preact_cov, cfg.precision, cfg.keep_optimizer,
            cfg.device) == ("fashion-mnist", 3, 0.01, 64, "sgd", 500, 7, "all", True, "bf16",
                            True, "cpu")
    # one option per profile field, nothing hand-written beside them
    opts = {p.name for p in cli_train.train_cmd.params}
    assert {f.name for f in dataclasses.fields(TrainProfile)} <= opts
    assert opts - {f.name for f in dataclasses.fields(TrainProfile)} == {
        "dataset", "data_path", "target", "device", "store", "quiet"}
    # defaults: the old command's: int(2**(i/2)) for i = 8..21 (16..1448), 3 seeds
    seen.clear()
    assert main(["train", "--store", str(tmp_path), "--quiet", "--no-preact-cov"]) == 1
    assert len(seen["specs"]) == 3 * 14 and seen["specs"][-1].hidden == (1448,)
    assert (seen["cfg"].dataset, seen["cfg"].epochs, seen["cfg"].preact_cov) == ("mnist", 1,
                                                                                  False)


def test_train_and_study_help_come_from_the_same_generator(capsys):
    assert main(["train", "--help"]) == 0
    train_help = " ".join(capsys.readouterr().out.split())
    assert main(["study", "variance", "--help"]) == 0
    study_help = " ".join(capsys.readouterr().out.split())
    for words in ("--widths LO:HI|LIST", "--seeds N|LIST", "--epochs INT",
                  "--train-size INT|none", "--batch-size INT"):
        assert words in train_help and words in study_help
    assert "--preact-cov / --no-preact-cov" in train_help
    assert "--optimizer [adam|adamax|sgd]" in train_help
    assert "[default: (16:1448)]" in train_help
