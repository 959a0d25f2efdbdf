"""Shared helpers of the units tests: masking, copying kept slices, counting."""

from __future__ import annotations

import copy

import torch
from torch import nn


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def zero_inputs(model: nn.Module, consumers: list[tuple[str, int, list[int]]],
                hooks: bool = False) -> nn.Module:
    """A copy of ``model`` whose ``(module, dim, indices)`` weight slices are zero (the
    removed units' consumers), optionally with gradient hooks keeping them zero."""
    masked = copy.deepcopy(model)
    for name, dim, idx in consumers:
        w = masked.get_submodule(name).weight
        mask = torch.ones_like(w)
        mask.index_fill_(dim, torch.as_tensor(idx, dtype=torch.long), 0.0)
        with torch.no_grad():
            w.mul_(mask)
        if hooks:
            w.register_hook(lambda g, mask=mask: g * mask)
    return masked


def kept(n: int, drop) -> torch.Tensor:
    return torch.tensor([i for i in range(n) if i not in set(drop)])


def half(size: int) -> list[int]:
    """About half the units: every other one, starting with the first."""
    return list(range(0, size, 2))


def blocks(units, width: int) -> list[int]:
    """Indices of whole blocks ``width`` long (a head's rows, a channel's flattened pixels)."""
    return [u * width + i for u in units for i in range(width)]


def mask_params(model: nn.Module, spec: list[tuple[str, str, int, list[int]]]) -> None:
    """Zero ``(module, parameter, dim, indices)`` slices in place and keep them zero under
    any optimizer: their gradients are masked (Adam then never moves them)."""
    for name, pname, dim, idx in spec:
        p = getattr(model.get_submodule(name), pname)
        mask = torch.ones_like(p)
        mask.index_fill_(dim, torch.as_tensor(idx, dtype=torch.long), 0.0)
        with torch.no_grad():
            p.mul_(mask)
        p.register_hook(lambda g, mask=mask: g * mask)
