"""Network slimming's training price (Liu et al., 2017): L1 on the BatchNorm scales.

Add ``price * bn_l1(model)`` to the loss during training; the channels whose scale
``|gamma|`` the price drives towards 0 are then removed after training by
:func:`widthlab.frontier.peers.slim_` (global threshold over every BatchNorm, down to a
multiply-add budget, through :func:`widthlab.units.remove_units`).

Example::

    from widthlab.nn.slimming import bn_l1
    loss = F.cross_entropy(model(x), y) + 1e-4 * bn_l1(model)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from widthlab.errors import UsageError

__all__ = ["bn_l1", "bn_layers"]


def bn_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """``(name, module)`` of every BatchNorm of ``model`` with a learned scale (``affine``)."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, _BatchNorm) and m.weight is not None]


def bn_l1(model: nn.Module) -> Tensor:
    """``sum |gamma|`` over the scales of every affine BatchNorm of ``model``: a scalar
    tensor with gradient ``sign(gamma)`` (subgradient 0 at 0), to add to the loss times a
    price (Liu et al. use 1e-5 to 1e-4).

    Raises
    ------
    UsageError
        ``model`` has no BatchNorm with a learned scale (nothing to slim).
    """
    layers = bn_layers(model)
    if not layers:
        raise UsageError("bn_l1 needs a model with BatchNorm layers (affine=True): network "
                         "slimming prices their scales; this model has none")
    return torch.stack([m.weight.abs().sum() for _, m in layers]).sum()
