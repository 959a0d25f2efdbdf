"""The engine with growing gates: units added at the cadence, widths above the specs stored and
loaded back, the growth settings in the run id, and a grown run killed with -9 resumes bit for
bit into the same grown bank (under the candidate rule and under the benefit rule, whose
removals are masked and shrunk at a step cadence).

This file is also the child process of the kill -9 test::

    python tests/engine/test_grow.py STORE [--hang-at-step N | --hang-before-commit E] [--benefit]
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
from tests.engine.test_shrink import dump  # noqa: E402
from widthlab.engine.trainer import Engine, TrainConfig, evaluate, load_bank, train  # noqa: E402
from widthlab.nn.bank import ModelSpec  # noqa: E402
from widthlab.nn.growth import BenefitRule, GrowingGate  # noqa: E402
from widthlab.store import Store  # noqa: E402

SPECS = [ModelSpec((2,), seed=0), ModelSpec((6,), seed=1), ModelSpec((24,), seed=2),
         ModelSpec((6,), seed=3)]
CONFIG = dict(dataset="synthetic", epochs=4, batch_size=32, device="cpu", stats_epochs="all",
              eval_batch_size=100, eval_splits=("val", "test"))


pytestmark = pytest.mark.usefixtures("one_thread")


def grower(**kw) -> GrowingGate:
    """Prices at which units are both added and removed within 4 short epochs."""
    args = dict(lr=5e-2, every=6, window=3, init=["gradmax", "random", "gradmax", "split"],
                max_new=5, candidates=16)
    return GrowingGate([3e-3, 1e-3, 3e-3, 1e-3], **{**args, **kw})


def benefit_grower(**kw) -> GrowingGate:
    """The benefit rule at prices where every model both grows (up to step 60) and removes
    units (masked, then shrunk every 6 steps), before and after a kill at step 50."""
    args = dict(lr=5e-2, every=6, window=3, init=["gradmax", "random", "gradmax", "split"],
                max_new=5, candidates=16, grace=6, until=60, price=[3e-3, 1e-3, 3e-3, 1e-3],
                rule=BenefitRule(max_remove=0.5))
    return GrowingGate(0.0, **{**args, **kw})


def config(**kw) -> TrainConfig:
    return TrainConfig(**{**CONFIG, **kw})


# ----------------------------------------------------------------------------- the child
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--hang-at-step", type=int)
    ap.add_argument("--hang-before-commit", type=int)
    ap.add_argument("--benefit", action="store_true", help="the benefit rule")
    args = ap.parse_args()
    torch.set_num_threads(1)
    marker = pathlib.Path(args.store).parent / "hang"

    install_hangs(marker, args.hang_at_step, args.hang_before_commit)
    cfg, mod = (config(shrink_every=6), benefit_grower) if args.benefit else (config(), grower)
    print(train(SPECS, cfg, args.store, modifiers=[mod], data=synthetic(), progress=False))


def run_child(store: Path, *args: str, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
    p = subprocess.Popen([sys.executable, __file__, str(store), *args], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    store = tmp_path_factory.mktemp("ref") / "store"
    run_child(store)
    return dump(store)


def widths(metrics: pd.DataFrame, name: str) -> pd.DataFrame:
    return metrics[metrics.name == name].pivot(index="epoch", columns="model", values="value")


@pytest.mark.slow  # two child processes each (mostly torch's import time)
@pytest.mark.parametrize("hang,resume_at", [
    (["--hang-at-step", "50"], 2),         # 20 steps per epoch: mid-epoch 3
    (["--hang-before-commit", "3"], 2),
], ids=["mid-epoch-3", "before-commit-3"])
def test_kill_9_then_resume_a_grown_bank_equals_uninterrupted(tmp_path, reference, hang,
                                                                resume_at):
    ref_metrics, ref_arrays = reference
    kept, grown = widths(ref_metrics, "kept_width"), widths(ref_metrics, "grown")
    assert (kept.loc[resume_at] > [s.width for s in SPECS]).any(), \
        "the run must resume from a grown checkpoint"
    assert (grown.loc[4] > grown.loc[resume_at]).any(), "and grow again after the kill"
    assert (kept.loc[4] < grown.loc[4] + [s.width for s in SPECS]).any(), "gates removed units"
    kill_and_resume(tmp_path, hang, reference)


@pytest.fixture(scope="module")
def benefit_reference(tmp_path_factory):
    store = tmp_path_factory.mktemp("ref-benefit") / "store"
    run_child(store, "--benefit")
    return dump(store)


@pytest.mark.slow
def test_kill_9_then_resume_under_the_benefit_rule_equals_uninterrupted(tmp_path,
                                                                        benefit_reference):
    """Mid-epoch 3 (step 50), after units were masked and shrunk at a step cadence and before
    the rule's last growth and removals: the resumed run equals the uninterrupted one."""
    ref_metrics, _ = benefit_reference
    grown, removed = widths(ref_metrics, "grown"), widths(ref_metrics, "removed")
    assert (grown.loc[2] > 0).all() and (removed.loc[2] > 0).all(), "all grew and removed"
    assert (grown.loc[3] > grown.loc[2]).any() and (removed.loc[3] > removed.loc[2]).any(), \
        "and grow and remove again after the kill"
    kill_and_resume(tmp_path, ["--hang-at-step", "50", "--benefit"], benefit_reference)


