"""LeNet-300-100 and LeNet-5-Caffe written as plain ``nn.Module`` s, the way a user would.

The two networks every learned-width paper reports (Louizos et al. 2018, SBP, VIB, BC-GHS,
RigL): :class:`LeNet300` (784-300-100-10, ReLU) and :class:`LeNet5` (LeNet-5-Caffe: conv 5x5
20, 2x2 max-pool, conv 5x5 50, 2x2 max-pool, fc 800-500, fc 500-10, ReLU after every layer but
the last). :func:`build_lenet` builds one, gated the way the papers count widths (with
:func:`widthlab.nn.surgery.gate_layers`); :func:`lenet_widths` reads a row's widths off any
(gated, shrunk or cut) copy and :func:`lenet_weights` turns widths into the weights they imply,
the same way for widthlab's rows and the published ones.

Widths, as the papers count them: LeNet-300-100, the input features kept by each of its three
Linears (the 784 pixels, the 300 and the 100 units); LeNet-5-Caffe, the channels of the two
convs and the input features of the two Linears.

Example::

    model = build_lenet("LeNet-5-Caffe", seed=0)     # gated: conv channels, Linear inputs
    lenet_widths(model)                               # (20, 50, 800, 500)
    lenet_weights("LeNet-5-Caffe", (20, 25, 45, 462)) # 38410 (L0's row)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from widthlab.errors import UsageError
from widthlab.nn.surgery import gate_layers

LENET300, LENET5 = "LeNet-300-100", "LeNet-5-Caffe"
NETWORKS = (LENET300, LENET5)
#: the layers whose width each row reports (in order) and what is counted
LAYERS = {LENET300: ("fc1", "fc2", "fc3"), LENET5: ("conv1", "conv2", "fc1", "fc2")}
#: the Linear layers :func:`widthlab.frontier.width_frontier` can cut (one consumer Linear)
FRONTIER_LAYERS = {LENET300: ("fc1", "fc2"), LENET5: ("fc1",)}
IMAGE = 28  # LeNet-5 reads 28 x 28 single-channel images


class LeNet300(nn.Module):
    """LeNet-300-100: ``n_in``-300-100-``n_classes`` with ReLU (784 and 10 for MNIST)."""

    def __init__(self, n_in: int = 784, n_classes: int = 10):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(n_in, 300), nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, n_classes)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """LeNet-5-Caffe: conv 5x5 20, pool, conv 5x5 50, pool, fc 800-500, fc 500-``n_classes``.

    Reads flattened 28 x 28 images (784 features).
    """

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, n_classes)

    def forward(self, x):
        x = x.view(-1, 1, IMAGE, IMAGE)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def check_network(network: str) -> str:
    """``network`` if it is one of :data:`NETWORKS`, else a UsageError naming them."""
    if network not in NETWORKS:
        raise UsageError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
    return network


def build_lenet(network: str, seed: int = 0, *, n_in: int = 784, n_classes: int = 10,
                gated: bool = True, kind: str = "l1", per_weight: bool = False,
                init: float | None = None) -> nn.Module:
    """A fresh ``network`` (torch seed ``seed``), gated as the papers count widths.

    LeNet-300-100 gets gates on the input features of all three Linears (the pixels, the 300
    and the 100 units); LeNet-5-Caffe on both convs' channels and both Linears' input
    features. ``gated=False``: the plain network. LeNet-5-Caffe needs ``n_in == 784``.
    ``kind``, ``per_weight`` and ``init`` go to :func:`~widthlab.nn.surgery.gate_layers`
    (a stochastic kind's noise is seeded with ``seed``).
    """
    check_network(network)
    torch.manual_seed(seed)
    gate = {"kind": kind, "per_weight": per_weight, "init": init, "seed": seed}
    example = torch.zeros(2, n_in)  # traced to place the gates (zeros: no RNG draw)
    if network == LENET300:
        model = LeNet300(n_in, n_classes)
        if gated:
            gate_layers(model, ["fc1", "fc2", "fc3"], inputs="only", example=example, **gate)
        return model
    if n_in != IMAGE * IMAGE:
        raise UsageError(f"{LENET5} reads 28x28 single-channel images (784 inputs), the data "
                         f"has {n_in}; train {LENET300} on it instead")
    model = LeNet5(n_classes)
    if gated:
        gate_layers(model, ["conv1", "conv2"], example=example, **gate)
        gate_layers(model, ["fc1", "fc2"], inputs="only", example=example, **gate)
    return model


def lenet_widths(model: nn.Module) -> tuple[int, ...]:
    """The row's widths of a LeNet (gated, shrunk or cut): the input features of each Linear
    and the output channels of each conv, in :data:`LAYERS` order."""
    mods = dict(model.named_modules())
    network = LENET5 if "conv1" in mods else LENET300
    out = []
    for name in LAYERS[network]:
        m = mods[name]
        out.append(int(m.out_channels if isinstance(m, nn.Conv2d) else m.in_features))
    return tuple(out)


def lenet_weights(network: str, widths: Sequence[int], n_classes: int = 10) -> int:
    """The weights (no biases) a row's widths imply: conv ``in * out * 25``, Linear
    ``in * out``. LeNet-300-100 ``a-b-c``: ``a*b + b*c + c*n_classes``; LeNet-5-Caffe
    ``c1-c2-f1-f2``: ``25*c1 + 25*c1*c2 + f1*f2 + f2*n_classes``."""
    check_network(network)
    w = [int(v) for v in widths]
    if len(w) != len(LAYERS[network]):
        raise UsageError(f"{network} rows have {len(LAYERS[network])} widths, got {list(w)}")
    if network == LENET300:
        a, b, c = w
        return a * b + b * c + c * n_classes
    c1, c2, f1, f2 = w
    return 25 * c1 + 25 * c1 * c2 + f1 * f2 + f2 * n_classes


__all__ = ["FRONTIER_LAYERS", "IMAGE", "LAYERS", "LENET300", "LENET5", "NETWORKS", "LeNet300",
           "LeNet5", "build_lenet", "check_network", "lenet_weights", "lenet_widths"]
