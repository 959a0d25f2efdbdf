"""Network slimming (bn_l1, slim_) and Torch-Pruning's group magnitude pruning down to a
multiply-add budget, checked against ResNetConfig's own arithmetic at the widths reached."""

import numpy as np
import pytest
import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier.peers import bn_scores, cut_network_to_macs_, slim_, tp_prune_
from widthlab.metrics.cost import count_macs
from widthlab.nn.resnet import ResNet, ResNetConfig
from widthlab.nn.slimming import bn_l1
from widthlab.units import build_graph

CFG = ResNetConfig(stage_widths=(4, 6), blocks=1, image_size=8)


def _model():
    torch.manual_seed(0)
    model = ResNet(CFG)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    return model, torch.randn(3, 1, 8, 8)


def test_bn_l1_is_the_sum_of_abs_scales():
    model, _ = _model()
    with torch.no_grad():
        model.bn1.weight[0] = -0.25
    gammas = [m.weight.detach().double().numpy() for m in model.modules()
              if isinstance(m, nn.BatchNorm2d)]
    assert len(gammas) == 6  # stem, 2 in each of the 2 blocks, the projection shortcut
    penalty = bn_l1(model)
    assert penalty.item() == pytest.approx(sum(np.abs(g).sum() for g in gammas), rel=1e-6)
    penalty.backward()
    assert model.bn1.weight.grad[0] == -1 and model.bn1.weight.grad[1] == 1
    with pytest.raises(UsageError, match="BatchNorm"):
        bn_l1(nn.Linear(2, 2))


def test_stream_scores_are_the_max_over_its_batchnorms():
    model, x = _model()
    graph = build_graph(model, x)
    scores = bn_scores(model, graph)
    stream0 = [model.bn1, model.stages[0][0].bn2]  # the stem and block 0's second BN
    ref = np.max([m.weight.detach().abs().double().numpy() for m in stream0], axis=0)
    np.testing.assert_allclose(scores["stream:stages.0.0"].numpy(), ref)
    inner = model.stages[1][0].bn1.weight.detach().abs().double().numpy()
    np.testing.assert_allclose(scores["stages.1.0.conv1:out"].numpy(), inner)


def test_slim_removes_the_smallest_scales_down_to_the_target():
    model, x = _model()
    b0, b1 = model.stages[0][0], model.stages[1][0]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(x).square().mean().backward()
    opt.step()
    with torch.no_grad():
        b0.bn1.weight[[1, 2]] = torch.tensor([0.01, 0.02])  # inner channels of block 0
        for bn in (b1.bn2, b1.shortcut[1]):  # stream 1, unit 3: small in both its BNs
            bn.weight[3] = 0.03
        b1.bn2.weight[0] = 0.001  # small in one BN only: the max keeps it
    keep = [0, 1, 2, 4, 5]
    w_before = b1.bn2.weight.detach().clone()
    mom_before = opt.state[b1.conv2.weight]["momentum_buffer"].clone()
    want = ResNetConfig(stage_widths=(4, 5), blocks=1, image_size=8, block_widths=((2,), (6,)))
    out = slim_(model, x, target_macs=want.macs(), optimizer=opt)
    assert model.current_config() == want
    assert out["macs"] == count_macs(model, x) == want.macs() < out["macs_before"] == CFG.macs()
    assert out["removed"] == {"stages.0.0.conv1:out": 2, "stream:stages.1.0": 1}
    assert out["threshold"] == pytest.approx(0.03)
    torch.testing.assert_close(b1.bn2.weight.detach(), w_before[keep])
    torch.testing.assert_close(opt.state[b1.conv2.weight]["momentum_buffer"], mom_before[keep])
    # one MAC fewer than reachable by these three: the next-smallest channel must go too
    model2, _ = _model()
    out2 = slim_(model2, x, target_macs=want.macs() - 1)
    assert out2["macs"] <= want.macs() - 1


def test_slim_refuses_an_unreachable_target_before_changing_anything():
    model, x = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UsageError, match="cannot be reached"):
        slim_(model, x, target_macs=10)
    with pytest.raises(UsageError, match="positive int"):
        slim_(model, x, target_macs=0.5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_tp_prune_reaches_the_target_and_runs():
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    cfg = ResNetConfig(stage_widths=(8, 16), blocks=2, image_size=12)
    model, x = ResNet(cfg), torch.randn(2, 1, 12, 12)
    target = cfg.macs() // 2
    out = tp_prune_(model, x, target_macs=target, steps=20)
    assert out["met"] and out["macs"] <= target < out["macs_before"] == cfg.macs()
    now = model.current_config()  # the class's own arithmetic at the pruned widths
    assert count_macs(model, x) == out["macs"] == now.macs()
    assert out["widths"]["stream:stages.1"] == now.stage_widths[1]
    assert model(x).shape == (2, 10) and model.fc.out_features == 10
    with pytest.raises(UsageError, match="importance"):
        tp_prune_(model, x, target_macs=target, importance="taylor")


def test_tp_prune_leaves_batchnorm_statistics_and_the_mode_alone():
    """A model in training mode with a random example: no probe forward may move a
    BatchNorm's running statistics; the mode is the caller's afterwards."""
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    cfg = ResNetConfig(stage_widths=(8, 16), blocks=1, image_size=12)
    model, x = ResNet(cfg).train(), 5 + 3 * torch.randn(2, 1, 12, 12)
    tp_prune_(model, x, target_macs=cfg.macs() // 2, steps=10)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(int(m.num_batches_tracked) == 0 for m in bns)
    assert all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in bns)
    assert model.training


def test_cut_network_to_macs_reaches_an_absolute_target():
    torch.manual_seed(0)
    cfg = ResNetConfig(stage_widths=(6, 8), blocks=1, image_size=8)
    model = ResNet(cfg)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    target = cfg.macs() * 2 // 5  # 2.5x fewer
    out = cut_network_to_macs_(model, (x, y), target_macs=target, rounds=2)
    assert out["met"] and out["macs"] <= target < out["macs_before"] == cfg.macs()
    assert count_macs(model, x) == model.current_config().macs() == out["macs"]
    assert out["widths"]["stream:stages.1.0"] == model.current_config().stage_widths[1]
    assert model(x).shape == (64, 10)
    with pytest.raises(UsageError, match="target_macs"):
        cut_network_to_macs_(model, (x, y), target_macs=target, amount=0.5)
