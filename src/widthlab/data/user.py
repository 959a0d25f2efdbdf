"""Your own data as training splits: numpy / torch arrays or a ``torch.utils.data.Dataset``.

Files (``.npz``, CSV, Parquet) go through :func:`widthlab.data.load_data`, which ends here too.

Example::

    from sklearn.datasets import load_digits
    from widthlab.data import from_arrays
    x, y = load_digits(return_X_y=True)             # (1797, 64) float64, labels 0..9
    d = from_arrays(x, y, name="digits", val_size=0.1, test_size=0.2, seed=0)
    d.n_features, d.n_classes, len(d.test)          # 64, 10, 360
    d.describe()["feature_mean"]                    # training-split means, stored with a run

The rules, the same for every entry point:

- **Inputs**: any real dtype and shape ``(n, ...)``, flattened to ``(n, d)``. They are checked
  and standardised in float64 with the mean and std (ddof 0) of each feature *over the training
  split only* (a constant feature gets std 1 and becomes exactly 0), then cast to float32.
- **Labels**: integers >= 0 (floats holding integers such as ``1.0`` are fine), booleans or
  strings. The classes are the distinct labels of all splits in sorted order: class ``k`` is
  the ``k``-th smallest label, so labels ``0 .. K-1`` stay as they are, ``1, 2, 3`` become
  ``0, 1, 2`` and strings sort as text (``"cat" < "dog"``). ``DatasetSplits.classes`` keeps the
  original labels. Negative labels are refused (``-1`` usually marks an unlabelled sample).
- **Splits**: the test split is the user's (``test=(x_test, y_test)``) or a seeded hold-out of
  ``test_size`` samples; the validation split is ``val_size`` of the remaining samples. Sizes
  are counts (int) or fractions in [0, 1) (rounded up). One permutation of
  ``numpy.random.default_rng(seed)`` draws the hold-out first, then the validation samples;
  every split keeps the original order of its samples.
- **Identity**: ``content_id`` hashes the float64 inputs, the labels, the classes and the split
  (sizes, seed, whose test split), not the name, file format or dtype the values came in: an
  unchanged file resumes its runs, one changed value gives new ones.

Every problem with the data raises :class:`~widthlab.errors.UsageError` with one line that
names the source (the file, ``arrays`` or the dataset) and the fix, before any training.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np
import torch

from widthlab.data.tensors import DatasetSplits, Split, _plain
from widthlab.errors import UsageError

Size = int | float
USER_DATA_VERSION = 1  # bump when the preparation (and so the numbers) of user data changes


def fail(where: str, message: str) -> NoReturn:
    """Raise the one-line :class:`UsageError` ``"<where>: <message>"``."""
    raise UsageError(f"{where}: {message}")


def _numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        if a.dtype in (torch.float16, torch.bfloat16):
            a = a.float()
        return a.numpy()
    return np.asarray(a)


def as_inputs(x: Any, where: str, what: str = "x",
              names: Sequence[str] | None = None) -> np.ndarray:
    """Inputs as a checked, C-contiguous float64 array ``(n, d)``; ``names``: feature names."""
    arr = _numpy(x)
    if arr.dtype.kind not in "biuf":
        fail(where, f"{what} must hold real numbers, got dtype {arr.dtype}; "
                    "encode text or categories as numbers first")
    if arr.ndim == 0 or arr.shape[0] == 0:
        fail(where, f"{what} is empty (no samples); give at least one sample per row")
    out = np.ascontiguousarray(arr.reshape(arr.shape[0], -1), dtype=np.float64)
    if out.shape[1] == 0:
        fail(where, f"{what} has no features (shape {arr.shape}); give each sample a value")
    bad = ~np.isfinite(out)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(out[i, j]) else "inf"
        col = f"column {names[j]!r}" if names is not None else f"feature {j}"
        k = int(bad.sum())
        fail(where, f"{what} has {kind} at sample {i}, {col} ({k} non-finite "
                    f"value{'s' if k > 1 else ''} in all); drop or impute them first")
    return out


def as_labels(y: Any, where: str, what: str = "y") -> np.ndarray:
    """Labels as a 1-D int64 array (values checked) or a str array."""
    arr = _numpy(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        fail(where, f"{what} must hold one label per sample, got shape {arr.shape}; "
                    "for one-hot labels pass y.argmax(1)")
    if arr.dtype.kind == "O":
        arr = _object_labels(arr, where, what)
    kind = arr.dtype.kind
    if kind in "US":
        return arr.astype(str)
    if kind not in "biuf":
        fail(where, f"{what} must hold integer class labels, got dtype {arr.dtype}")
    if kind == "f":
        missing = ~np.isfinite(arr)
        if missing.any():
            i = int(np.argmax(missing))
            fail(where, f"{what} has a missing label ({arr[i]} at sample {i}); "
                        "drop the unlabelled samples")
        frac = arr != np.round(arr)
        if frac.any():
            i = int(np.argmax(frac))
            fail(where, f"{what} has a non-integer label ({arr[i]} at sample {i}); widthlab "
                        "classifies: give integer class labels (bin a continuous target)")
    big = arr >= 2.0 ** 63 if kind == "f" else arr > np.iinfo(np.int64).max
    if big.any():  # a float cast would wrap to -2**63, a uint64 one to negative numbers
        i = int(np.argmax(big))
        fail(where, f"{what} has a label too large for a class index ({arr[i]} at sample {i}; "
                    "the largest is 2**63 - 1); give class labels 0, 1, 2, ...")
    neg = arr < 0
    if neg.any():
        i = int(np.argmax(neg))
        fail(where, f"{what} has a negative label ({arr[i]} at sample {i}); class labels "
                    "must be 0, 1, 2, ... (drop unlabelled samples)")
    return arr.astype(np.int64)


def _object_labels(arr: np.ndarray, where: str, what: str) -> np.ndarray:
    values = arr.tolist()
    if all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=str)
    if all(isinstance(v, int) for v in values):  # Python ints: exact, not through float64
        lo, hi = min(values), max(values)
        if lo < np.iinfo(np.int64).min or hi > np.iinfo(np.int64).max:
            v = hi if hi > np.iinfo(np.int64).max else lo
            i = values.index(v)
            fail(where, f"{what} has a label out of range for a class index ({v} at sample "
                        f"{i}); give class labels 0, 1, 2, ...")
        return np.asarray(values, dtype=np.int64)
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        fail(where, f"{what} mixes text and numbers; give all labels as integers "
                    "or all as strings")


def encode_labels(parts: Sequence[np.ndarray], where: str
                  ) -> tuple[list[np.ndarray], tuple[Any, ...]]:
    """Class indices of each part (one mapping for all: sorted distinct labels) + the labels."""
    if len({p.dtype.kind == "U" for p in parts}) > 1:
        fail(where, "the labels are text in one split and numbers in another; "
                    "use one kind for all")
    classes, codes = np.unique(np.concatenate(parts), return_inverse=True)
    if len(classes) < 2:
        fail(where, f"every label is {_plain(classes[0])!r}: a single class; "
                    "widthlab needs at least two classes")
    bounds = np.cumsum([len(p) for p in parts])[:-1]
    return ([c.astype(np.int64) for c in np.split(codes.reshape(-1), bounds)],
            tuple(_plain(c) for c in classes))


def resolve_size(size: Size, n: int, what: str, where: str) -> int:
    """A count (int >= 0) or a fraction in [0, 1) of ``n`` (rounded up) as a count."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        fail(where, f"{what} must be a count (int) or a fraction in [0, 1), got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 <= size < 1.0:
            fail(where, f"{what}={size} is not a fraction in [0, 1); give a count as an int")
        return math.ceil(float(size) * n)
    if size < 0:
        fail(where, f"{what} must be >= 0, got {size}")
    return int(size)


