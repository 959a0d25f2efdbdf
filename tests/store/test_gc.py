"""Store size: a finished run keeps a weights-only checkpoint that still feeds every analysis;
`runs gc` removes only what no stored run needs."""

from __future__ import annotations

import torch

from tests.engine.child_run import synthetic
from widthlab.cli import main
from widthlab.engine import TrainConfig, load_bank, train
from widthlab.nn import ModelSpec
from widthlab.store import Store

SPECS = [ModelSpec((8,), seed=0), ModelSpec((16,), seed=1)]


def test_finished_runs_keep_weights_only_unless_asked(tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="synthetic", epochs=2, device="cpu")
    lean = train(SPECS, cfg, tmp_path / "a", data=synthetic())
    full = train(SPECS, TrainConfig(dataset="synthetic", epochs=2, device="cpu",
                                    keep_optimizer=True), tmp_path / "b", data=synthetic())
    assert lean == full  # keeping the optimizer changes no number, so not the run id
    (pa,), (pb,) = Store(tmp_path / "a").checkpoint_paths(lean), \
        Store(tmp_path / "b").checkpoint_paths(full)
    a, b = torch.load(pa, weights_only=False), torch.load(pb, weights_only=False)
    assert "optimizer" not in a and "optimizer" in b
    assert pa.stat().st_size < pb.stat().st_size / 2  # Adam keeps two moments per weight
    for k in a["bank"]:
        torch.testing.assert_close(a["bank"][k], b["bank"][k], rtol=0, atol=0)
    bank = load_bank(tmp_path / "a", lean)  # the weights-only checkpoint feeds the analyses
    x = synthetic().test.x
    torch.testing.assert_close(bank(x), load_bank(tmp_path / "b", full)(x), rtol=0, atol=0)
    # the same command on a finished lean run does nothing (no resume needs the optimizer)
    assert train(SPECS, cfg, tmp_path / "a", data=synthetic()) == lean


def test_gc_removes_only_unneeded_files(tmp_path, capsys):
    torch.set_num_threads(1)
    st = Store(tmp_path)
    run_id = train(SPECS, TrainConfig(dataset="synthetic", epochs=1, device="cpu"), st,
                   data=synthetic())
    (kept,) = st.checkpoint_paths(run_id)
    stray = kept.parent / "gone-run-e0003.pt"
    stray.write_bytes(b"x" * 1000)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "old.json").write_text('{"runs": {"sweep": "no-such-run"}}')
    assert main(["runs", "gc", "--dry-run", "--store", str(tmp_path)]) == 0
    assert stray.exists()
    assert main(["runs", "gc", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert str(stray) in out.out and "freed" in out.err
    assert not stray.exists() and not (tmp_path / "jobs" / "old.json").exists()
    assert kept.exists() and st.get_run(run_id)["status"] == "done"
    assert load_bank(st, run_id).n_models == 2
