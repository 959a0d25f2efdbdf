"""Frontiers of the models of a trained :class:`~widthlab.nn.bank.MLPBank`.

A bank member is exported as a plain ``nn.Sequential`` (``Linear, ReLU, ..., Linear``), whose
hidden layer ``l`` is the module named ``str(2 * l)``, so any width-frontier method applies.

Example::

    bank = load_bank(store, run_id)
    seq = bank_sequential(bank, 3)                          # model 3 as nn.Sequential
    fr = frontier_of_bank(bank, 3, (x_val, y_val), (x_test, y_test))
"""

from __future__ import annotations

import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier.api import width_frontier
from widthlab.frontier.result import Frontier
from widthlab.nn.bank import MLPBank

__all__ = ["bank_sequential", "frontier_of_bank", "sequential_layer"]


def bank_sequential(bank: MLPBank, m: int) -> nn.Sequential:
    """Model ``m`` of ``bank`` as ``nn.Sequential(Linear, ReLU, ..., Linear)`` (copies of its
    weights, on the bank's device). Modifiers (gates, cut-offs) are not applied."""
    if isinstance(m, bool) or not 0 <= int(m) < bank.n_models:
        raise UsageError(f"model index must be in [0, {bank.n_models}), got {m!r}")
    mlp = bank.export(int(m))
    mods: list[nn.Module] = []
    for i, lin in enumerate(mlp.layers):
        mods.append(lin)
        if i < len(mlp.layers) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def sequential_layer(hidden: int) -> str:
    """The module name of hidden layer ``hidden`` (0 = first) in :func:`bank_sequential`."""
    return str(2 * int(hidden))


def frontier_of_bank(bank: MLPBank, m: int, calib, eval, *, hidden: int = 0,
                     method: str = "obs", **kwargs) -> Frontier:
    """The width frontier of hidden layer ``hidden`` of bank model ``m``.

    ``calib`` and ``eval`` are ``(x, y)`` pairs; other keywords go to
    :func:`~widthlab.frontier.width_frontier`. ``Frontier.cut(k)`` returns an ``nn.Sequential``.
    """
    seq = bank_sequential(bank, m)
    n_hidden = (len(seq) - 1) // 2
    if not 0 <= hidden < n_hidden:
        raise UsageError(f"hidden must be in [0, {n_hidden}) for model {m}, got {hidden}")
    with torch.no_grad():
        return width_frontier(seq, sequential_layer(hidden), calib, eval, method=method,
                              **kwargs)
