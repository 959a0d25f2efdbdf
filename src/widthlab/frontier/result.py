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
from widthlab.units import build_graph, remove_units

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
        the consumer, whose weights and bias are the method's compensated ones (the refit has
        a bias: a consumer built with ``bias=False`` gets one, so its ``state_dict`` loads into
        the class at the kept width built with a bias on the consumer).

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
        self._remove(new, kept, dt)
        cons = new.get_submodule(self.path.consumer)
        order = torch.argsort(kept)  # remove_units keeps the survivors in index order
        with torch.no_grad():
            cons.weight.copy_(w[:, order.to(w.device)])
            if cons.bias is None:  # the refit has a bias even where the consumer had none
                cons.bias = nn.Parameter(torch.zeros(cons.out_features, device=p.device, dtype=dt))
            cons.bias.copy_(b)
        return new.train(self.model.training)

    def _remove(self, new: nn.Module, kept: Tensor, dt: torch.dtype) -> None:
        """Remove the neurons not in ``kept`` from ``new`` (a copy of the model) with the
        units core's one remover: the layer's rows and the consumer's columns."""
        ex = self.path.example
        if ex is None:
            raise UsageError("this Frontier's path has no example input to trace its copy on; "
                             "build it with widthlab.width_frontier")
        ex = ex.to(next(new.parameters()).device)
        if ex.is_floating_point():
            ex = ex.to(dt)
        graph = build_graph(new.eval(), ex)  # one sample: a train-mode BatchNorm would refuse it
        lay = self.path.layer
        group = next((g for g in graph.groups for s in g.slices
                      if s.module == lay and s.name == "weight" and s.dim == 0), None)
        if group is None or group.size != self.width:
            raise UsageError(f"the units core finds no group of {lay!r}'s {self.width} outputs "
                             f"in the model's copy; was the model changed after the frontier?")
        keep = torch.zeros(self.width, dtype=torch.bool)
        keep[kept.cpu()] = True
        drop = torch.nonzero(~keep).flatten().tolist()
        if drop:
            remove_units(new, graph, group, drop)

    def __repr__(self) -> str:
        return (f"Frontier(method={self.method!r}, layer={self.path.layer!r}, "
                f"consumer={self.path.consumer!r}, width={self.width}, rows={len(self.table)})")
