"""Neuron importance: the exact loss increase of removing each neuron, its proxies, top-k cuts.

The journal's "perfect metric" for ordering neurons is *the increase of the loss if this neuron
were set to zero*, which it judged "way too expensive (an entire epoch of the validation set for
each neuron)". It is not: zeroing hidden neuron ``j`` of layer ``l`` changes the next
pre-activation by a rank-one term,

    z'_{l+1} = z_{l+1} - h_l[:, j] * W_{l+1}[:, j]            # (N, D) minus (N, 1) * (1, D)

so the logits of every "one neuron removed" network follow from the one intact forward pass. For
the last hidden layer (the journal's one-hidden-layer MLP) the corrected pre-activation *is* the
logits, and the whole importance vector costs ``O(N H C)`` (C = 10 classes) against the naive
``O(N H (d H + H C))`` of one full evaluation per neuron. For an earlier layer the correction is
still exact; the rest of the network (ReLU, later layers) is then applied to every corrected
pre-activation, which is still far cheaper than re-running the layers before ``l``.

Work is done in blocks of samples and neurons so that at most about ``8 * max(chunk, widest
layer)`` values are alive at once, whatever the width and the number of samples (see
:func:`block_plan`); results are accumulated in float64.

Example::

    from widthlab.metrics.importance import exact_importance, proxies, agreement

    imp = exact_importance(mlp, x_val, y_val)          # (H,) loss increase per neuron
    prox = proxies(mlp, x_val, y_val)                   # {"act_std": (H,), "taylor": (H,), ...}
    agreement(imp, prox, ks=(16, 64))                   # Spearman, Kendall tau, top-k overlap

The module also gives the naive reference (:func:`naive_importance`: zero one neuron, evaluate
everything, restore), the top-k cut of a model to a smaller dense MLP (:func:`keep_neurons`),
top-k accuracy curves per ordering (:func:`topk_accuracy`) and the forward latency of the cut
models (:func:`dense_latency`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.metrics._importance_kernel import (
    SUPPORTED_ACTIVATIONS,
    _ce,
    _check_layer,
    _data,
    _first_param,
    _hidden,
    _params,
    _rest,
    _scale,
    activation_of,
)
from widthlab.metrics._importance_topk import (
    agreement,
    dense_latency,
    k_grid,
    k_to_reach,
    keep_neurons,
    orderings_of,
    topk_accuracy,
)
from widthlab.units.scores import (
    Column,
    Magnitude,
    Moments,
    ScoreGroup,
    Taylor,
    Variance,
    removal_costs,
)

__all__ = ["DEFAULT_CHUNK", "PROXIES", "SUPPORTED_ACTIVATIONS", "BlockPlan", "activation_of",
           "agreement", "block_plan", "dense_latency", "exact_importance", "k_grid", "k_to_reach",
           "keep_neurons", "naive_importance", "orderings_of", "proxies", "topk_accuracy"]

#: Default element budget of one temporary block (2**22 float64 values = 32 MiB).
DEFAULT_CHUNK = 2 ** 22

#: Proxy names, in report order ("gate" only when gates are given, "taylor2" only for the last
#: hidden layer).
PROXIES = ("gate", "act_std", "in_norm", "out_norm", "taylor", "contribution", "taylor2")


# ------------------------------------------------------------------------------ exact
@dataclass(frozen=True)
class BlockPlan:
    """How :func:`exact_importance` tiles the work: ``batch`` samples at a time, and for each
    hidden layer ``neurons[l]`` neurons at a time; ``peak_values`` bounds the values it holds
    at once (the parameters in the compute dtype, the per-neuron sums, one block's input and
    hidden activations, and at most 7 temporaries of ``batch * neurons[l] * D_rest`` values)."""

    batch: int
    neurons: tuple[int, ...]
    peak_values: int


def block_plan(sizes: Sequence[int], n_samples: int, chunk: int = DEFAULT_CHUNK) -> BlockPlan:
    """The blocks :func:`exact_importance` uses for an MLP of layer sizes ``[in, h1, ..., C]``.

    ``batch = clamp(chunk // (in + sum(hidden) + C), 1, N)``: one block's input, all its hidden
    activations and its logits fit in ``chunk`` values (or one sample does). For hidden layer
    ``l`` the corrected pre-activations of ``c`` neurons are ``(batch, c, D_rest)`` with
    ``D_rest`` the widest layer after ``l``, so ``c = clamp(chunk // (batch * D_rest), 1, H_l)``.
    Every temporary (the correction, its product, ReLU/later-layer outputs, the log-sum-exp
    terms) then holds at most ``max(chunk, batch * D_rest)`` values, independent of ``N``.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int | np.integer) or chunk < 1:
        raise UsageError(f"chunk must be a positive number of values, got {chunk!r}")
    sizes = [int(s) for s in sizes]
    per_sample = sum(sizes)
    batch = int(min(max(chunk // per_sample, 1), n_samples))
    # parameters in the compute dtype and the per-neuron sums are alive throughout
    fixed = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:], strict=False)) + per_sample
    neurons, peak = [], fixed + batch * per_sample
    for l, h in enumerate(sizes[1:-1]):
        d_rest = max(sizes[l + 2:])
        c = int(min(max(chunk // (batch * d_rest), 1), h))
        neurons.append(c)
        peak = max(peak, fixed + batch * per_sample + 7 * batch * c * d_rest)
    return BlockPlan(batch, tuple(neurons), peak)


@torch.no_grad()
def exact_importance(model: nn.Module, x: Tensor, y: Tensor, *, layer: int | None = 0,
                     scale=None, chunk: int = DEFAULT_CHUNK,
                     dtype: torch.dtype = torch.float64) -> np.ndarray | list[np.ndarray]:
    """Exact increase of the mean cross-entropy on ``(x, y)`` when one hidden neuron is zeroed.

    Parameters
    ----------
    model : widthlab.nn.MLP
        A plain ReLU MLP (``bank.export(m)``), one or several hidden layers.
    x : Tensor of shape (N, in)
    y : Tensor of shape (N,)
        Integer class labels.
    layer : int or None
        Hidden layer whose neurons are scored (0 = first); None scores every hidden layer.
    scale : array-like of shape (H0,), optional
        Per-neuron multiplier of the first hidden layer's ReLU output (a gate or cut-off
        modifier's ``scale()``), so gated and flexible layers are scored as they compute.
    chunk : int
        Element budget of one temporary block (see :func:`block_plan`); only memory and speed
        depend on it.
    dtype : torch.dtype
        Compute precision; float64 by default (a reference measurement).

    Returns
    -------
    ndarray of shape (H_layer,), float64, or a list of them (``layer=None``)
        ``L(model with neuron j zeroed) - L(model)``, ``L`` the mean per-sample cross-entropy.
        Negative where removing the neuron lowers the loss; exactly 0 for a neuron that is
        zero on every sample.
    """
    dev = _first_param(model).device
    params = _params(model, dtype)
    n_hidden = len(params) - 1
    todo = list(range(n_hidden)) if layer is None else [_check_layer(layer, n_hidden)]
    x, y = _data(x, y, params, dev)
    s = _scale(scale, params, dtype, dev)
    sizes = [params[0][0].shape[1]] + [w.shape[0] for w, _ in params]
    plan = block_plan(sizes, len(x), chunk)
    sums = {l: torch.zeros(sizes[l + 1], dtype=torch.float64, device=dev) for l in todo}
    for i in range(0, len(x), plan.batch):
        xb, yb = x[i:i + plan.batch].to(dtype), y[i:i + plan.batch]  # (n, in), (n,)
        hs = _hidden(params, xb, s)
        ce0 = _ce(_rest(params, n_hidden, _next(params, n_hidden - 1, hs)), yb)  # (n,)
        for l in todo:
            # the one exact cost: the rank-one change of layer l + 1's pre-activation, then
            # the rest of the network (none for the last hidden layer), then the loss;
            # logits classes first (C, n, c) so the class reductions run over (n, c) slabs
            rest = None if l == n_hidden - 1 else partial(_rest_classes_first, params, l + 1)
            z = _next(params, l, hs)  # (n, D) pre-activation of layer l + 1 (or the logits)
            block = len(xb) * plan.neurons[l] * sizes[l + 2]
            sums[l] += removal_costs(z, hs[l], params[l + 1][0], yb, chunk=block, rest=rest,
                                     dtype=dtype, reduce="sum", classes_first=True,
                                     ce0=ce0).to(torch.float64)
    out = [(sums[l] / len(x)).cpu().numpy() for l in todo]
    return out if layer is None else out[0]


def _rest_classes_first(params, start: int, z: Tensor) -> Tensor:
    """Logits ``(C, n, c)`` from corrected pre-activations ``z`` of shape ``(n, c, D)`` of
    layer ``start`` < the output layer (the last GEMM writes classes first)."""
    n, c, _ = z.shape
    h = z.reshape(n * c, -1)
    for w, b in params[start + 1:-1]:
        h = torch.addmm(b, h.clamp(min=0), w.t())  # (n c, D')
    w, b = params[-1]
    return torch.addmm(b[:, None], w, h.clamp(min=0).t()).view(-1, n, c)  # (C, n, c)


def _next(params, l: int, hs: list[Tensor]) -> Tensor:
    """Pre-activation of layer ``l + 1`` from hidden layer ``l``: ``(n, D)``."""
    w, b = params[l + 1]
    return torch.addmm(b, hs[l], w.t())


@torch.no_grad()
def naive_importance(model: nn.Module, x: Tensor, y: Tensor, *, layer: int = 0, scale=None,
                     neurons: Sequence[int] | None = None, batch: int = 10_000,
                     dtype: torch.dtype = torch.float64) -> np.ndarray:
    """The journal's definition, literally: for each neuron, zero it, evaluate the whole
    dataset, restore. One full forward pass per neuron (the reference, and the benchmark's
    baseline).

    The neuron is zeroed by zeroing its outgoing weights ``W_{l+1}[:, j]``, which removes its
    output exactly. ``neurons`` restricts the loop to some neurons (others are NaN); ``batch``
    bounds the samples per forward pass. Arguments as :func:`exact_importance`.
    """
    dev = _first_param(model).device
    params = _params(model, dtype)
    layer = _check_layer(layer, len(params) - 1)
    x, y = _data(x, y, params, dev)
    s = _scale(scale, params, dtype, dev)
    net = copy.deepcopy(model).to(dtype)
    if s is not None:  # fold the first layer's multiplier into the next layer's columns
        net.layers[1].weight.mul_(s)

    def loss() -> float:
        total = 0.0
        for i in range(0, len(x), batch):
            logits = net(x[i:i + batch].to(dtype))
            total += float(F.cross_entropy(logits, y[i:i + batch], reduction="sum"))
        return total / len(x)

    base = loss()
    w = net.layers[layer + 1].weight  # (D, H_l)
    out = np.full(w.shape[1], np.nan)
    for j in (range(w.shape[1]) if neurons is None else neurons):
        saved = w[:, j].clone()
        w[:, j] = 0
        out[j] = loss() - base
        w[:, j] = saved
    return out


# ------------------------------------------------------------------------------ proxies
def proxies(model: nn.Module, x: Tensor, y: Tensor, *, layer: int = 0, scale=None,
            gates=None, chunk: int = DEFAULT_CHUNK,
            dtype: torch.dtype = torch.float64) -> dict[str, np.ndarray]:
    """Cheap importance scores of every neuron of hidden layer ``layer`` (higher = keep).

    Returns a dict of float64 arrays of shape ``(H,)``:

    - ``gate``: ``|g|`` of the given ``gates`` (only when given);
    - ``act_std``: standard deviation of the neuron's output over the samples (ddof 0);
    - ``in_norm``: L2 norm of its incoming weights ``W_l[j, :]``;
    - ``out_norm``: L2 norm of its outgoing weights ``W_{l+1}[:, j]``;
    - ``taylor``: ``|E[h_j dl/dh_j]|``, the first-order Taylor estimate of the loss change
      (Molchanov et al. 2017), ``l`` the per-sample cross-entropy;
    - ``contribution``: ``sqrt(E[h_j^2]) * |W_{l+1}[:, j]|``, the root-mean-square size of the
      exact rank-one change that removing the neuron makes to the next pre-activation (the
      perturbation's magnitude, blind to its direction with respect to the loss);
    - ``taylor2`` (last hidden layer only): the second-order Taylor expansion of the loss in the
      logits, ``E[-h_j g.w_j + h_j^2 (p.w_j^2 - (p.w_j)^2) / 2]`` with ``g = p - onehot(y)``
      and ``p`` the softmax: the cross-entropy's exact gradient and Hessian
      ``diag(p) - p p^T`` along the removal direction (Optimal-Brain-Damage style, but with the
      full Hessian along that one direction). Signed, like the exact importance.

    ``scale`` multiplies the first layer's outputs as in :func:`exact_importance`; ``gates``
    (shape ``(H,)``) only feeds the ``gate`` score.
    """
    dev = _first_param(model).device
    params = _params(model, dtype)
    n_hidden = len(params) - 1
    layer = _check_layer(layer, n_hidden)
    x, y = _data(x, y, params, dev)
    s = _scale(scale, params, dtype, dev)
    w_in = params[layer][0]       # (H, in)
    w_out = params[layer + 1][0]  # (D, H)
    h_dim = w_in.shape[0]
    sizes = [params[0][0].shape[1]] + [w.shape[0] for w, _ in params]
    batch = block_plan(sizes, len(x), chunk).batch
    last = layer == n_hidden - 1
    acc = {k: torch.zeros(h_dim, dtype=torch.float64, device=dev)
           for k in ("h", "h2", "hg", "t2")}
    n = len(x)
    for i in range(0, n, batch):
        xb, yb = x[i:i + batch].to(dtype), y[i:i + batch]
        with torch.no_grad():
            hs = _hidden(params, xb, s)
        h = hs[layer].detach().requires_grad_(True)  # (n, H)
        with torch.enable_grad():
            logits = _rest(params, layer + 1, _next(params, layer, [*hs[:layer], h]))  # (n, C)
            g, = torch.autograd.grad(_ce(logits, yb).sum(), h)  # (n, H) per-sample dl/dh
        with torch.no_grad():
            h = h.detach()
            acc["h"] += h.sum(0)
            acc["h2"] += (h * h).sum(0)
            acc["hg"] += (h * g).sum(0)
            if last:
                p = torch.softmax(logits.detach(), -1)  # (n, C)
                curv = p @ (w_out * w_out) - (p @ w_out) ** 2  # (n, H): w^T (diag p - pp^T) w
                acc["t2"] += (-h * g + 0.5 * h * h * curv).sum(0)
    mean, mean2 = acc["h"] / n, acc["h2"] / n
    # the one scorers of widthlab.units.scores, on the next layer reading the neurons
    group, moments = ScoreGroup([Column(w_out)], h_dim), [Moments(mean, mean2, None,
                                                                   acc["hg"] / n, n)]
    out_norm = Magnitude()(group).sqrt().to(dev)
    scores = {}
    if gates is not None:
        gv = torch.as_tensor(gates).detach().to(device=dev, dtype=torch.float64).flatten()
        if gv.shape != (h_dim,):
            raise UsageError(f"gates must hold one value per neuron of layer {layer} ({h_dim}), "
                             f"got shape {tuple(gv.shape)}")
        scores["gate"] = gv.abs()
    scores.update({
        "act_std": Variance()(group, moments),
        "in_norm": w_in.norm(dim=1),
        "out_norm": out_norm,
        "taylor": Taylor()(group, moments),
        "contribution": mean2.sqrt() * out_norm,
    })
    if last:
        scores["taylor2"] = acc["t2"] / n
    return {k: v.double().cpu().numpy() for k, v in scores.items()}