def split_indices(n: int, n_val: int, n_test: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted (train, val, hold-out test) indices of ``n`` samples: one seeded permutation,
    the first ``n_test`` for the hold-out, the next ``n_val`` for validation."""
    perm = np.random.default_rng(seed).permutation(n)
    return (np.sort(perm[n_test + n_val:]), np.sort(perm[n_test:n_test + n_val]),
            np.sort(perm[:n_test]))


def _check_pair(x: np.ndarray, y: np.ndarray, where: str, xn: str, yn: str) -> None:
    if len(x) != len(y):
        fail(where, f"{xn} has {len(x)} samples but {yn} has {len(y)} labels; "
                    "give one label per sample")


def _plan(n: int, val_size: Size, test_size: Size, user_test: bool, seed: int,
          where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_test = 0 if user_test else resolve_size(test_size, n, "test_size", where)
    if not user_test and n_test == 0:
        fail(where, "test_size=0 leaves no test split; give a test split or a test_size > 0")
    n_val = resolve_size(val_size, n - n_test, "val_size", where) if n > n_test else 0
    if n - n_test - n_val < 2:
        held = f" (test hold-out {n_test})" if n_test else ""
        fail(where, f"too few samples: {n} leave {max(n - n_test - n_val, 0)} for training after "
                    f"{n_val} for validation{held}; lower val_size"
                    f"{' or test_size' if n_test else ''} or give more samples")
    return split_indices(n, n_val, n_test, seed)


def content_hash(arrays: Sequence[np.ndarray], meta: dict[str, Any]) -> str:
    """SHA-256 (16 hex digits) of C-contiguous arrays (shape, dtype, bytes) and JSON ``meta``."""
    h = hashlib.sha256(f"widthlab-user-data-v{USER_DATA_VERSION}".encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()[:16]


def standardisation(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature float64 mean and std (ddof 0) of the training inputs, and the power of two
    they were computed at. A feature constant on the training split (exactly: max == min) gets
    its value as mean and std 1, so it maps to exactly 0 (a computed mean such as
    ``sum(30 * [0.1]) / 30`` is off by an ulp).

    The moments are computed on each feature divided by ``scale``, the power of two nearest
    above its largest magnitude: exact, so ordinary features get the same bits as unscaled,
    while features near 1e308 (whose squares overflow) or 1e-308 (whose squares underflow)
    still get a finite, positive std."""
    _, exp = np.frexp(np.abs(x_train).max(0))
    scale = np.ldexp(1.0, np.minimum(exp, 1023))
    xs = x_train / scale
    mean, std = xs.mean(0), xs.std(0)
    const = x_train.max(0) == x_train.min(0)
    mean[const], std[const] = xs[0, const], 1.0 / scale[const]
    return mean * scale, std * scale, scale


def standardise(a: np.ndarray, mean: np.ndarray, std: np.ndarray, scale: np.ndarray,
                where: str, what: str) -> np.ndarray:
    """``(a - mean) / std`` in float32, computed at ``scale`` (see :func:`standardisation`);
    a value too far from the training split for float32 is refused."""
    with np.errstate(over="ignore"):  # checked below
        out = ((a / scale - mean / scale) / (std / scale)).astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        fail(where, f"{what}: feature {j} of sample {i} ({a[i, j]!r}) lies too many standard "
                    "deviations from the training samples' mean for float32; rescale or clip "
                    "that feature")
    return out


def build_splits(x: Any, y: Any, test: tuple[Any, Any] | None, *, where: str, name: str,
                 val_size: Size = 0.1, test_size: Size = 0.2, seed: int = 0,
                 device: torch.device | str = "cpu", names: Sequence[str] | None = None,
                 x_name: str = "x", y_name: str = "y") -> DatasetSplits:
    """The shared path of every user-data entry point (see the module docstring for rules)."""
    xs, ys = as_inputs(x, where, x_name, names), as_labels(y, where, y_name)
    _check_pair(xs, ys, where, x_name, y_name)
    parts = [ys]
    if test is not None:
        if not isinstance(test, (tuple, list)) or len(test) != 2:
            fail(where, "test must be a pair (x_test, y_test)")
        xt, yt = as_inputs(test[0], where, "x_test", names), as_labels(test[1], where, "y_test")
        _check_pair(xt, yt, where, "x_test", "y_test")
        if xt.shape[1] != xs.shape[1]:
            fail(where, f"x_test has {xt.shape[1]} features per sample but {x_name} has "
                        f"{xs.shape[1]}; give both the same features")
        parts.append(yt)
    tr, va, ho = _plan(len(xs), val_size, test_size, test is not None, seed, where)
    codes, classes = encode_labels(parts, where)
    if len(np.unique(codes[0][tr])) < 2:
        fail(where, f"the training split ({len(tr)} samples) holds a single class; "
                    "give more samples, a smaller val_size/test_size or another seed")
    mean, std, scale = standardisation(xs[tr])

    def split(a: np.ndarray, c: np.ndarray) -> Split:
        return Split(torch.from_numpy(standardise(a, mean, std, scale, where, x_name)),
                     torch.from_numpy(c))

    test_split = split(xt, codes[1]) if test is not None else split(xs[ho], codes[0][ho])
    settings = {"val_size": val_size, "test": "user" if test is not None else "holdout",
                "test_size": None if test is not None else test_size}
    meta = {"classes": list(classes), "n_val": len(va), "n_holdout": len(ho),
            "test": settings["test"], "seed": int(seed)}
    content = [xs, codes[0]] + ([xt, codes[1]] if test is not None else [])
    return DatasetSplits(
        name, split(xs[tr], codes[0][tr]), split(xs[va], codes[0][va]), test_split,
        0.0, 1.0, int(seed), classes=classes, feature_mean=mean, feature_std=std,
        content_id=content_hash(content, meta), source=where, settings=settings,
        sample_shape=_sample_shape(x),
    ).to(device)


def _sample_shape(x: Any) -> tuple[int, ...] | None:
    """``(C, H, W)`` of inputs given as images ``(N, C, H, W)`` (``(1, H, W)`` for
    ``(N, H, W)``); None for flat samples. Not part of the content id: the values are the
    same; a convolutional model that reads the shape states it in its own config."""
    shape = tuple(int(v) for v in getattr(x, "shape", ())[1:])
    if len(shape) == 2:
        return (1, *shape)
    return shape if len(shape) == 3 else None


def from_arrays(x: Any, y: Any, *, name: str = "arrays", val_size: Size = 0.1,
                test: tuple[Any, Any] | None = None, test_size: Size = 0.2, seed: int = 0,
                device: torch.device | str = "cpu") -> DatasetSplits:
    """Training splits from in-memory arrays.

    Parameters
    ----------
    x : array-like of shape (n_samples, ...)
        numpy array, torch tensor or nested lists of real numbers; flattened per sample.
    y : array-like of shape (n_samples,)
        class labels: integers >= 0 (``1.0`` is fine), booleans or strings.
    name : str
        the dataset's name in run ids and reports.
    val_size : int or float
        validation samples, as a count or a fraction in [0, 1) of the non-test samples.
    test : (x_test, y_test), optional
        the user's test split; if None, ``test_size`` samples are held out (seeded).
    test_size : int or float
        size of the hold-out when ``test`` is None (a count or a fraction of all samples).
    seed : int
        seed of the hold-out and validation split.
    device : where the tensors live.

    Returns
    -------
    DatasetSplits
        standardised float32 inputs and int64 class indices, with ``n_features``,
        ``n_classes``, ``classes``, per-feature stats, ``content_id`` and ``describe()``.

    Raises
    ------
    UsageError
        for bad data (non-finite inputs, bad labels, a single class, mismatched lengths, too
        few samples), with one line starting ``arrays:``.
    """
    return build_splits(x, y, test, where="arrays", name=name, val_size=val_size,
                        test_size=test_size, seed=seed, device=device)


def dataset_arrays(ds: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack the ``(input, label)`` items of a map-style or iterable dataset."""
    try:
        items = (ds[i] for i in range(len(ds)))
    except TypeError:
        items = iter(ds)
    xs: list[np.ndarray] = []
    ys: list[Any] = []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            fail(where, f"item {i} is a {type(item).__name__}, not an (input, label) pair; "
                        "make the dataset return (x, y)")
        xi = _numpy(item[0])
        if xi.dtype.kind not in "biuf":
            fail(where, f"item {i}'s input is a {type(item[0]).__name__} (dtype {xi.dtype}), "
                        "not numbers; convert it to a tensor (e.g. transform=ToTensor())")
        if xs and xi.shape != xs[0].shape:
            fail(where, f"item {i} has input shape {tuple(xi.shape)} but item 0 has "
                        f"{tuple(xs[0].shape)}; give every input the same shape")
        label = _numpy(item[1])
        if label.size != 1:
            fail(where, f"item {i}'s label has shape {tuple(label.shape)}; give one class "
                        "label per item")
        xs.append(xi)
        ys.append(label.reshape(()).item())
    if not xs:
        fail(where, "the dataset is empty; give at least one (input, label) item")
    return np.stack(xs), np.asarray(ys)


def from_dataset(ds: Any, *, name: str = "dataset", val_size: Size = 0.1,
                 test: Any = None, test_size: Size = 0.2, seed: int = 0,
                 device: torch.device | str = "cpu") -> DatasetSplits:
    """Training splits from a ``torch.utils.data.Dataset`` of ``(input, label)`` pairs.

    Map-style datasets are read with ``ds[i]`` for ``i < len(ds)``, iterable ones by
    iterating. ``test`` is another such dataset or an ``(x_test, y_test)`` pair; the other
    parameters and the rules are those of :func:`from_arrays`.
    """
    where = f"dataset {type(ds).__name__}"
    x, y = dataset_arrays(ds, where)
    if test is not None and not isinstance(test, (tuple, list)):
        test = dataset_arrays(test, f"test dataset {type(test).__name__}")
    return build_splits(x, y, test, where=where, name=name, val_size=val_size,
                        test_size=test_size, seed=seed, device=device)
