"""In-memory tensors for training: normalised float32 images, int64 labels, seeded splits.

Example::

    from widthlab.data import load_splits
    d = load_splits("mnist", val_size=5000, seed=0)
    d.train.x.shape   # torch.Size([55000, 784]), float32, zero mean / unit std over the train set
    d.test.y.dtype    # torch.int64
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from widthlab.data.cache import load_file
from widthlab.data.idx import parse_idx
from widthlab.data.registry import DatasetSpec, get_spec
from widthlab.errors import UsageError


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` of shape (N, 784), float32, and labels ``y`` of shape (N,), int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class DatasetSplits:
    """Train / validation / test splits of one dataset, plus how they were built."""

    name: str
    train: Split
    val: Split
    test: Split
    mean: float  # pixel mean (in [0, 1] units) used for normalisation
    std: float
    seed: int

    def split(self, which: str) -> Split:
        try:
            return {"train": self.train, "val": self.val, "test": self.test}[which]
        except KeyError:
            raise UsageError(f"unknown split {which!r}; choose train, val or test") from None

    def to(self, device: torch.device | str) -> DatasetSplits:
        return DatasetSplits(self.name, self.train.to(device), self.val.to(device),
                             self.test.to(device), self.mean, self.std, self.seed)


def load_arrays(name: str | DatasetSpec, data_dir: str | os.PathLike | None = None):
    """Raw verified arrays: ``(train_images, train_labels, test_images, test_labels)``, uint8."""
    spec = get_spec(name) if isinstance(name, str) else name
    out = []
    for split in ("train", "test"):
        for kind in ("images", "labels"):
            f = spec.file(split, kind)
            arr = parse_idx(load_file(spec, f, data_dir), f.name)
            if arr.shape != f.shape or arr.dtype != np.uint8:
                raise UsageError(f"{f.name}: unexpected shape {arr.shape} / dtype {arr.dtype}")
            out.append(arr)
    return tuple(out)


def load_splits(
    name: str,
    *,
    val_size: int = 5000,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> DatasetSplits:
    """Load a dataset as normalised tensors with a deterministic train/validation split.

    Parameters
    ----------
    name : "mnist" or "fashion-mnist".
    val_size : number of official training images held out for validation (0 allowed).
    seed : the permutation seed of the split; the same seed always gives the same split.
    data_dir : an extra directory to take the IDX files from (else cache / system / network).
    device : where the tensors live.

    Pixels are scaled to [0, 1], then normalised with the mean and std of the *whole official
    training set* (computed here, in float64), as ``ToTensor() + Normalize(mean, std)`` does.
    """
    spec = get_spec(name)
    if not 0 <= val_size < 60000:
        raise UsageError(f"val_size must be in [0, 60000), got {val_size}")
    tr_x, tr_y, te_x, te_y = load_arrays(spec, data_dir)
    scaled = tr_x.astype(np.float64) / 255.0
    mean, std = float(scaled.mean()), float(scaled.std())

    def prep(x: np.ndarray) -> torch.Tensor:
        xf = (x.reshape(len(x), -1).astype(np.float32) / np.float32(255.0) - np.float32(mean))
        return torch.from_numpy(xf / np.float32(std))

    perm = np.random.default_rng(seed).permutation(len(tr_y))
    val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    x_all, y_all = prep(tr_x), torch.from_numpy(tr_y.astype(np.int64))
    train = Split(x_all[train_idx], y_all[train_idx])
    val = Split(x_all[val_idx], y_all[val_idx])
    test = Split(prep(te_x), torch.from_numpy(te_y.astype(np.int64)))
    return DatasetSplits(spec.name, train, val, test, mean, std, seed).to(device)
