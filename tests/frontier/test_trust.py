"""Issue 30: no code from a model or checkpoint file runs unless the user trusts the file."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from widthlab.cli import main
from widthlab.cli_frontier import load_model
from widthlab.errors import UsageError


class _Evil:
    """Unpickling it creates the file ``target`` (a stand-in for any shell command)."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.makedirs, (self.target,))


@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
def test_malicious_model_runs_nothing(tmp_path, capsys, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if kind == "torch.save":
        torch.save({"w": torch.zeros(2), "x": _Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Evil(marker)))
    rc = main(["frontier", "--model", str(path), "--layer", "0", "--arch", "2,2",
               "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert not marker.exists()
    assert "--trust-model" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="trust=True"):
        load_model(path, "2,2")
    assert not marker.exists()


def test_whole_module_needs_trust(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    torch.save(model, tmp_path / "m.pt")
    with pytest.raises(UsageError, match="--trust-model"):
        load_model(tmp_path / "m.pt")
    got = load_model(tmp_path / "m.pt", trust=True)
    x = torch.randn(5, 3)
    assert torch.equal(got(x), model(x))


def test_trust_model_is_explained_in_help(capsys):
    assert main(["frontier", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--trust-model" in out and "runs code" in out


def test_text_file_as_model(tmp_path, capsys):
    (tmp_path / "notes.pt").write_text("this is not a model\n")
    rc = main(["frontier", "--model", str(tmp_path / "notes.pt"), "--layer", "0",
               "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a torch.save file" in err and len(err.strip().splitlines()) == 1


def test_state_dict_mismatch_lists_every_key(tmp_path):
    from widthlab.nn.bank import MLP

    sd = MLP([6, 5, 4, 3]).state_dict()
    torch.save(sd, tmp_path / "sd.pt")
    with pytest.raises(UsageError) as info:
        load_model(tmp_path / "sd.pt", "6,5,3")
    msg = str(info.value)
    assert "\n" not in msg
    assert "unexpected keys:" in msg and "layers.2.weight" in msg and "layers.2.bias" in msg
    assert "layers.1.weight (4, 5) vs (3, 5)" in msg
    assert "give the layer sizes" in msg
    with pytest.raises(UsageError) as info:
        load_model(tmp_path / "sd.pt", "6,5,4,3,2")
    assert "missing keys: layers.3.weight, layers.3.bias" in str(info.value)
