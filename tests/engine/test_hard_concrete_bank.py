"""Hard-concrete gates as the bank's sparsifier gate (issue 33): the engine removes units whose
evaluation gate is exactly 0, the deterministic gate under no_grad, the L1 description
unchanged, and a run killed with -9 resumes bit for bit (the noise generator's state is in the
checkpoint).

This file is also the child process of the kill -9 test::

    python tests/engine/test_hard_concrete_bank.py STORE [--hang-at-step N]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as the child: make `tests` importable
    sys.path.insert(0, str(ROOT))

from tests.engine.child_run import install_hangs, synthetic  # noqa: E402
from widthlab.engine.trainer import TrainConfig, train  # noqa: E402
from widthlab.nn.bank import MLPBank, ModelSpec  # noqa: E402
from widthlab.nn.gated import SparsifierGate  # noqa: E402
from widthlab.nn.modifiers import create_modifier  # noqa: E402
from widthlab.store import Store  # noqa: E402

SPECS = [ModelSpec((16,), seed=0), ModelSpec((24,), seed=1), ModelSpec((12, 6), seed=3)]
LAMBDAS = [3e-2, 1e-2, 2e-2]
CONFIG = dict(dataset="synthetic", epochs=4, batch_size=32, device="cpu", stats_epochs="none",
              eval_batch_size=100, eval_splits=("val", "test"), shrink_every="epoch")

pytestmark = pytest.mark.usefixtures("one_thread")


def gate() -> SparsifierGate:
    return SparsifierGate(LAMBDAS, lr=0.1, gate_kind="hard_concrete", seed=4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--hang-at-step", type=int)
    args = ap.parse_args()
    torch.set_num_threads(1)
    install_hangs(pathlib.Path(args.store).parent / "hang", args.hang_at_step, None)
    print(train(SPECS, TrainConfig(**CONFIG), args.store, modifiers=[gate], data=synthetic(),
                progress=False))


def run_child(store: Path, *args: str, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, __file__, str(store), *args], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    return p


def metrics(store: Path) -> pd.DataFrame:
    s = Store(store)
    (run_id,) = s.runs()["run_id"]
    return s.metrics(run_id).sort_values(["model", "epoch", "split", "name"]) \
        .reset_index(drop=True)


def test_gate_kinds_in_the_bank_and_the_description():
    l1 = SparsifierGate([1e-3], penalty="abs")
    assert "gate_kind" not in l1.describe()  # L1 runs keep their ids
    hc = gate()
    desc = hc.describe()
    assert desc["gate_kind"] == "hard_concrete" and desc["seed"] == 4
    again = create_modifier(desc)
    assert again.kind.name == "hard_concrete" and again.seed == 4


def test_units_die_and_evaluation_is_deterministic(tmp_path):
    store = tmp_path / "store"
    train(SPECS, TrainConfig(**CONFIG), store, modifiers=[gate], data=synthetic(), progress=False)
    m = metrics(store)
    kept = m[m.name == "kept_width"].pivot(index="epoch", columns="model", values="value")
    alive = m[m.name == "alive_width"].pivot(index="epoch", columns="model", values="value")
    assert (kept.loc[4].to_numpy() < [s.width for s in SPECS]).all()
    np.testing.assert_array_equal(kept.loc[4].to_numpy(), alive.loc[4].to_numpy())
    g = SparsifierGate(1e-2, gate_kind="hard_concrete")
    bank = MLPBank(SPECS[:1], 20, 10)
    bank.add_modifier(g)
    with torch.no_grad():
        a, b = g.scale(), g.scale()
    assert torch.equal(a, b) and torch.equal(a, g.kind.scale(g.gate))
    c, d = g.scale(), g.scale()  # with gradients: fresh samples each call
    assert not torch.equal(c, d)


def test_the_sparsifier_and_growth_studies_take_the_gate_kind(tmp_path):
    """Profile field ``gate_kind``: the sparsifier's gates and the growing gates become
    hard-concrete; a growing hard-concrete bank trains, grows, gives every unit its own place
    in the noise and removes units whose evaluation gate is 0."""
    from dataclasses import replace

    from widthlab.errors import UsageError
    from widthlab.studies import growth, sparsifier
    from widthlab.studies.sparsifier.config import experiment as sparsifier_experiment

    sp = sparsifier.STUDY.profile("quick", gate_kind="hard_concrete")
    g = sparsifier_experiment("lambda-sweep", sp).modifiers[0]()
    assert g.kind.name == "hard_concrete" and g.describe()["gate_kind"] == "hard_concrete"
    l1 = sparsifier_experiment("lambda-sweep", sparsifier.STUDY.profile("quick"))
    assert "gate_kind" not in l1.modifiers[0]().describe()
    for study in (sparsifier, growth):
        with pytest.raises(UsageError, match="gate_kind"):
            study.STUDY.profile("quick", gate_kind="l0")
    small = dict(starts=(4, 32), prices=(1e-3, 3e-2), inits=("gradmax", "none"), seeds=1,
                 epochs=4, train_size=None, every=2, grace=4, max_new=16, warmup=2,
                 grow_until=12, settle=2, gate_kind="hard_concrete")
    prof = growth.STUDY.profile("quick", **small)
    exp = growth.experiment(prof)
    data = replace(synthetic(n_train=640, seed=2), name="mnist")
    eng_store = tmp_path / "grow"
    train(exp.specs, replace(exp.config, device="cpu"), eng_store, modifiers=exp.modifiers,
          data=data, progress=False)
    s = Store(eng_store)
    (run_id,) = s.runs()["run_id"]
    from widthlab.studies.growth.analysis import gate_kind

    assert gate_kind(s, run_id) == "hard_concrete"  # what the MNIST-vs-Fashion verdict names
    met = s.metrics(run_id, wide=True)
    last = met[(met.split == "train") & (met.epoch == 4)].set_index("model")
    assert last.grown.sum() > 0
    from widthlab.engine import load_bank

    bank = load_bank(s, run_id, modifiers=exp.modifiers)
    gate = bank.modifiers[0]
    assert gate.kind.name == "hard_concrete"
    ids = gate.noise_ids.tolist()
    assert len(set(ids)) == len(ids) and gate.n_noise >= max(ids) + 1
    assert not bool(gate.kind.dead(gate.gate.detach()).any())  # the dead ones were removed


@pytest.mark.slow  # two child processes (mostly torch's import time)
def test_kill_9_then_resume_of_a_hard_concrete_bank_equals_uninterrupted(tmp_path):
    ref = tmp_path / "ref" / "store"
    ref.parent.mkdir()
    train(SPECS, TrainConfig(**CONFIG), ref, modifiers=[gate], data=synthetic(), progress=False)
    want = metrics(ref)  # in process (one thread, like the child)
    kept = want[want.name == "kept_width"].pivot(index="epoch", columns="model",
                                                 values="value")
    assert (kept.loc[2] < [s.width for s in SPECS]).any(), "resume from a shrunk bank"
    store = tmp_path / "cut" / "store"
    store.parent.mkdir()
    p = run_child(store, "--hang-at-step", "50", wait=False)  # 20 steps per epoch: epoch 3
    deadline = time.time() + 240
    while not (store.parent / "hang").exists():
        assert p.poll() is None, p.stderr.read()
        assert time.time() < deadline, "child never reached its hang point"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    run_child(store)
    pd.testing.assert_frame_equal(metrics(store), want, check_exact=True)


if __name__ == "__main__":
    main()
