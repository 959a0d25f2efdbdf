"""``widthlab units FILE.py:factory`` lists a user's model's groups; misuse exits 2."""

from __future__ import annotations

import textwrap

import pytest

from widthlab.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

NET = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    def build():
        return Net(), (torch.randn(2, 3, 6, 6),)

    def bare():
        return Net()
""")


def test_units_lists_groups_of_a_factory(tmp_path, capsys):
    path = tmp_path / "net.py"
    path.write_text(NET)
    assert main(["units", f"{path}:build"]) == 0
    out = capsys.readouterr().out
    assert "conv:out" in out and "channels" in out
    assert "1 groups, 8 units" in out
    assert main(["units", f"{path}:bare", "--shape", "1,3,4,4"]) == 0
    assert "conv:out" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["units", "nofile.py:build"], "no file"),
    (["units", "{path}"], "FILE.py:factory"),
    (["units", "{path}:nothing"], "no function 'nothing'"),
    (["units", "{path}:bare"], "--shape"),
    (["units", "{path}:bare", "--shape", "1,x"], "sizes like"),
])
def test_units_misuse_exits_2_with_the_fix(tmp_path, capsys, args, message):
    path = tmp_path / "net.py"
    path.write_text(NET)
    assert main([a.format(path=path) for a in args]) == 2
    assert message in capsys.readouterr().err
