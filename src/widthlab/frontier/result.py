"""The width frontier of one layer: accuracy and loss at every kept width, and the cut models.

A :class:`Frontier` is what :func:`widthlab.frontier.width_frontier` returns. Its ``table``
holds one row per evaluated width ``k`` (``loss`` and ``acc`` on the evaluation data,
``calib_loss`` and ``calib_acc`` on the calibration data, ``cost`` the method's own objective);
``order`` is the removal order of the neurons (first removed first); ``cut(k)`` builds the
smaller model the table's row ``k`` was computed from.

Example::

    fr = width_frontier(model, "0", calib=(xc, yc), eval=(xe, ye))
    k = fr.recommend(tol=0.005)      # smallest width within 0.5 points of the full layer
    small = fr.cut(k)                # an nn.Module with k neurons in layer "0"
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.frontier.path import LayerPath

__all__ = ["COLUMNS", "Frontier", "replace_module"]

#: Columns of :attr:`Frontier.table`.
COLUMNS = ("method", "k", "loss", "acc", "calib_loss", "calib_acc", "cost")

#: ``k -> (kept neuron indices (k,), consumer weight (C, k), consumer bias (C,))``, float64.
Weights = tuple[Tensor, Tensor, Tensor]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted module path ``name`` of ``model`` (in place)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@dataclass
class Frontier:
    """Accuracy versus kept width of one layer, and the cut models behind it.

    Attributes
    ----------
    model : nn.Module
        The original model (not modified).
    path : LayerPath
        The layer, its consumer and the network after it.
    method : str
        The criterion that ordered (and, for ``obs``, compensated) the removals.
    table : pandas.DataFrame
        Columns ``method, k, loss, acc, calib_loss, calib_acc, cost``, one row per evaluated
        ``k``, ascending. ``cost`` is the method's objective (for ``obs``: the increase of the
        consumer's mean squared reconstruction error; NaN for the ordering criteria).
    order : ndarray of int
        Neuron indices in removal order; the last entry is the neuron kept at ``k = 1``.
    """

    model: nn.Module
    path: LayerPath
    method: str
    table: pd.DataFrame
    order: np.ndarray
    weights: Callable[[int], Weights]

    @property
    def width(self) -> int:
        """The layer's full number of neurons."""
        return int(self.order.size)

    def recommend(self, tol: float = 0.005) -> int:
        """The smallest evaluated ``k`` whose ``eval`` accuracy is within ``tol`` of the full
        layer's (``acc(k) >= acc(H) - tol``)."""
        if not tol >= 0:
            raise UsageError(f"tol must be >= 0 (an accuracy difference), got {tol!r}")
        t = self.table
        full = float(t.loc[t.k == self.width, "acc"].iloc[0])
        return int(t.loc[t.acc >= full - tol - 1e-12, "k"].min())

    def cut(self, k: int, *, dtype: torch.dtype | None = None) -> nn.Module:
        """A physically smaller copy of the model: ``k`` outputs in the layer, ``k`` inputs in
        the consumer, whose weights (and bias) are the method's compensated ones.

        Parameters
        ----------
        k : int
            Kept neurons, one of ``table.k`` (for ``obs``; any ``1 <= k <= H`` for the
            ordering criteria).
        dtype : torch.dtype, optional
            The copy's dtype (default: the original model's). In float64 its accuracy and loss
            on the evaluation data equal the table's row ``k`` (a float32 model's up to the
            float32 rounding of the layers before the consumer: the table uses the model's
            own float32 activations, then float64).
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise UsageError(f"k must be a whole number of neurons (an int), got {k!r} "
                             f"({type(k).__name__}); e.g. cut({self.recommend()})")
        if not 1 <= int(k) <= self.width:
            raise UsageError(f"k={k} is outside [1, {self.width}] (the layer's width); pass "
                             f"one of table.k, e.g. cut({self.recommend()}) (recommend())")
        kept, w, b = self.weights(int(k))
        new = copy.deepcopy(self.model)
        p = next(self.model.parameters())
        dt = p.dtype if dtype is None else dtype
        new.to(dtype=dt)
        mods = dict(new.named_modules())
        old_l, old_c = mods[self.path.layer], mods[self.path.consumer]
        lay = nn.Linear(old_l.in_features, int(k), bias=old_l.bias is not None,
                        device=p.device, dtype=dt)
        cons = nn.Linear(int(k), old_c.out_features, device=p.device, dtype=dt)
        with torch.no_grad():
            idx = kept.to(p.device)
            lay.weight.copy_(old_l.weight[idx])
            if old_l.bias is not None:
                lay.bias.copy_(old_l.bias[idx])
            cons.weight.copy_(w)
            cons.bias.copy_(b)
        replace_module(new, self.path.layer, lay)
        replace_module(new, self.path.consumer, cons)
        return new.train(self.model.training)

    def __repr__(self) -> str:
        return (f"Frontier(method={self.method!r}, layer={self.path.layer!r}, "
                f"consumer={self.path.consumer!r}, width={self.width}, rows={len(self.table)})")
