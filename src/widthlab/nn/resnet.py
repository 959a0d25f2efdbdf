"""A CIFAR-style ResNet-20 for 1-channel 28x28 images, written as a plain ``nn.Module``.

The residual network of He et al. (2016, section 4.2) in its "option B" variant: a 3x3 stem
conv, three stages of three basic blocks (two 3x3 convs with BatchNorm, ReLU after the first
and after the sum) at 16, 32 and 64 channels, the first block of stages 2 and 3 halving the
image with stride 2 and reaching the new width through a 1x1 conv + BatchNorm shortcut (every
other shortcut is the identity), global average pooling and one Linear: 1 + 3*3*2 + 1 = 20
layers with weights, 272,186 parameters for 1x28x28 inputs and 10 classes (the stages see 28x28,
14x14 and 7x7 maps).

Every width can be set, so the same class builds the network at the sizes a width search
learned, and a shrunk model's ``state_dict`` loads into
``ResNet(shrunk.current_config())``:

- ``stage_widths[s]``: the width of stage ``s``'s residual stream: the stem (for stage 0) or the
  first block's shortcut conv writes it, every block's second conv and BatchNorm write to it;
- ``block_widths[s][b]``: block ``b`` of stage ``s``'s inner width (its first conv's outputs,
  the second conv's inputs); by default the stage's width.

Example::

    model = ResNet(ResNetConfig())                    # ResNet-20, 272,186 parameters
    small = ResNet(ResNetConfig(stage_widths=(8, 16, 32),
                                block_widths=((4, 8, 8), (16, 16, 8), (32, 16, 16))))
    small(torch.randn(5, 1, 28, 28)).shape            # (5, 10)
    ResNetConfig().param_count(), ResNetConfig().macs()
    fast = fold_batchnorm(model)                      # inference copy: every BN in its conv
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from widthlab.errors import UsageError


@dataclass(frozen=True)
class ResNetConfig:
    """The sizes of a :class:`ResNet` (defaults: ResNet-20 for MNIST-shaped images)."""

    stage_widths: tuple[int, ...] = (16, 32, 64)  # residual stream width of each stage
    blocks: int = 3  # basic blocks per stage (ResNet-20: 3; ResNet-32: 5; ResNet-56: 9)
    # inner width of each block, [stage][block]; None: the stage's width (stored filled in)
    block_widths: tuple[tuple[int, ...], ...] | None = None
    in_channels: int = 1
    image_size: int = 28  # square inputs; flattened inputs are reshaped to this
    n_classes: int = 10

    def __post_init__(self):
        def positive(name, value):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"ResNetConfig.{name} must be a positive int, got {value!r}")

        stages = tuple(self.stage_widths)
        if not stages:
            raise UsageError("ResNetConfig.stage_widths needs at least one stage: (16, 32, 64)")
        for s, w in enumerate(stages):
            positive(f"stage_widths[{s}]", w)
        for name in ("blocks", "in_channels", "image_size", "n_classes"):
            positive(name, getattr(self, name))
        inner = self.block_widths
        if inner is None:
            inner = tuple((w,) * self.blocks for w in stages)
        try:
            inner = tuple(tuple(row) for row in inner)
        except TypeError:
            inner = ()
        if len(inner) != len(stages) or any(len(row) != self.blocks for row in inner):
            raise UsageError(
                f"ResNetConfig.block_widths must give {self.blocks} inner widths for each of the "
                f"{len(stages)} stages, got {self.block_widths!r}; leave it None for the stage "
                "widths")
        for s, row in enumerate(inner):
            for b, w in enumerate(row):
                positive(f"block_widths[{s}][{b}]", w)
        object.__setattr__(self, "stage_widths", stages)
        object.__setattr__(self, "block_widths", inner)

    def map_sizes(self) -> list[int]:
        """The side of each stage's feature maps (28, 14, 7 for 28x28 inputs)."""
        sizes, side = [], self.image_size
        for s in range(len(self.stage_widths)):
            if s > 0:
                side = (side - 1) // 2 + 1  # 3x3 conv, stride 2, padding 1
            sizes.append(side)
        return sizes

    def _layers(self):
        """``(kind, in, out, k, side)`` of every conv and BatchNorm, then the Linear."""
        widths, sides = self.stage_widths, self.map_sizes()
        yield "conv", self.in_channels, widths[0], 3, sides[0]  # stem
        yield "bn", widths[0], widths[0], 0, sides[0]
        for s, (w, side) in enumerate(zip(widths, sides, strict=True)):
            for b, m in enumerate(self.block_widths[s]):
                c_in = widths[s - 1] if b == 0 and s > 0 else w
                yield "conv", c_in, m, 3, side  # conv1 (stride 2 in a stage's first block)
                yield "bn", m, m, 0, side
                yield "conv", m, w, 3, side  # conv2
                yield "bn", w, w, 0, side
                if b == 0 and s > 0:  # option B: 1x1 conv + BN where the shape changes
                    yield "conv", c_in, w, 1, side
                    yield "bn", w, w, 0, side
        yield "linear", widths[-1], self.n_classes, 1, 1

    def param_count(self) -> int:
        """The parameters these widths imply: convs ``k*k*in*out`` (no bias), BatchNorm
        ``2*width``, the Linear ``in*out + out``."""
        total = 0
        for kind, c_in, c_out, k, _ in self._layers():
            total += {"conv": k * k * c_in * c_out, "bn": 2 * c_out,
                      "linear": c_in * c_out + c_out}[kind]
        return total

    def macs(self) -> int:
        """Multiply-adds of one image through the convs and the Linear (BatchNorm, ReLU, the
        adds and the pooling not counted): ``k*k*in*out*side*side`` per conv."""
        return sum(k * k * c_in * c_out * side * side
                   for kind, c_in, c_out, k, side in self._layers() if kind != "bn")


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, inner: int, c_out: int, stride: int, projection: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, inner, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()  # identity
        if projection:  # option B
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))  # (N, inner, H/stride, W/stride)
        out = self.bn2(self.conv2(out))  # (N, c_out, H/stride, W/stride)
        return F.relu(out + self.shortcut(x))  # the residual stream


