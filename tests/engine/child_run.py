"""A training run in a child process, used by the kill -9 and concurrency tests.

    python tests/engine/child_run.py STORE [--hang-at-step N | --hang-before-commit E] [--tag T]

With a hang option the child writes STORE/../hang-T and then sleeps, so the parent can SIGKILL it
at a known point (mid-epoch, or between writing a checkpoint and committing its epoch).
"""

from __future__ import annotations

import argparse
import pathlib
import time

import torch

from widthlab.data.tensors import DatasetSplits, Split
from widthlab.engine.optim import BankOptimizer
from widthlab.engine.trainer import TrainConfig, train
from widthlab.nn.bank import ModelSpec
from widthlab.store import Store


def synthetic(n_train=640, n_val=128, n_test=128, d=20, seed=0) -> DatasetSplits:
    """A learnable 10-class problem: labels from a random linear map of Gaussian inputs."""
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(d, 10, generator=g)

    def split(n):
        x = torch.randn(n, d, generator=g)
        return Split(x, (x @ proj).argmax(1))

    return DatasetSplits("synthetic", split(n_train), split(n_val), split(n_test), 0.0, 1.0, seed)


SPECS = [ModelSpec((8,), seed=0), ModelSpec((16,), seed=1), ModelSpec((8,), seed=2),
         ModelSpec((12, 6), seed=3)]
CONFIG = dict(dataset="synthetic", epochs=4, batch_size=32, device="cpu", stats_epochs="all",
              preact_cov=True, eval_batch_size=100)



def install_hangs(marker: pathlib.Path, hang_at_step: int | None,
                  hang_before_commit: int | None, pause_s: float | None = None) -> None:
    """Make this process write ``marker`` and sleep at optimizer step ``hang_at_step`` or
    before committing epoch ``hang_before_commit``, so the parent can SIGKILL it there
    (``pause_s``: sleep that long once, then go on)."""

    def hang():
        marker.write_text("hanging")
        if pause_s is not None:
            time.sleep(pause_s)
            return
        while True:
            time.sleep(1)

    if hang_at_step is not None:
        step, count = BankOptimizer.step, [0]

        def slow_step(self):
            count[0] += 1
            if count[0] == hang_at_step:
                hang()
            step(self)

        BankOptimizer.step = slow_step
    if hang_before_commit is not None:
        commit = Store.commit_epoch

        def slow_commit(self, run_id, epoch, **kw):
            if epoch == hang_before_commit:
                hang()
            commit(self, run_id, epoch, **kw)

        Store.commit_epoch = slow_commit

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--hang-at-step", type=int)
    ap.add_argument("--hang-before-commit", type=int)
    ap.add_argument("--pause-s", type=float)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tag", default="x")
    args = ap.parse_args()
    marker = pathlib.Path(args.store).parent / f"hang-{args.tag}"

    install_hangs(marker, args.hang_at_step, args.hang_before_commit, args.pause_s)
    print(train(SPECS, TrainConfig(**CONFIG, lr=args.lr), args.store, data=synthetic(),
                progress=False))


if __name__ == "__main__":
    main()
