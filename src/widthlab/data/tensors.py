"""In-memory tensors for training: normalised float32 inputs, int64 labels, seeded splits.

:class:`DatasetSplits` is what every dataset becomes, built-in (:func:`load_splits`) or the
user's own (:mod:`widthlab.data.user`: ``from_arrays``, ``load_data``, ``from_dataset``).

Example::

    from widthlab.data import load_splits
    d = load_splits("mnist", val_size=5000, seed=0)
    d.train.x.shape   # torch.Size([55000, 784]), float32, zero mean / unit std over the train set
    d.test.y.dtype    # torch.int64
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from widthlab.data.cache import cached_path, load_file, user_data_dir
from widthlab.data.idx import parse_idx
from widthlab.data.registry import DatasetSpec, get_spec
from widthlab.errors import UsageError


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` of shape (N, n_features), float32, and labels ``y`` of shape (N,), int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class DatasetSplits:
    """Train / validation / test splits of one dataset, plus how they were built.

    The first seven fields are the historical ones (positional construction keeps working);
    the rest have defaults, so splits built by hand (tests, synthetic tasks) need not set them.

    Attributes
    ----------
    name : the dataset's name (``"mnist"``, a file's stem, or the ``name`` given).
    train, val, test : the splits; inputs ``(N, n_features)`` float32, labels ``(N,)`` int64.
    mean, std : the global normalisation of the built-in image sets (pixels in [0, 1] units);
        0.0 and 1.0 for user data, which is standardised per feature instead.
    seed : the seed of the validation (and hold-out) split.
    classes : the original label of each class index ``0 .. n_classes-1``, or None (then
        :attr:`n_classes` is inferred from the labels).
    feature_mean, feature_std : per-feature standardisation, float64 arrays ``(n_features,)``
        computed on the training split only (None for the built-in sets: global stats).
    content_id : hash of the content (inputs, labels, split settings); None when built by hand.
    source : where the data came from: a file path, ``"arrays"``, ``"dataset <class>"`` or a
        built-in dataset name; None when built by hand.
    settings : how the splits were made (``val_size``, ``test``, ``test_size``; for files also
        ``path``, absolute, and ``target``): what :func:`~widthlab.data.reload_splits` needs.
    sample_shape : the shape of one sample before it was flattened, e.g. ``(3, 32, 32)`` for
        images given as ``(N, 3, 32, 32)`` (``(1, H, W)`` for ``(N, H, W)``); None for samples
        given flat. :meth:`images` reshapes the inputs back for convolutional models.
    """

    name: str
    train: Split
    val: Split
    test: Split
    mean: float  # pixel mean (in [0, 1] units) used for normalisation
    std: float
    seed: int
    classes: tuple[Any, ...] | None = field(default=None, compare=False)
    feature_mean: np.ndarray | None = field(default=None, compare=False, repr=False)
    feature_std: np.ndarray | None = field(default=None, compare=False, repr=False)
    content_id: str | None = None
    source: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False)
    sample_shape: tuple[int, ...] | None = field(default=None, compare=False)

    @property
    def n_features(self) -> int:
        """Number of inputs per sample (the width of the first layer; all of an image's
        values when :meth:`images` kept its shape)."""
        return int(math.prod(self.train.x.shape[1:]))

    def images(self, shape: tuple[int, ...] | None = None) -> DatasetSplits:
        """The same splits with inputs ``(N, C, H, W)`` for a convolutional model: ``shape``
        ``(C, H, W)``, default :attr:`sample_shape` (the built-in image sets: ``(1, 28, 28)``).

        Raises
        ------
        UsageError
            When the samples have no image shape (given flat, e.g. a CSV) and none is given,
            or ``shape`` does not hold ``n_features`` values.
        """
        shape = tuple(shape or self.sample_shape or ())
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or math.prod(shape) != self.n_features:
            raise UsageError(f"{self.name}: a convolutional model needs images (N, C, H, W); "
                             f"the samples have {self.n_features} values and no image shape "
                             f"{shape or ''}; give x as an (N, C, H, W) or (N, H, W) array in "
                             "an .npz file")

        def as_images(s: Split) -> Split:
            return Split(s.x.reshape(len(s.x), *shape), s.y)

        return replace(self, train=as_images(self.train), val=as_images(self.val),
                       test=as_images(self.test), sample_shape=shape)

    @property
    def n_classes(self) -> int:
        """Number of classes (output units): ``len(classes)``, else ``max label + 1``."""
        if self.classes is not None:
            return len(self.classes)
        tops = [int(s.y.max()) for s in (self.train, self.val, self.test) if len(s)]
        return max(tops) + 1 if tops else 0

    def split(self, which: str) -> Split:
        try:
            return {"train": self.train, "val": self.val, "test": self.test}[which]
        except KeyError:
            raise UsageError(f"unknown split {which!r}; choose train, val or test") from None

    def to(self, device: torch.device | str) -> DatasetSplits:
        return replace(self, train=self.train.to(device), val=self.val.to(device),
                       test=self.test.to(device))

    def head(self, n_train: int) -> DatasetSplits:
        """The same splits with only the first ``n_train`` training samples (all else kept)."""
        if not 0 < n_train <= len(self.train):
            raise UsageError(f"train_size must be in [1, {len(self.train)}], got {n_train}")
        return replace(self, train=Split(self.train.x[:n_train], self.train.y[:n_train]))

    def describe(self) -> dict[str, Any]:
        """What to store with a run: plain JSON types only (lists, floats, ints, strings).

        ``standardise`` is ``"global"`` (``mean`` / ``std`` floats, the built-in image sets)
        or ``"per-feature"`` (``feature_mean`` / ``feature_std`` lists of ``n_features``
        floats, from the training split only).
        """
        out: dict[str, Any] = {
            "name": self.name, "source": self.source,
            "content_id": self.content_id, "n_features": self.n_features,
            "n_classes": self.n_classes,
            "classes": None if self.classes is None else [_plain(c) for c in self.classes],
            "n_train": len(self.train), "n_val": len(self.val), "n_test": len(self.test),
            "seed": int(self.seed), "settings": {k: _plain(v) for k, v in self.settings.items()},
        }
        if self.feature_mean is None or self.feature_std is None:
            out.update(standardise="global", mean=float(self.mean), std=float(self.std))
        else:
            out.update(standardise="per-feature",
                       feature_mean=[float(v) for v in self.feature_mean],
                       feature_std=[float(v) for v in self.feature_std])
        return out


def _plain(v: Any) -> Any:
    """A numpy scalar as the matching Python scalar (JSON-ready); anything else unchanged."""
    return v.item() if isinstance(v, np.generic) else v


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

    The splits of the last two datasets read from the cache are kept in memory (keyed by the
    cached files' sizes and modification times, so a replaced file is read again) and handed
    out as copies: a reproduction's ~20 runs per dataset read, verify and normalise the files
    once instead of once each.
    """
    spec = get_spec(name)
    if not 0 <= val_size < 60000:
        raise UsageError(f"val_size must be in [0, 60000), got {val_size}")
    key = _memo_key(spec, val_size, seed, data_dir)
    if key is not None and key in _MEMO:
        _MEMO.move_to_end(key)
        return _copy(_MEMO[key]).to(device)
    out = _build_splits(spec, val_size, seed, data_dir)
    if key is not None:
        _MEMO[key] = out
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
        out = _copy(out)
    return out.to(device)


