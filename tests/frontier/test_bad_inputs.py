"""Issue 30: the frontier refuses bad inputs in one line (wrong feature count, NaN or inf in
the data, non-integer widths) instead of a traceback or a silent answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from widthlab.cli import main
from widthlab.errors import UsageError
from widthlab.frontier import width_frontier

from .conftest import blobs, fit


@pytest.fixture(scope="module")
def trained():
    x, y = blobs(240, 12, 3, 5)
    model = fit(nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3)), x, y, steps=30)
    return model, x, y


def test_wrong_number_of_features(trained):
    model, x, y = trained
    with pytest.raises(UsageError, match=r"calib: the model cannot run on x of shape "
                                         r"\(120, 7\).*reads 12 features"):
        width_frontier(model, "0", (x[:120, :7], y[:120]), (x[120:], y[120:]))


def test_wrong_number_of_features_on_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(200, 5)), y=np.arange(200) % 3)
    torch.save(nn.Sequential(nn.Linear(9, 4), nn.ReLU(), nn.Linear(4, 3)).state_dict(),
               tmp_path / "sd.pt")
    rc = main(["frontier", "--model", str(tmp_path / "sd.pt"), "--arch", "9,4,3", "--layer",
               "0", "--data", str(tmp_path / "d.npz"), "--device", "cpu",
               "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "reads 9 features" in err and len(err.strip().splitlines()) == 1


class _Buggy(nn.Module):
    """A model whose forward has a bug of its own (a call with a wrong argument)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 10), nn.Linear(10, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x), 0.5))  # relu takes one tensor: TypeError


def test_a_bug_inside_the_model_propagates(trained):
    """A TypeError raised by the model's own code is not reported as the inputs not fitting."""
    _, x, y = trained
    with pytest.raises(TypeError, match="relu") as info:
        width_frontier(_Buggy(), "fc1", (x[:120], y[:120]), (x[120:], y[120:]))
    assert not isinstance(info.value, UsageError)


@pytest.mark.parametrize("split, value, word", [("calib", float("nan"), "NaN"),
                                                ("eval", float("inf"), "inf")])
def test_non_finite_data_is_named(trained, split, value, word):
    model, x, y = trained
    x = x.clone()
    x[3 if split == "calib" else 123, 4] = value  # sample 3 of either split
    with pytest.raises(UsageError, match=f"{split}: x has {word} in sample 3"):
        width_frontier(model, "0", (x[:120], y[:120]), (x[120:], y[120:]))


def test_non_integer_labels_are_refused(trained):
    model, x, y = trained
    with pytest.raises(UsageError, match="integer class labels"):
        width_frontier(model, "0", (x[:120], y[:120] + 0.5), (x[120:], y[120:]))


@pytest.mark.parametrize("method", ["obs", "random"])
def test_cut_needs_a_whole_width_in_range(trained, method):
    model, x, y = trained
    fr = width_frontier(model, "0", (x[:120], y[:120]), (x[120:], y[120:]), method=method)
    for bad in (True, 2.5, "3"):
        with pytest.raises(UsageError, match="an int"):
            fr.cut(bad)
    for bad in (0, -1, 11):
        with pytest.raises(UsageError) as info:
            fr.cut(bad)
        suggested = int(str(info.value).split("e.g. cut(")[1].split(")")[0])
        assert fr.cut(suggested)[0].out_features == suggested  # the suggestion works
    assert fr.cut(np.int64(4))[0].out_features == 4


class _SkipsHead(nn.Module):
    """Reads its hidden layer's consumer only for inputs whose first feature is >= 0."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.other = nn.Linear(4, 6), nn.Linear(6, 3), nn.Linear(4, 3)

    def forward(self, x):
        if bool((x[:, 0] < 0).all()):
            return self.other(x)
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_consumer_the_forward_never_reaches_is_named():
    from widthlab.frontier.path import consumer_inputs, trace_layer

    torch.manual_seed(0)
    model, x = _SkipsHead(), torch.rand(8, 4)
    path = trace_layer(model, "fc1", x[:2])
    assert path.consumer == "fc2" and consumer_inputs(model, path, x).shape == (8, 6)
    with pytest.raises(UsageError, match="never reached consumer 'fc2'"):
        consumer_inputs(model, path, -x, batch=4)
