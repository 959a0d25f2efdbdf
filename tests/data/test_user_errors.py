"""Every bad-data case: a UsageError with one line naming the source, the problem and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from widthlab.data import from_arrays, from_dataset, load_data
from widthlab.errors import UsageError

X = np.random.default_rng(0).normal(size=(40, 3))
Y = np.arange(40) % 2


def _bad(fn, *args, where: str, says: tuple[str, ...], **kwargs) -> str:
    with pytest.raises(UsageError) as err:
        fn(*args, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{where}: "), msg
    for part in says:
        assert part in msg, msg
    return msg


def _with(a: np.ndarray, i: int, j: int | None, v: float) -> np.ndarray:
    a = a.astype(np.float64).copy()
    a[(i, j) if j is not None else i] = v
    return a


ARRAY_CASES = {
    "nan input": (_with(X, 3, 1, np.nan), Y, {}, ("NaN at sample 3, feature 1", "impute")),
    "inf input": (_with(X, 5, 2, -np.inf), Y, {}, ("inf at sample 5, feature 2",)),
    "non-integer label": (X, _with(Y, 7, None, 0.5), {}, ("non-integer label", "0.5",
                                                          "sample 7")),
    "negative label": (X, _with(Y, 2, None, -1), {}, ("negative label", "sample 2", "0, 1")),
    "nan label": (X, _with(Y, 4, None, np.nan), {}, ("missing label", "sample 4", "drop")),
    "single class": (X, np.full(40, 3), {}, ("single class", "at least two classes")),
    "lengths": (X, Y[:39], {}, ("x has 40 samples but y has 39", "one label per sample")),
    "too few for validation": (X, Y, {"val_size": 31, "test_size": 8},
                               ("leave 1 for training", "lower val_size")),
    "val fraction": (X, Y, {"val_size": 1.5}, ("val_size=1.5", "count as an int")),
    "no test": (X, Y, {"test_size": 0}, ("no test split",)),
    "empty": (X[:0], Y[:0], {}, ("x is empty",)),
    "text inputs": (np.array([["a", "b"]] * 40), Y, {}, ("real numbers",)),
    "one-hot labels": (X, np.eye(2)[Y], {}, ("one label per sample", "argmax")),
    "mixed labels": (X, np.array([1, "a"] * 20, dtype=object), {}, ("mixes text and numbers",)),
    "test features": (X, Y, {"test": (X[:5, :2], Y[:5])}, ("x_test has 2 features",)),
    "test kinds": (X, Y, {"test": (X[:4], np.array(["a", "b"] * 2))}, ("text in one split",)),
}


@pytest.mark.parametrize("case", ARRAY_CASES)
def test_bad_arrays(case):
    x, y, kwargs, says = ARRAY_CASES[case]
    _bad(from_arrays, x, y, where="arrays", says=says, **kwargs)


def test_single_class_training_split():
    y = np.zeros(6, dtype=np.int64)
    y[5] = 1
    seed = next(s for s in range(100) if 5 in np.random.default_rng(s).permutation(6)[:2])
    _bad(from_arrays, X[:6], y, val_size=1, test_size=1, seed=seed, where="arrays",
         says=("training split (4 samples) holds a single class", "another seed"))


def _csv(tmp_path, df: pd.DataFrame, name: str = "d.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_missing_folder_unknown_and_empty_files(tmp_path):
    _bad(load_data, tmp_path / "nope.csv", "y", where=str(tmp_path / "nope.csv"),
         says=("no such file",))
    _bad(load_data, tmp_path, where=str(tmp_path), says=("is a folder",))
    (tmp_path / "d.xlsx").write_bytes(b"PK")
    _bad(load_data, tmp_path / "d.xlsx", where=str(tmp_path / "d.xlsx"),
         says=("unknown format '.xlsx'", ".npz, .csv"))
    for name in ("e.npz", "e.csv", "e.parquet"):
        (tmp_path / name).write_bytes(b"")
        _bad(load_data, tmp_path / name, "y", where=str(tmp_path / name),
             says=("the file is empty",))
    (tmp_path / "blank.csv").write_text("\n\n")
    _bad(load_data, tmp_path / "blank.csv", "y", where=str(tmp_path / "blank.csv"),
         says=("the file is empty",))
    (tmp_path / "head.csv").write_text("a,b,y\n")
    _bad(load_data, tmp_path / "head.csv", "y", where=str(tmp_path / "head.csv"),
         says=("no rows", "columns: a, b, y"))


def test_unreadable_files(tmp_path):
    cases = {"g.npz": (b"not a zip at all", "not a readable .npz file (not a zip archive)"),
             "g.parquet": (b"not parquet, just text\n", "not a readable Parquet file"),
             "g.csv": (b"a,b\n\xff\xfe,\x80\x81\n", "not a readable CSV file")}
    for name, (content, says) in cases.items():
        (tmp_path / name).write_bytes(content)
        _bad(load_data, tmp_path / name, None if name.endswith("npz") else "b",
             where=str(tmp_path / name), says=(says,))
    np.save(tmp_path / "one.npy", X)
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    _bad(load_data, tmp_path / "one.npz", where=str(tmp_path / "one.npz"),
         says=("holds one array (numpy.save)", "numpy.savez"))


def test_bad_npz_contents(tmp_path):
    p = tmp_path / "d.npz"
    cases = [({"x": X}, ("no array named 'y'", "arrays: x")),
             ({"x": X, "y": Y, "x_tst": X}, ("unexpected array(s) x_tst",)),
             ({"x": X, "y": Y, "x_test": X}, ("only one of x_test and y_test",)),
             ({"x": X, "y": np.array([0, None] * 20, dtype=object)}, ("not a readable .npz",)),
             ({"x": _with(X, 1, 0, np.nan), "y": Y}, ("x has NaN at sample 1, feature 0",)),
             ({"x": X, "y": Y, "x_test": X[:3], "y_test": Y[:2]},
              ("x_test has 3 samples but y_test has 2",))]
    for arrays, says in cases:
        np.savez(p, **arrays)
        _bad(load_data, p, where=str(p), says=says)
    np.savez(p, x=X, y=Y)
    _bad(load_data, p, "y", where=str(p), says=("drop target",))


def test_bad_tables(tmp_path):
    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(label=Y)
    p = _csv(tmp_path, df)
    _bad(load_data, p, where=str(p), says=("name the label column", "columns: a, b, c, label"))
    _bad(load_data, p, "lbl", where=str(p), says=("no column 'lbl'", "columns: a, b, c, label"))
    df.to_csv(tmp_path / "i.csv")  # with the index as an unnamed first column
    _bad(load_data, tmp_path / "i.csv", "label", where=str(tmp_path / "i.csv"),
         says=("1 column(s) without a header ('Unnamed: 0'", "index=False"))
    wide = pd.DataFrame(np.zeros((3, 30)), columns=[f"c{i}" for i in range(30)])
    _bad(load_data, _csv(tmp_path, wide, "w.csv"), "y", where=str(tmp_path / "w.csv"),
         says=("c11, ... (30 in all)",))
    cases = [(df.assign(b=["x"] * 40), "label", ("column(s) b are not numeric",)),
             (df.assign(c=_with(X, 2, 2, np.nan)[:, 2]), "label",
              ("the table has NaN at sample 2, column 'c'",)),
             (df.assign(label=_with(Y, 9, None, np.nan)), "label",
              ("column 'label' has a missing label at sample 9",)),
             (df.assign(label=_with(Y, 6, None, 1.5)), "label",
              ("column 'label' has a non-integer label (1.5 at sample 6)",)),
             (df.assign(label=_with(Y, 6, None, -2)), "label", ("negative label",)),
             (df.assign(label=["cat"] * 40), "label", ("every label is 'cat'", "single class")),
             (df[["label"]], "label", ("only the label column",))]
    for frame, target, says in cases:
        p = _csv(tmp_path, frame)
        _bad(load_data, p, target, where=str(p), says=says)
        q = tmp_path / "d.parquet"
        frame.to_parquet(q, index=False)
        _bad(load_data, q, target, where=str(q), says=says)


class _Items(torch.utils.data.Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def test_bad_datasets():
    t = torch.zeros(3)
    cases = [([t, t], ("item 0 is a Tensor, not an (input, label) pair",)),
             ([(t, 0), (torch.zeros(4), 1)], ("item 1 has input shape (4,)", "item 0 has (3,)")),
             ([(t, 0), ("an image", 1)], ("item 1's input is a str", "ToTensor")),
             ([(t, torch.tensor([0, 1]))], ("item 0's label has shape (2,)",)),
             ([], ("the dataset is empty",))]
    for items, says in cases:
        _bad(from_dataset, _Items(items), where="dataset _Items", says=says)
    good = _Items([(torch.full((3,), float(i)), i % 2) for i in range(20)])
    _bad(from_dataset, good, test=_Items([(t, 0), (t, -1)]), where="dataset _Items",
         says=("y_test has a negative label",))