_MEMO: OrderedDict[tuple, DatasetSplits] = OrderedDict()
_MEMO_SIZE = 2  # reproduce alternates MNIST and FashionMNIST jobs


def _memo_key(spec: DatasetSpec, val_size: int, seed: int, data_dir) -> tuple | None:
    """What identifies a built-in dataset's splits read from the cache: the split settings and
    each cached file's path, size and modification time (None: not from the cache alone)."""
    if user_data_dir(data_dir) is not None:
        return None
    try:
        files = tuple((str(p), st.st_size, st.st_mtime_ns)
                      for p in (cached_path(spec, f) for f in spec.files) for st in [p.stat()])
    except OSError:  # not cached yet: the first load fetches it
        return None
    return spec.name, int(val_size), int(seed), files


def _copy(d: DatasetSplits) -> DatasetSplits:
    """``d`` with its own tensors (a caller may write into them)."""
    return replace(d, **{k: Split(v.x.clone(), v.y.clone())
                         for k, v in (("train", d.train), ("val", d.val), ("test", d.test))})


def _build_splits(spec: DatasetSpec, val_size: int, seed: int, data_dir) -> DatasetSplits:
    """:func:`load_splits` from the files, on the CPU."""
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
    return DatasetSplits(spec.name, train, val, test, mean, std, seed, classes=spec.classes,
                         content_id=builtin_content_id(spec, val_size, seed), source=spec.name,
                         settings={"val_size": val_size, "test": "official"},
                         sample_shape=(1, *tr_x.shape[1:]) if tr_x.ndim == 3 else None)


def builtin_content_id(spec: DatasetSpec, val_size: int, seed: int) -> str:
    """Content id of a built-in dataset: its files are SHA-256-verified, so hashing those
    checksums with the split settings identifies the content without reading the pixels."""
    blob = json.dumps({"files": [f.sha256 for f in spec.files], "val_size": int(val_size),
                       "seed": int(seed), "test": "official"}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
