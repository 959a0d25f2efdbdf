"""Prune a trained model layer by layer: each named ``nn.Linear`` cut to its frontier's width.

:func:`cut_layers` is pruning *after* training with :func:`~widthlab.frontier.width_frontier`:
for each named layer in turn (on the model the previous cuts left), the frontier of that layer
is computed and the layer is cut (:meth:`Frontier.cut`, its consumer compensated) to the
smallest evaluated width whose ``eval`` accuracy stays within ``tol`` of the **uncut** model's.
The tolerance is one budget for all the layers, not one per layer: the cut model's ``eval``
accuracy (as the frontier computes it, float64) is never more than ``tol`` below the original's.

Example::

    small, cuts = cut_layers(model, ["fc1", "fc2"], calib=(x_tr, y_tr), eval=(x_tr, y_tr))
    [(c.layer, c.width, c.k) for c in cuts]      # [("fc1", 300, 74), ("fc2", 100, 31)]
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier.api import width_frontier
from widthlab.frontier.result import Frontier

__all__ = ["LayerCut", "cut_layers"]


@dataclass(frozen=True)
class LayerCut:
    """One layer's cut: its full ``width``, the kept ``k``, the ``eval`` accuracy of the model
    before this cut (``acc_before``) and after it (``acc_after``, the frontier's row ``k``),
    and the frontier itself."""

    layer: str
    width: int
    k: int
    acc_before: float
    acc_after: float
    frontier: Frontier


def cut_layers(model: nn.Module, layers: Sequence[str], calib, eval, *, tol: float = 0.005,
               method: str = "obs", ks: Sequence[int] | str | None = None, device=None
               ) -> tuple[nn.Module, list[LayerCut]]:
    """Cut each of ``layers`` (in order) to the smallest width within ``tol`` of ``model``'s
    accuracy on ``eval``.

    Parameters
    ----------
    model : nn.Module
        The trained classifier; not modified (each cut returns a copy).
    layers : sequence of str
        ``nn.Linear`` layers that :func:`~widthlab.frontier.width_frontier` supports (one
        consumer ``nn.Linear`` through element-wise operations), cut in this order.
    calib, eval : (Tensor, Tensor)
        What decides the compensation (``calib``) and the width (``eval``).
    tol : float
        Accuracy the whole cut may lose on ``eval``, against the uncut model.
    method, ks, device
        As for :func:`~widthlab.frontier.width_frontier` (``ks`` None: its default widths).

    Returns
    -------
    (nn.Module, list of LayerCut)
        The cut model (a copy, same dtype and device as ``model``, even when no layer could be
        cut) and one record per layer.
    """
    if not tol >= 0:
        raise UsageError(f"tol must be >= 0 (an accuracy difference), got {tol!r}")
    if not layers:
        raise UsageError("layers is empty; name the nn.Linear layers to cut, e.g. ['fc1']")
    current, cuts, floor = model, [], None
    for name in layers:
        fr = width_frontier(current, name, calib, eval, method=method, ks=ks, device=device)
        t = fr.table
        before = float(t.loc[t.k == fr.width, "acc"].iloc[0])
        if floor is None:
            floor = before - tol - 1e-12
        ok = t[t.acc >= floor]
        k = int(ok.k.min()) if len(ok) else fr.width  # float32 rounding may sink below floor
        after = float(t.loc[t.k == k, "acc"].iloc[0])
        current = fr.cut(k) if k < fr.width else current
        cuts.append(LayerCut(name, fr.width, k, before, after, fr))
    return (copy.deepcopy(model) if current is model else current), cuts