class ResNet(nn.Module):
    """The CIFAR-style ResNet of :class:`ResNetConfig` (default: ResNet-20, 1x28x28, 10 classes).

    Reads ``(N, in_channels, H, W)`` images, or ``(N, in_channels * image_size**2)`` flattened
    ones (reshaped to square images), and returns ``(N, n_classes)`` logits.
    """

    def __init__(self, config: ResNetConfig | None = None):
        super().__init__()
        self.config = config = config or ResNetConfig()
        widths = config.stage_widths
        self.conv1 = nn.Conv2d(config.in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        for s, w in enumerate(widths):
            blocks = []
            for b, inner in enumerate(config.block_widths[s]):
                first = b == 0 and s > 0  # halves the image and changes the width
                c_in = widths[s - 1] if first else w
                blocks.append(BasicBlock(c_in, inner, w, stride=2 if first else 1,
                                         projection=first))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(widths[-1], config.n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        c = self.config
        if x.dim() == 2:  # flattened images
            x = x.view(-1, c.in_channels, c.image_size, c.image_size)
        x = F.relu(self.bn1(self.conv1(x)))  # (N, w0, 28, 28)
        for stage in self.stages:
            x = stage(x)  # (N, 16, 28, 28) -> (N, 32, 14, 14) -> (N, 64, 7, 7)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, w_last)
        return self.fc(x)  # (N, n_classes)

    def current_config(self) -> ResNetConfig:
        """The config of the sizes the modules have now (``self.config`` keeps the sizes it was
        built at): a shrunk model's ``state_dict`` loads into ``ResNet(model.current_config())``.
        """
        c = self.config
        return ResNetConfig(
            stage_widths=tuple(stage[0].conv2.out_channels for stage in self.stages),
            blocks=c.blocks,
            block_widths=tuple(tuple(b.conv1.out_channels for b in st) for st in self.stages),
            in_channels=self.conv1.in_channels, image_size=c.image_size,
            n_classes=self.fc.out_features)


def fold_batchnorm(model: ResNet) -> ResNet:
    """An inference copy of ``model`` with every BatchNorm folded into the conv before it.

    Each BatchNorm's running statistics and affine parameters become its conv's weight and
    bias (``w * gamma / sqrt(var + eps)``, ``beta - mean * gamma / sqrt(var + eps)``) and the
    BatchNorm is replaced by ``nn.Identity``; the copy computes the same function as
    ``model.eval()`` (to float rounding) without the BatchNorm passes over the feature maps
    (the standard inference deployment). ``model`` itself is not changed. The copy is for
    inference only (it is returned in eval mode and has no batch statistics to train).

    Parameters
    ----------
    model : ResNet
        At any widths (a shrunk or pruned network included).

    Returns
    -------
    ResNet
        The folded copy, in eval mode; ``current_config()`` and ``count_macs`` are unchanged.
    """
    if not isinstance(model, ResNet):
        raise UsageError(f"fold_batchnorm folds a widthlab ResNet, got {type(model).__name__}")
    folded = copy.deepcopy(model).eval()

    def fold(owner: nn.Module, conv: str, bn: str) -> None:  # names, "0"/"1" in a Sequential
        if not isinstance(getattr(owner, bn), nn.BatchNorm2d):  # folded already
            return
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, nn.Identity())

    with torch.no_grad():
        fold(folded, "conv1", "bn1")
        for stage in folded.stages:
            for block in stage:
                fold(block, "conv1", "bn1")
                fold(block, "conv2", "bn2")
                if len(block.shortcut):  # option B: 1x1 conv + BatchNorm
                    fold(block.shortcut, "0", "1")
    return folded


__all__ = ["BasicBlock", "ResNet", "ResNetConfig", "fold_batchnorm"]
