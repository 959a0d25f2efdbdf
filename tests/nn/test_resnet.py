"""widthlab.nn.resnet: ResNet-20 for 1x28x28 images, its shapes, its parameter and multiply-add
counts against hand arithmetic and against the modules themselves, the residual wiring, and a
hand-shrunk model's state_dict loading into the class built at its new sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.nn import ResNet, ResNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ResNetConfig(stage_widths=(8, 12, 20), block_widths=((3, 8, 5), (12, 7, 2), (20, 1, 9)),
                     n_classes=7)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def images(n=5, seed=0):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_resnet20_shapes_and_its_published_size():
    model = ResNet().eval()
    seen = []
    for stage in model.stages:
        stage.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    x = images()
    out = model(x)
    assert out.shape == (5, 10)
    assert seen == [(5, 16, 28, 28), (5, 32, 14, 14), (5, 64, 7, 7)]
    torch.testing.assert_close(model(x.flatten(1)), out, rtol=0, atol=0)  # flattened input
    # 20 layers with weights: stem, 3 stages x 3 blocks x 2 convs, fc (+ 2 shortcut convs)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 18 + 2 and sum(isinstance(m, nn.Linear) for m in model.modules()) == 1
    # by hand: stem 9*16 + 32; stage 1: 3 * (2*9*16*16 + 4*16);
    # stage 2: 9*16*32 + 9*32*32 + 16*32 + 6*32 + 2 * (2*9*32*32 + 4*32); stage 3 likewise; fc
    stage1 = 3 * (2 * 9 * 16 * 16 + 4 * 16)
    stage2 = 9 * 16 * 32 + 9 * 32 * 32 + 16 * 32 + 6 * 32 + 2 * (2 * 9 * 32 * 32 + 4 * 32)
    stage3 = 9 * 32 * 64 + 9 * 64 * 64 + 32 * 64 + 6 * 64 + 2 * (2 * 9 * 64 * 64 + 4 * 64)
    by_hand = 9 * 16 + 32 + stage1 + stage2 + stage3 + 64 * 10 + 10
    assert by_hand == 272186 == n_params(model) == ResNetConfig().param_count()


def loop_param_count(cfg: ResNetConfig) -> int:
    """The same count by a plain loop over the blocks (an independent reading of the design)."""
    w = cfg.stage_widths
    total = 9 * cfg.in_channels * w[0] + 2 * w[0]
    for s in range(len(w)):
        for b in range(cfg.blocks):
            c_in = w[s - 1] if (b == 0 and s > 0) else w[s]
            m = cfg.block_widths[s][b]
            total += 9 * c_in * m + 2 * m + 9 * m * w[s] + 2 * w[s]
            if b == 0 and s > 0:
                total += c_in * w[s] + 2 * w[s]
    return total + w[-1] * cfg.n_classes + cfg.n_classes


@pytest.mark.parametrize("cfg", [ResNetConfig(), SMALL, ResNetConfig(blocks=1, in_channels=3,
                                                                      image_size=9)])
def test_param_count_and_macs_match_the_modules(cfg):
    model = ResNet(cfg).eval()
    assert n_params(model) == loop_param_count(cfg) == cfg.param_count()
    macs = []

    def count(m, inp, out):  # multiply-adds per image of a conv or Linear, from what it did
        k = m.weight[0].numel()  # in/groups * kh * kw, or in_features
        macs.append(out[0].numel() * k)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(count)
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    assert model(x).shape == (2, cfg.n_classes)
    assert sum(macs) == cfg.macs()


def test_identity_shortcuts_carry_the_stream_and_projections_only_where_shapes_change():
    model = ResNet().eval()
    projections = [(s, b) for s, st in enumerate(model.stages) for b, blk in enumerate(st)
                   if len(blk.shortcut) > 0]
    assert projections == [(1, 0), (2, 0)]
    block = model.stages[0][1]
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()  # the residual branch outputs exactly 0
    x = torch.randn(3, 16, 28, 28)
    torch.testing.assert_close(block(x), torch.relu(x), rtol=0, atol=0)


def test_a_hand_shrunk_model_loads_into_the_class_at_its_new_sizes():
    torch.manual_seed(0)
    model = ResNet().eval()
    with torch.no_grad():  # make the BatchNorm statistics non-trivial
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = images(seed=1)
    # keep channels 0..9 of block (1, 2)'s inner group, by hand: conv1 rows, bn1, conv2 columns
    blk, keep = model.stages[1][2], torch.arange(10)
    shrunk = ResNet(model.current_config()).eval()
    shrunk.load_state_dict(model.state_dict())
    with torch.no_grad():  # the reference: the same units zeroed after bn1 (masked)
        mask = torch.zeros(32)
        mask[keep] = 1
        handle = blk.bn1.register_forward_hook(lambda m, i, o: o * mask.view(1, -1, 1, 1))
        masked = model(x)
        handle.remove()
        b = shrunk.stages[1][2]
        b.conv1.weight = nn.Parameter(b.conv1.weight[keep].clone())
        b.conv1.out_channels = 10
        for name in ("weight", "bias"):
            setattr(b.bn1, name, nn.Parameter(getattr(b.bn1, name)[keep].clone()))
        b.bn1.running_mean = b.bn1.running_mean[keep].clone()
        b.bn1.running_var = b.bn1.running_var[keep].clone()
        b.bn1.num_features = 10
        b.conv2.weight = nn.Parameter(b.conv2.weight[:, keep].clone())
        b.conv2.in_channels = 10
    cfg = shrunk.current_config()
    assert cfg.block_widths == ((16, 16, 16), (32, 32, 10), (64, 64, 64))
    # 22 channels fewer: conv1 rows and conv2 columns (9 * 32 each), bn1 weight and bias
    assert cfg.param_count() == n_params(shrunk) == 272186 - 2 * 22 * 9 * 32 - 2 * 22
    rebuilt = ResNet(cfg).eval()
    rebuilt.load_state_dict(shrunk.state_dict())
    torch.testing.assert_close(rebuilt(x), masked, rtol=1e-5, atol=1e-6)
    assert (masked - model(x)).abs().max() > 1e-3  # the removed channels mattered


@pytest.mark.parametrize("kwargs, match", [
    (dict(stage_widths=()), "at least one stage"),
    (dict(stage_widths=(16, 0, 64)), r"stage_widths\[1\] must be a positive int"),
    (dict(blocks=0), "blocks must be a positive int"),
    (dict(block_widths=((1, 2, 3), (4, 5, 6))), "3 inner widths for each of the 3 stages"),
    (dict(block_widths=7), "3 inner widths for each of the 3 stages"),
    (dict(block_widths=((1, 2, 3), (4, 5, 6), (7, 8, 2.5))), r"block_widths\[2\]\[2\]"),
    (dict(n_classes=True), "n_classes must be a positive int"),
])
def test_bad_configs_are_refused_naming_the_field(kwargs, match):
    with pytest.raises(UsageError, match=match):
        ResNetConfig(**kwargs)


def test_fold_batchnorm_keeps_the_function_and_folds_by_the_formula():
    from widthlab.nn.resnet import fold_batchnorm

    torch.manual_seed(0)
    model = ResNet(SMALL)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # statistics and affine parameters far from the defaults
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 3 + 0.1)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert model.training  # the model given is not changed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not folded.training and folded.current_config() == model.current_config()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = images(7)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=0, atol=1e-5)
    # one conv by the formula, in float64: w * gamma / sqrt(var + eps), beta - mean * that
    bn, conv = model.stages[1][0].shortcut[1], model.stages[1][0].shortcut[0]
    scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
    fc = folded.stages[1][0].shortcut[0]
    torch.testing.assert_close(fc.weight.double(), conv.weight.double() * scale[:, None, None,
                                                                                 None])
    torch.testing.assert_close(fc.bias.double(), bn.bias.double() - bn.running_mean.double()
                               * scale)
    again = fold_batchnorm(folded)  # nothing left to fold: the same function
    with torch.no_grad():
        torch.testing.assert_close(again(x), folded(x), rtol=0, atol=0)
    with pytest.raises(UsageError, match="ResNet"):
        fold_batchnorm(nn.Linear(2, 2))
