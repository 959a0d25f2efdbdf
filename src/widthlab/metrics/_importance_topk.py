"""Top-k cuts of an MLP by a neuron ordering: agreement of orderings, the cut dense model,
top-k accuracy curves and the forward latency of the cut models (re-exported by
:mod:`widthlab.metrics.importance`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.metrics._importance_kernel import (
    _check_layer,
    _data,
    _first_param,
    _hidden,
    _params,
    _rest,
    _scale,
)
from widthlab.metrics.ordering import kendall_tau, ordering, spearman, top_k_overlap


def agreement(exact, scores: Mapping[str, object], ks: Sequence[int] = ()) -> pd.DataFrame:
    """Rank agreement of each score vector with the exact importance.

    Returns one row per score: ``proxy``, ``spearman``, ``kendall`` (tau-b) and ``top{k}``, the
    share of the exact top ``k`` the proxy also puts in its top ``k``, for each ``k`` in ``ks``
    (a ``k`` larger than the layer is clipped to its width).
    """
    ex = np.asarray(exact, dtype=np.float64)
    rows = []
    for name, sc in scores.items():
        row = {"proxy": name, "spearman": spearman(ex, sc), "kendall": kendall_tau(ex, sc)}
        for k in ks:
            row[f"top{k}"] = top_k_overlap(ex, sc, min(int(k), ex.size))
        rows.append(row)
    return pd.DataFrame(rows, columns=["proxy", "spearman", "kendall",
                                       *(f"top{k}" for k in ks)])


# ------------------------------------------------------------------------------ top-k cuts
def keep_neurons(model: nn.Module, neurons, *, layer: int = 0, scale=None) -> nn.Module:
    """A smaller dense copy of ``model`` keeping only ``neurons`` of hidden layer ``layer``.

    The kept rows of ``W_l``/``b_l`` and columns of ``W_{l+1}`` are copied (in the given
    order); a first-layer ``scale`` is folded into the next layer's columns, so the result is a
    plain :class:`~widthlab.nn.MLP` computing exactly what the original computes with every
    other neuron zeroed.
    """
    from widthlab.nn.bank import MLP

    params = _params(model, _first_param(model).dtype)
    layer = _check_layer(layer, len(params) - 1)
    keep = torch.as_tensor(np.asarray(neurons), dtype=torch.long).flatten()
    h = params[layer][0].shape[0]
    if keep.numel() < 1 or int(keep.min()) < 0 or int(keep.max()) >= h or \
            keep.unique().numel() != keep.numel():
        raise UsageError(f"neurons must be distinct indices in [0, {h}), at least one")
    dev = params[0][0].device
    keep = keep.to(dev)
    s = _scale(scale, params, params[0][0].dtype, dev)
    sizes = [params[0][0].shape[1]] + [w.shape[0] for w, _ in params]
    sizes[layer + 1] = keep.numel()
    small = MLP(sizes).to(device=dev, dtype=params[0][0].dtype)
    with torch.no_grad():
        for i, (w, b) in enumerate(params):
            if i == layer:
                w, b = w[keep], b[keep]
            if i == 1 and s is not None:
                w = w * s
            if i == layer + 1:
                w = w[:, keep]
            small.layers[i].weight.copy_(w)
            small.layers[i].bias.copy_(b)
    return small


def k_grid(width: int) -> list[int]:
    """Kept-neuron counts for a top-k curve: ``int(2**(i/2))`` up to ``width``, then ``width``."""
    ks = sorted({int(2 ** (i / 2)) for i in range(0, 2 * max(1, width).bit_length() + 1)})
    return [k for k in ks if k < width] + [int(width)]


@torch.no_grad()
def topk_accuracy(model: nn.Module, x: Tensor, y: Tensor, orders: Mapping[str, object],
                  ks: Sequence[int], *, layer: int = 0, scale=None) -> pd.DataFrame:
    """Accuracy and loss on ``(x, y)`` keeping the first ``k`` neurons of each ordering.

    ``orders`` maps a name to a neuron ordering (most important first, e.g.
    :func:`widthlab.metrics.ordering.ordering` of a score). The hidden activations are computed
    once and each cut applies the rest of the network to the kept columns, which is exactly the
    forward pass of :func:`keep_neurons`'s smaller model (checked in the tests) without paying
    the layers before ``layer`` again.

    Returns one row per ``(ordering, k)``: ``ordering, k, acc, loss``.
    """
    dev = _first_param(model).device
    dtype = _first_param(model).dtype
    params = _params(model, dtype)
    layer = _check_layer(layer, len(params) - 1)
    x, y = _data(x, y, params, dev)
    s = _scale(scale, params, dtype, dev)
    hs = _hidden(params, x, s)
    h = hs[layer]  # (N, H)
    w, b = params[layer + 1]  # (D, H), (D,)
    rows = []
    for name, order in orders.items():
        order = torch.as_tensor(np.asarray(order), dtype=torch.long, device=dev)
        if order.numel() != h.shape[1]:
            raise UsageError(f"ordering {name!r} lists {order.numel()} neurons; layer {layer} "
                             f"has {h.shape[1]}")
        for k in ks:
            keep = order[:int(k)]
            z = torch.addmm(b, h[:, keep], w[:, keep].t())  # (N, D)
            logits = _rest(params, layer + 1, z)  # (N, C)
            rows.append({"ordering": name, "k": int(k),
                         "acc": float((logits.argmax(1) == y).double().mean()),
                         "loss": float(F.cross_entropy(logits.double(), y))})
    return pd.DataFrame(rows, columns=["ordering", "k", "acc", "loss"])


@torch.no_grad()
def dense_latency(model: nn.Module, x: Tensor, ks: Sequence[int], *, layer: int = 0,
                  repeats: int = 3) -> pd.DataFrame:
    """Forward time of ``model`` cut to ``k`` neurons in ``layer`` (a smaller dense MLP from
    :func:`keep_neurons`), on all of ``x`` in one batch; best of ``repeats`` after a warm-up.

    Which neurons are kept does not change the shapes, hence not the time: the latency of a cut
    depends on ``k`` only, so one measurement per ``k`` serves every ordering.

    Returns ``k, ms`` (milliseconds, best of ``repeats``).
    """
    if repeats < 1:
        raise UsageError(f"repeats must be >= 1, got {repeats}")
    dev = _first_param(model).device
    x = x.to(device=dev, dtype=_first_param(model).dtype)
    rows = []
    for k in ks:
        small = keep_neurons(model, np.arange(int(k)), layer=layer)
        small(x)  # warm-up (allocator, kernel choice)
        best = math.inf
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            small(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            best = min(best, time.perf_counter() - t)
        rows.append({"k": int(k), "ms": 1e3 * best})
    return pd.DataFrame(rows, columns=["k", "ms"])


def k_to_reach(curve: pd.DataFrame, target: float) -> int | None:
    """Smallest ``k`` of one ordering's curve (columns ``k, acc``) whose accuracy reaches
    ``target``; None when no ``k`` does."""
    ok = curve[curve["acc"] >= target]
    return int(ok["k"].min()) if len(ok) else None


def orderings_of(scores: Mapping[str, object]) -> dict[str, np.ndarray]:
    """``{name: ordering(score)}`` for a dict of score vectors."""
    return {k: ordering(v) for k, v in scores.items()}
