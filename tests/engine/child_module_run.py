"""A small CNN with BatchNorm and dropout trained through the one lifecycle in a child process.

    python tests/engine/child_module_run.py STORE [--hang-at-step N] [--nan-at-step N]

``--hang-at-step N``: write STORE/../hang and sleep at the N-th optimizer step, so the parent can
SIGKILL the process there. ``--nan-at-step N``: the model's output becomes NaN from its N-th
training forward pass on (an injected divergence).
"""

from __future__ import annotations

import argparse
import pathlib

import torch
from torch import nn

from tests.children import hang_at_step
from widthlab.data.tensors import DatasetSplits, Split
from widthlab.engine.lifecycle import run_trainable
from widthlab.engine.module_run import ModuleRun
from widthlab.engine.modules import ModuleConfig

CONFIG = ModuleConfig(epochs=3, lr=3e-3, batch_size=32, schedule="cosine", shrink=False, seed=5)


def images(n_train: int = 256, n_test: int = 128, seed: int = 0) -> DatasetSplits:
    """4 classes of 1x8x8 images: the class is the brightest quadrant, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.randint(0, 4, (n,), generator=g)
        x = 0.5 * torch.randn(n, 1, 8, 8, generator=g)
        for q in range(4):
            r, c = divmod(q, 2)
            x[y == q, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.0
        return Split(x, y)

    tr, te = split(n_train), split(n_test)
    return DatasetSplits("quadrants", tr, Split(tr.x[:0], tr.y[:0]), te, 0.0, 1.0, seed)


class SmallCNN(nn.Module):
    """conv(1->6) + BatchNorm + ReLU + pool, dropout, Linear(6*4*4 -> 4)."""

    def __init__(self, seed: int = 0, nan_at_step: int | None = None):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(6 * 4 * 4, 4)
        self.nan_at_step = nan_at_step
        self.calls = 0

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        out = self.fc(self.drop(h.flatten(1)))
        if self.training:
            self.calls += 1
            if self.nan_at_step is not None and self.calls >= self.nan_at_step:
                out = out * float("nan")
        return out


def make_run(label: str = "cnn:bn", nan_at_step: int | None = None,
             cfg: ModuleConfig = CONFIG) -> ModuleRun:
    return ModuleRun(lambda: SmallCNN(0, nan_at_step), images(), cfg, label=label,
                     device="cpu", model_record={"name": "small-cnn", "arch": [6]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--hang-at-step", type=int)
    args = ap.parse_args()
    marker = pathlib.Path(args.store).parent / "hang"
    if args.hang_at_step is not None:
        hang_at_step(torch.optim.Adam, args.hang_at_step, marker)
    # the same run id as the parent's: the model class is named by its module, not __main__
    from tests.engine.child_module_run import make_run as importable

    print(run_trainable(importable(), args.store))


if __name__ == "__main__":
    main()
