"""widthlab._compat: torchvision, timm, transformers and Lightning import beside the CPU torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torchvision")  # a dev dependency; the check below needs it installed

CHECK = textwrap.dedent(
    """
    import torch
    from widthlab._compat import ensure_torchvision_importable
    how = ensure_torchvision_importable()
    assert ensure_torchvision_importable() == how  # a second call changes nothing
    import torchvision, timm, transformers
    import lightning.pytorch  # torchmetrics imports torchvision too
    print("how", how)
    print("has_ops", torchvision.extension._has_ops())
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    print("shape", tuple(model(x).shape))
    # the stem conv by hand (float64): the model really computes, not a stub
    ref = torch.nn.functional.conv2d(x.double(), model.conv1.weight.double(), stride=2, padding=3)
    print("conv_err", float((model.conv1(x).double() - ref).abs().max()))
    try:
        torch.ops.torchvision.nms(torch.rand(3, 4), torch.rand(3), 0.5)
        print("nms ran")
    except RuntimeError as err:
        print("nms_error", "are not available" in str(err))
    print("after_import", ensure_torchvision_importable())
    """
)


def test_torchvision_timm_transformers_lightning_import_and_run_in_a_fresh_process():
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines["shape"] == "(2, 7)"
    assert float(lines["conv_err"]) < 1e-4
    if lines["how"] == "shimmed":  # CPU torch + PyPI's CUDA torchvision (this project's CI)
        assert lines["has_ops"] == "False"
        assert lines["nms_error"] == "True"
        assert lines["after_import"] == "shimmed"
    else:  # a torchvision whose extension loads: nothing is defined, the real nms runs
        assert lines["how"] == "native" and lines["has_ops"] == "True"
        assert lines["after_import"] == "imported"


def test_without_torchvision_nothing_is_defined(monkeypatch):
    import widthlab._compat as compat

    monkeypatch.setattr(compat, "_LIBRARY", None)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(compat.importlib.util, "find_spec", lambda name: None)
    assert compat.ensure_torchvision_importable() == "absent"
    assert compat._LIBRARY is None
