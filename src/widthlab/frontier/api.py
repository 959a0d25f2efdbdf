"""``width_frontier``: accuracy versus kept width of any model's ``nn.Linear`` layer.

Example::

    from widthlab.frontier import width_frontier, frontiers

    fr = width_frontier(model, "fc1", calib=(x_val, y_val), eval=(x_test, y_test))
    fr.table                       # k, loss, acc, calib_loss, calib_acc, cost
    fr.recommend(tol=0.005)        # smallest k within half a point of the full layer
    small = fr.cut(64)             # the model with 64 neurons in fc1, fc2 compensated

    every = frontiers(model, "fc1", (x_val, y_val), (x_test, y_test),
                      methods=("obs", "taylor", "random"))   # activations computed once
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier.methods import (
    METHODS,
    OBS_METHODS,
    ce_metric,
    keep_order,
    refit_consumer,
)
from widthlab.frontier.obs import eliminate, gram
from widthlab.frontier.prepare import Prepared, prepare, score_widths
from widthlab.frontier.result import COLUMNS, Frontier, Weights

__all__ = ["frontier_ks", "frontiers", "width_frontier"]


def frontier_ks(width: int, per_octave: int = 8, dense_below: int = 16) -> list[int]:
    """The default widths to evaluate: every ``k <= dense_below``, then ``per_octave`` steps per
    doubling (``round(2**(i/per_octave))``, powers of two included), and ``width`` itself."""
    ks = set(range(1, min(dense_below, width) + 1)) | {int(width)}
    i = 0
    while (k := round(2 ** (i / per_octave))) < width:
        ks.add(int(k))
        i += 1
    return sorted(ks)


def _ks(ks, width: int) -> list[int]:
    if ks is None:
        return frontier_ks(width)
    if isinstance(ks, str):
        if ks != "all":
            raise UsageError(f"ks must be None, 'all' or a list of widths, got {ks!r}")
        return list(range(1, width + 1))
    out = sorted({int(k) for k in ks} | {width})
    if out[0] < 1 or out[-1] > width:
        raise UsageError(f"ks must lie in [1, {width}] (the layer's width), got {list(ks)}")
    return out


def _obs(prep: Prepared, method: str, ks: list[int], damp: float, block: int
         ) -> tuple[np.ndarray, Callable[[int], Weights], dict[int, float]]:
    metric = ce_metric(prep) if method == "obs_ce" else None
    w_aug = torch.cat([prep.w0, prep.b0[:, None]], 1)
    g = gram(prep.at["calib"].t(), chunk=prep.chunk, lower=True)  # eliminate reads no more
    res = eliminate(g, w_aug, damp=damp, metric=metric, block=block, keep_at=ks)
    if method == "obs_refit":
        for k, (kept, w, b) in res.snapshots.items():
            res.snapshots[k] = (kept, *refit_consumer(prep, kept, w, b))
    h = prep.width
    cum = np.concatenate([[0.0], np.cumsum(res.costs[:-1])])  # cost at k = h - removals
    costs = {k: float(cum[h - k]) for k in ks}

    def weights(k: int) -> Weights:
        if int(k) not in res.snapshots:
            raise UsageError(f"k={k} is not one of this frontier's widths; pass ks=[..., {k}] "
                             "(or ks='all') to width_frontier")
        return res.snapshots[int(k)]

    return np.asarray(res.order), weights, costs


def _ordering(prep: Prepared, method: str, seed: int
              ) -> tuple[np.ndarray, Callable[[int], Weights], dict[int, float]]:
    keep = keep_order(prep, method, seed=seed)
    keep_t = torch.as_tensor(keep.copy(), device=prep.device)

    def weights(k: int) -> Weights:
        if isinstance(k, bool) or not 1 <= int(k) <= prep.width:
            raise UsageError(f"k must be in [1, {prep.width}], got {k!r}")
        kept = torch.sort(keep_t[:int(k)]).values
        return kept, prep.w0[:, kept], prep.b0

    return keep[::-1].copy(), weights, {}


def _run(prep: Prepared, method: str, ks: list[int], damp: float, block: int,
         seed: int) -> Frontier:
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method in OBS_METHODS:
        order, weights, costs = _obs(prep, method, ks, damp, block)
    else:
        order, weights, costs = _ordering(prep, method, seed)
    # the kept sets are prefixes of the keep order: every width's consumer columns in keep
    # order, all widths scored by one stacked product per block of activations
    perm = torch.as_tensor(order[::-1].copy(), device=prep.device)
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(len(perm), device=prep.device)
    cut = []
    for k in ks:
        kept, w, b = weights(k)
        wp = torch.empty_like(w)
        wp[:, rank[kept]] = w  # columns in keep order
        cut.append((k, wp, b))
    got = {split: score_widths(prep, split, perm, cut) for split in ("eval", "calib")}
    rows = [(method, k, *got["eval"][i], *got["calib"][i], costs.get(k, float("nan")))
            for i, k in enumerate(ks)]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return Frontier(prep.model, prep.path, method, table, order, weights)


def frontiers(model: nn.Module, layer: str, calib, eval, *,
              methods: Iterable[str] = ("obs", "exact", "taylor", "random"),
              ks: Sequence[int] | str | None = None, damp: float = 1e-6, block: int = 128,
              seed: int = 0, device=None, chunk: int = 2 ** 22) -> dict[str, Frontier]:
    """The frontiers of several methods on one layer, computing the activations once.

    Arguments as :func:`width_frontier`; returns ``{method: Frontier}`` in the given order.
    """
    methods = list(methods)
    if not methods:
        raise UsageError(f"methods is empty; choose from {', '.join(METHODS)}")
    for m in methods:
        if m not in METHODS:
            raise UsageError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    prep = prepare(model, layer, calib, eval, device=device, chunk=chunk)
    kk = _ks(ks, prep.width)
    return {m: _run(prep, m, kk, damp, block, seed) for m in methods}


def width_frontier(model: nn.Module, layer: str, calib, eval, method: str = "obs", *,
                   ks: Sequence[int] | str | None = None, damp: float = 1e-6, block: int = 128,
                   seed: int = 0, device=None, chunk: int = 2 ** 22) -> Frontier:
    """The exact width frontier of one ``nn.Linear`` layer of any model.

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits ``(batch, classes)``, whose forward
        :func:`widthlab.units.build_graph` follows; used in
        eval mode and never modified.
    layer : str
        Name (``model.named_modules()``) of an ``nn.Linear`` whose output reaches exactly one
        consumer ``nn.Linear`` through element-wise operations.
    calib, eval : (Tensor, Tensor)
        Inputs and integer labels. ``calib`` decides (Gram matrix, scores), ``eval`` reports.
    method : str
        ``"obs"`` (greedy optimal-brain-surgeon elimination with compensation of the
        consumer's weights and bias), ``"obs_ce"`` (the same, removals weighed by the
        cross-entropy's Hessian in the logits; consumer = output layer), ``"obs_refit"``
        (the ``obs`` order, the consumer refitted to the cross-entropy on ``calib`` at every
        evaluated width: slower, more accurate at small ``k``), or an ordering
        criterion without compensation: ``"exact"``, ``"act_std"``, ``"in_norm"``,
        ``"out_norm"``, ``"taylor"``, ``"contribution"``, ``"taylor2"``, ``"random"``.
    ks : list of int, "all" or None
        Widths to evaluate (and, for ``obs``, to keep cut weights for); None:
        :func:`frontier_ks` (every k up to 16, then 8 per doubling). The full width is always
        included.
    damp : float
        Relative damping of the Gram matrix (``obs``): ``damp * mean(diag)`` is added.
    block : int
        Inverse downdates applied per GEMM (speed only).
    seed : int
        Seed of ``random``.
    device : str or torch.device, optional
        Where to compute (default: the model's device).
    chunk : int
        Values in one temporary block (memory only).

    Returns
    -------
    Frontier
        ``.table``, ``.order``, ``.recommend(tol)``, ``.cut(k)``.

    Raises
    ------
    UsageError
        For a layer without a single element-wise path to one ``nn.Linear`` (a residual layer,
        several consumers), an unknown method, or malformed data.
    """
    return frontiers(model, layer, calib, eval, methods=[method], ks=ks, damp=damp, block=block,
                     seed=seed, device=device, chunk=chunk)[method]