def kill_and_resume(tmp_path: Path, args: list[str], reference) -> None:
    """Run the child with ``args`` to its hang point, kill it with -9, resume it (without the
    hang) and compare every stored number with ``reference``."""
    ref_metrics, ref_arrays = reference
    store = tmp_path / "store"
    p = run_child(store, *args, wait=False)
    deadline = time.time() + 120
    while not (tmp_path / "hang").exists():
        assert p.poll() is None, p.stderr.read()
        assert time.time() < deadline, "child never reached its hang point"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    run_child(store, *[a for a in args if a == "--benefit"])
    metrics, arrays = dump(store)
    pd.testing.assert_frame_equal(metrics, ref_metrics, check_exact=True)
    assert arrays == ref_arrays


# ----------------------------------------------------------------------------- in process
def test_a_grown_run_records_its_growth_and_loads_back(tmp_path):
    data = synthetic()
    eng = Engine(SPECS, config(stats_epochs="none"), tmp_path, modifiers=[grower], data=data,
                 progress=False)
    run_id = eng.run()
    st = Store(tmp_path)
    met = st.metrics(run_id, wide=True)
    tr = met[met.split == "train"].sort_values(["model", "epoch"])
    steps = 20  # 640 samples / 32
    for m, rows in tr.groupby("model"):
        grown = rows["grown"].to_numpy()
        assert (np.diff(grown) >= 0).all()
        assert rows["unit_steps"].iloc[0] >= SPECS[m].width * steps
    last = tr[tr.epoch == 4].set_index("model")
    assert (last["grown"] > 0).all()
    assert (last["kept_width"].to_numpy() > [s.width for s in SPECS]).sum() >= 2
    bank = eng.bank
    for m, (a, b) in enumerate(bank.slices):
        assert b - a == last.loc[m, "kept_width"]
        ids = bank.unit_ids[a:b]
        assert len(set(ids.tolist())) == b - a  # ids unique within a model
        assert int(ids.max()) < SPECS[m].width + last.loc[m, "grown"]
    loaded = load_bank(st, run_id, modifiers=[grower])
    assert loaded.archs == bank.archs and torch.equal(loaded.unit_ids, bank.unit_ids)
    acc = evaluate(loaded, data.test, batch_size=100).acc.numpy()
    stored = met[(met.split == "test") & (met.epoch == 4)].sort_values("model")["acc"]
    np.testing.assert_array_equal(acc, stored.to_numpy())


def test_models_with_init_none_train_as_plain_sparsifiers(tmp_path):
    """init="none" switches growth off per model: that model's numbers equal a run with
    SparsifierGate-like growing gates that never grow (same gates, same price)."""
    data = synthetic()
    cfg = config(stats_epochs="none", epochs=2)
    ids = {}
    for kind in ("mixed", "none"):
        init = ["gradmax", "none", "random", "none"] if kind == "mixed" else "none"
        eng = Engine(SPECS, cfg, tmp_path / kind, modifiers=[lambda i=init: grower(init=i)],
                     data=data, progress=False)
        ids[kind] = (eng.run(), Store(tmp_path / kind))
    a = ids["mixed"][1].metrics(ids["mixed"][0])
    b = ids["none"][1].metrics(ids["none"][0])
    for m in (1, 3):
        ma = a[a.model == m].reset_index(drop=True)
        mb = b[b.model == m].reset_index(drop=True)
        pd.testing.assert_frame_equal(ma, mb, check_exact=True)
    grown = a[(a.name == "grown") & (a.epoch == 2)].set_index("model")["value"]
    assert grown.loc[0] > 0 and grown.loc[2] > 0 and grown.loc[1] == grown.loc[3] == 0


def test_growth_settings_enter_the_run_id(tmp_path):
    data = synthetic()

    def run_id(**kw):
        return Engine(SPECS, config(), tmp_path, modifiers=[lambda: grower(**kw)], data=data,
                      progress=False).run_id

    ids = {run_id(), run_id(every=7), run_id(init="random"), run_id(horizon=50.0),
           run_id(max_new=3), run_id(seed=1), run_id(rule=BenefitRule()),
           run_id(rule=BenefitRule(quantile=0.25)), run_id(price=1e-3)}
    assert len(ids) == 9


if __name__ == "__main__":
    main()
