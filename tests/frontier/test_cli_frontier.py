"""``widthlab frontier`` on a saved model, with synthetic splits in place of MNIST."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from widthlab import cli_frontier
from widthlab.cli import main
from widthlab.nn.bank import MLP

from .conftest import blobs, fit


@pytest.fixture
def fake_mnist(monkeypatch):
    x, y = blobs(400, 784, 10, 7)

    def splits(dataset, data_dir, calib_size, user=None):
        n = 200 if calib_size is None else min(calib_size, 200)
        return (x[:n], y[:n]), (x[200:], y[200:])

    monkeypatch.setattr(cli_frontier, "_splits", splits)
    return x, y


def test_pickled_module(tmp_path, fake_mnist, capsys):
    x, y = fake_mnist
    model = fit(nn.Sequential(nn.Linear(784, 24), nn.ReLU(), nn.Linear(24, 10)), x[:200],
                y[:200], steps=40)
    torch.save(model, tmp_path / "m.pt")
    out = tmp_path / "out"
    rc = main(["frontier", "--model", str(tmp_path / "m.pt"), "--trust-model", "--layer", "0",
               "--method", "obs", "--method", "random", "-o", str(out)])
    assert rc == 0
    table = pd.read_csv(out / "frontier.csv")
    assert set(table.method) == {"obs", "random"} and table.k.max() == 24
    assert (out / "frontier.png").stat().st_size > 1000
    from widthlab.frontier import frontiers

    ref = frontiers(model, "0", (x[:200], y[:200]), (x[200:], y[200:]), methods=["obs"])
    text = capsys.readouterr().out
    assert f"recommended width of 0: {ref['obs'].recommend(0.005)} " in text


def test_state_dict_needs_arch(tmp_path, fake_mnist, capsys):
    model = MLP([784, 16, 10])
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    args = ["frontier", "--model", str(tmp_path / "sd.pt"), "--layer", "layers.0",
            "-o", str(tmp_path / "o")]
    assert main(args) == 2
    assert "--arch" in capsys.readouterr().err
    assert main([*args, "--arch", "784,16,10", "--method", "obs"]) == 0
    assert main([*args, "--arch", "784,17,10"]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_residual_layer_is_refused(tmp_path, fake_mnist, capsys):
    from .conftest import Residual

    model = Residual()
    model.inp = torch.nn.Linear(784, 8)  # reads the (fake) MNIST images
    torch.save(model, tmp_path / "r.pt")
    rc = main(["frontier", "--model", str(tmp_path / "r.pt"), "--trust-model", "--layer",
               "inp"])
    assert rc == 2
    assert "residual stream" in capsys.readouterr().err


def test_users_own_data_file(tmp_path, capsys):
    """``--data FILE`` (issue 19): the frontier of a model trained on a user's dataset."""
    import numpy as np
    import torch
    from torch import nn

    from widthlab.cli import main

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 20))
    y = (x[:, :3] @ rng.normal(size=(3, 3))).argmax(1)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
    torch.save(model, tmp_path / "model.pt")
    assert main(["frontier", "--model", str(tmp_path / "model.pt"), "--trust-model", "--layer",
                 "0", "--data",
                 str(tmp_path / "mine.npz"), "--method", "obs", "--device", "cpu", "-o",
                 str(tmp_path / "out")]) == 0
    assert "recommended width of 0" in capsys.readouterr().out
    assert (tmp_path / "out" / "frontier.csv").is_file()
