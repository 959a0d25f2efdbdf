"""``widthlab frontier`` for groups: a factory + state dict or a torch.export file, separate
calibration and evaluation data, a budget over the whole network; misuse exits 2."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from widthlab.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

NET = textwrap.dedent("""
    from torch import nn

    def build(h0=16, h1=12):
        return nn.Sequential(nn.Linear(6, h0), nn.ReLU(), nn.Linear(h0, h1), nn.ReLU(),
                             nn.Linear(h1, 3))
""")


def build(h0=16, h1=12):
    return nn.Sequential(nn.Linear(6, h0), nn.ReLU(), nn.Linear(h0, h1), nn.ReLU(),
                         nn.Linear(h1, 3))


def n_params(h0, h1):
    return 6 * h0 + h0 + h0 * h1 + h1 + h1 * 3 + 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("groups")
    g = torch.Generator().manual_seed(0)
    centres = 2 * torch.randn(3, 6, generator=g)
    y = torch.randint(0, 3, (600,), generator=g)
    x = centres[y] + torch.randn(600, 6, generator=g)
    torch.manual_seed(0)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x[:300]), y[:300]).backward()
        opt.step()
    model.eval()
    (d / "net.py").write_text(NET)
    torch.save(model.state_dict(), d / "net.pt")
    torch.save((x[:300], y[:300]), d / "calib.pt")
    np.savez(d / "eval.npz", x=x[300:].numpy(), y=y[300:].numpy())
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},)),
                      d / "net.pt2")
    torch.export.save(torch.export.export(model, (x[:2],)), d / "static.pt2")
    return d, model, (x[:300], y[:300]), (x[300:], y[300:])


def run(d, *extra, model=None):
    model = model or f"{d / 'net.py'}:build"
    args = ["frontier", "--model", model, "--calib", str(d / "calib.pt"),
            "--eval", str(d / "eval.npz")]
    if model.endswith(":build"):
        args += ["--state", str(d / "net.pt")]
    return main(args + list(extra))


def _loss_acc(model, data):
    with torch.no_grad():
        out = model(data[0])
    return float(F.cross_entropy(out, data[1])), float((out.argmax(1) == data[1]).double().mean())


def test_params_budget_widths_state_dict_and_curve(files, tmp_path, capsys):
    d, model, _, ev = files
    out = tmp_path / "cut"
    assert run(d, "--target", "params", "--amount", "0.5", "-o", str(out)) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "widths.csv")
    assert list(table.group) == ["0:out", "2:out"]
    assert pd.read_json(out / "widths.json").equals(table)
    k0, k1 = (int(table.set_index("group").kept[g]) for g in ("0:out", "2:out"))
    assert list(table.width) == [16, 12] and k0 < 16 and k1 <= 12
    # cut_network counts a unit's parameters at the current widths (its row, bias and the
    # next layer's column, which shrinks as the other group is cut): at the end the two
    # groups' live count is at most half of the dense count, within one unit
    live = k0 * (6 + 1 + k1) + k1 * (k0 + 1 + 3)
    dense = 16 * (6 + 1 + 12) + 12 * (16 + 1 + 3)
    assert live <= 0.5 * dense + (6 + 1 + 12), (k0, k1, live, dense)
    small = build(k0, k1)  # the same class at the new widths: the state dict loads as is
    sd = torch.load(out / "model.pt", weights_only=True)
    small.load_state_dict(sd)
    assert sum(p.numel() for p in small.parameters()) == n_params(k0, k1)
    loss, acc = _loss_acc(small.eval(), ev)
    assert f"-> {loss:.4f}, accuracy" in printed and f"-> {100 * acc:.2f}%" in printed
    curve = pd.read_csv(out / "curve.csv")
    assert list(curve.columns) == ["group", "saving", "predicted_loss"]
    assert len(curve) == (16 - k0) + (12 - k1) and curve.saving.is_monotonic_increasing


def test_fraction_by_magnitude_keeps_the_largest_consumer_columns(files, tmp_path):
    d, model, _, _ = files
    out = tmp_path / "mag"
    assert run(d, "--fraction", "0.5", "--method", "magnitude", "--groups", "0:out",
               "-o", str(out)) == 0
    sd = torch.load(out / "model.pt", weights_only=True)
    w0, w2 = model[0].weight.detach().numpy(), model[2].weight.detach().numpy()
    score = (w2.astype(np.float64) ** 2).sum(0)  # group L2 over the consumer's columns
    kept = np.sort(np.argsort(score, kind="stable")[8:])
    np.testing.assert_array_equal(sd["0.weight"].numpy(), w0[kept])
    np.testing.assert_array_equal(sd["2.weight"].numpy(), w2[:, kept])  # not compensated
    curve = pd.read_csv(out / "curve.csv")
    np.testing.assert_allclose(curve.cost.to_numpy(), np.sort(score), rtol=1e-6)


def test_export_file_and_accuracy_target(files, tmp_path, capsys):
    d, model, calib, _ = files
    out = tmp_path / "exp"
    assert run(d, "--target", "macs", "--amount", "0.4", "-o", str(out),
               model=str(d / "net.pt2")) == 0
    table = pd.read_csv(out / "widths.csv")
    assert (table.kept < table.width).any()
    out2 = tmp_path / "acc"
    assert run(d, "--target", "accuracy", "--amount", "0.02", "-o", str(out2),
               "--device", "cpu") == 0
    t2 = pd.read_csv(out2 / "widths.csv").set_index("group")
    small = build(int(t2.kept["0:out"]), int(t2.kept["2:out"]))
    small.load_state_dict(torch.load(out2 / "model.pt", weights_only=True))
    assert _loss_acc(small.eval(), calib)[1] >= _loss_acc(model, calib)[1] - 0.02 - 1e-12


@pytest.mark.parametrize("extra, message", [
    (["--target", "params"], "needs --amount"),
    (["--target", "speed", "--amount", "1"], "loss, accuracy, params or macs"),
    (["--amount", "0.5"], "either --target"),
    (["--target", "params", "--amount", "0.5", "--method", "taylor"], "use --fraction"),
    (["--fraction", "0.5", "--method", "l2"], "unknown --method 'l2'"),
    (["--fraction", "0.5", "--groups", "nope"], "no group 'nope'"),
    (["--fraction", "0.5", "--layer", "0"], "--layer do(es) not apply"),
    (["--fraction", "0.5", "--amount", "0.3"], "--amount goes with --target"),
])
def test_misuse_exits_2(files, capsys, extra, message):
    d = files[0]
    assert run(d, *extra) == 2
    assert message in capsys.readouterr().err


def test_same_data_refused_unless_asked(files, tmp_path, capsys):
    d = files[0]
    args = ["frontier", "--model", f"{d / 'net.py'}:build", "--state", str(d / "net.pt"),
            "--calib", str(d / "calib.pt"), "--fraction", "0.5", "-o", str(tmp_path / "o")]
    x, y = torch.load(d / "calib.pt", weights_only=True)
    torch.save({"x": x.clone(), "y": y.clone()}, tmp_path / "copy.pt")  # same tensors
    assert main(args + ["--eval", str(tmp_path / "copy.pt")]) == 2
    assert "same data" in capsys.readouterr().err
    assert main(args + ["--eval", str(tmp_path / "copy.pt"), "--same-data"]) == 0


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_bad_models_and_files_exit_2(files, tmp_path, capsys):
    d, model, calib, _ = files
    base = ["frontier", "--calib", str(d / "calib.pt"), "--eval", str(d / "eval.npz"),
            "--fraction", "0.5"]
    assert main(base + ["--model", f"{d / 'net.py'}:build"]) == 2
    assert "--state" in capsys.readouterr().err
    torch.save(build(8, 12).state_dict(), tmp_path / "other.pt")
    assert main(base + ["--model", f"{d / 'net.py'}:build", "--state",
                        str(tmp_path / "other.pt")]) == 2
    assert "does not fit" in capsys.readouterr().err
    torch.jit.save(torch.jit.script(model), tmp_path / "ts.pt")
    assert main(base + ["--model", str(tmp_path / "ts.pt"), "--state", str(d / "net.pt")]) == 2
    assert "TorchScript" in capsys.readouterr().err
    assert main(base + ["--model", str(d / "static.pt2")]) == 2
    assert "dynamic batch dimension" in capsys.readouterr().err
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    assert main(base + ["--model", str(tmp_path / "bad.pt2")]) == 2
    assert "torch.export file" in capsys.readouterr().err
    torch.save([calib[0]], tmp_path / "one.pt")
    assert main(["frontier", "--model", f"{d / 'net.py'}:build", "--state", str(d / "net.pt"),
                 "--calib", str(tmp_path / "one.pt"), "--eval", str(d / "eval.npz"),
                 "--fraction", "0.5"]) == 2
    assert "(inputs, targets)" in capsys.readouterr().err
    assert main(["frontier", "--model", f"{d / 'net.py'}:build", "--fraction", "0.5"]) == 2
    assert "--calib and --eval" in capsys.readouterr().err


def test_chain_form_still_needs_a_layer(tmp_path, capsys):
    torch.save(build().state_dict(), tmp_path / "m.pt")
    assert main(["frontier", "--model", str(tmp_path / "m.pt"), "--arch", "6,16,12,3"]) == 2
    assert "give --layer" in capsys.readouterr().err
