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
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.metrics.ordering import kendall_tau, ordering, spearman, top_k_overlap

__all__ = ["DEFAULT_CHUNK", "PROXIES", "SUPPORTED_ACTIVATIONS", "BlockPlan", "activation_of",
           "agreement", "block_plan", "dense_latency", "exact_importance", "k_grid", "k_to_reach",
           "keep_neurons", "naive_importance", "orderings_of", "proxies", "topk_accuracy"]

#: Default element budget of one temporary block (2**22 float64 values = 32 MiB).
DEFAULT_CHUNK = 2 ** 22

#: Proxy names, in report order ("gate" only when gates are given, "taylor2" only for the last
#: hidden layer).
PROXIES = ("gate", "act_std", "in_norm", "out_norm", "taylor", "contribution", "taylor2")


# ------------------------------------------------------------------------------ helpers
#: Activations the formulas here are exact for (the hidden layers' nonlinearity).
SUPPORTED_ACTIVATIONS = ("relu",)
_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.GELU: "gelu",
                       nn.ELU: "elu", nn.LeakyReLU: "leaky_relu", nn.SiLU: "silu",
                       nn.Softplus: "softplus", nn.Hardtanh: "hardtanh"}


def activation_of(model: nn.Module) -> str | None:
    """The hidden activation of ``model`` as a lower-case name, or None if it cannot be told.

    ``widthlab.nn.MLP`` (and subclasses that keep its ``forward``) is ReLU; any other model
    declares it with an ``activation`` attribute (a name or a module, e.g. ``"relu"`` or
    ``nn.Tanh()``) or holds activation modules (``nn.ReLU``, ``nn.Tanh``, ...).
    """
    from widthlab.nn.bank import MLP

    declared = getattr(model, "activation", None)
    if isinstance(declared, str):
        return declared.lower()
    if isinstance(declared, nn.Module):
        return _ACTIVATION_MODULES.get(type(declared), type(declared).__name__.lower())
    if isinstance(model, MLP) and type(model).forward is MLP.forward:
        return "relu"
    found = {_ACTIVATION_MODULES[type(m)] for m in model.modules()
             if type(m) in _ACTIVATION_MODULES}
    return found.pop() if len(found) == 1 else ("mixed" if found else None)


def _first_param(model: nn.Module) -> Tensor:
    """The model's first parameter (its device and dtype), or a clear error."""
    for p in model.parameters():
        return p
    raise UsageError(f"{type(model).__name__} has no parameters; pass a trained MLP "
                     "(a bank member exported with bank.export(m))")


def _params(model: nn.Module, dtype: torch.dtype) -> list[tuple[Tensor, Tensor]]:
    """``[(W (out, in), b (out,))]`` of every layer of a plain MLP, detached, in ``dtype``.

    Raises
    ------
    UsageError
        When ``model`` is not a ``.layers`` list of ``nn.Linear`` with biases, or its hidden
        activation is not ReLU (the only one the formulas here are exact for).
    """
    _first_param(model)
    layers = getattr(model, "layers", None)
    if layers is None or len(layers) < 2 or not all(isinstance(m, nn.Linear) for m in layers):
        raise UsageError(f"expected a widthlab.nn.MLP (a .layers list of at least two "
                         f"nn.Linear), got {type(model).__name__}; export a bank member with "
                         "bank.export(m)")
    if any(m.bias is None for m in layers):
        raise UsageError(f"{type(model).__name__} has a layer without bias; use nn.Linear "
                         "layers with bias=True (as widthlab.nn.MLP)")
    act = activation_of(model)
    if act not in SUPPORTED_ACTIVATIONS:
        told = "an unknown activation" if act is None else f"activation {act!r}"
        raise UsageError(f"{type(model).__name__} has {told}, but importance and proxies are "
                         f"exact only for ReLU; use a ReLU MLP, or set model.activation = "
                         "'relu' if it is one")
    return [(m.weight.detach().to(dtype), m.bias.detach().to(dtype)) for m in layers]


def _data(x: Tensor, y: Tensor, params, device) -> tuple[Tensor, Tensor]:
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise UsageError("x and y must be torch tensors (e.g. a Split's .x and .y)")
    d_in = params[0][0].shape[1]
    if x.dim() != 2 or x.shape[1] != d_in:
        raise UsageError(f"x must have shape (N, {d_in}) for this model, got {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise UsageError(f"y must hold one label per sample, shape ({x.shape[0]},), got "
                         f"{tuple(y.shape)}")
    if x.shape[0] == 0:
        raise UsageError("no samples: importance is a mean over at least one sample")
    n_cls = params[-1][0].shape[0]
    if int(y.min()) < 0 or int(y.max()) >= n_cls:
        raise UsageError(f"labels must be in [0, {n_cls}), got range [{int(y.min())}, "
                         f"{int(y.max())}]")
    return x.to(device), y.to(device=device, dtype=torch.long)


def _check_layer(layer, n_hidden: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or \
            not -n_hidden <= layer < n_hidden:
        raise UsageError(f"layer must be a hidden-layer index in [0, {n_hidden}) (or None for "
                         f"every hidden layer), got {layer!r}")
    return int(layer) % n_hidden


def _scale(scale, params, dtype, device) -> Tensor | None:
    """The first hidden layer's per-neuron multiplier (a gate or cut-off), ``(H0,)``."""
    if scale is None:
        return None
    s = torch.as_tensor(scale).detach().to(device=device, dtype=dtype).flatten()
    h0 = params[0][0].shape[0]
    if s.shape != (h0,):
        raise UsageError(f"scale must hold one value per neuron of the first hidden layer "
                         f"({h0}), got shape {tuple(s.shape)}")
    return s


def _hidden(params, x: Tensor, scale: Tensor | None) -> list[Tensor]:
    """Every hidden activation for the samples ``x``: ``[(n, H_0), ..., (n, H_{L-1})]``."""
    hs, h = [], x
    for i, (w, b) in enumerate(params[:-1]):
        h = torch.addmm(b, h, w.t()).clamp_(min=0)  # (n, H_i)
        if i == 0 and scale is not None:
            h = h * scale
        hs.append(h)
    return hs


def _rest(params, start: int, z: Tensor) -> Tensor:
    """Logits from the pre-activation ``z`` (..., D) of layer ``start`` (the output: as is)."""
    for w, b in params[start + 1:]:
        z = torch.addmm(b, z.reshape(-1, z.shape[-1]).clamp(min=0), w.t()).view(
            *z.shape[:-1], w.shape[0])
    return z


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy for logits ``(n, ..., C)`` and labels broadcastable to
    ``(n, ...)``."""
    picked = logits.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return torch.logsumexp(logits, -1) - picked


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
    buf = torch.empty(plan.batch * max(plan.neurons) * sizes[-1], dtype=dtype, device=dev)
    for i in range(0, len(x), plan.batch):
        xb, yb = x[i:i + plan.batch].to(dtype), y[i:i + plan.batch]  # (n, in), (n,)
        hs = _hidden(params, xb, s)
        ce0 = _ce(_rest(params, n_hidden, _next(params, n_hidden - 1, hs)), yb)  # (n,)
        for l in todo:
            w_next = params[l + 1][0]  # (D, H_l)
            z = _next(params, l, hs)  # (n, D) pre-activation of layer l + 1 (or the logits)
            c = plan.neurons[l]
            for j in range(0, sizes[l + 1], c):
                h = hs[l][:, j:j + c]  # (n, c)
                if l == n_hidden - 1:
                    # removing neuron j from the logits, classes first so the class reductions
                    # below run over contiguous (n, c) slabs: z - h[:, j] * W[:, j]. One buffer
                    # is reused: a fresh multi-MiB tensor per block costs page faults.
                    zc = buf[:w_next.shape[0] * h.numel()].view(w_next.shape[0], *h.shape)
                    torch.addcmul(z.t()[:, :, None], w_next[:, None, j:j + c], h, value=-1,
                                  out=zc)  # (C, n, c)
                else:
                    zc = _rest_classes_first(
                        params, l + 1, z.unsqueeze(1) - h[:, :, None] * w_next.t()[None, j:j + c])
                delta = _ce_classes_first(zc, yb).sub_(ce0[:, None])  # (n, c)
                # where the neuron is silent nothing changes: make that exact, not 1 ulp
                delta.masked_fill_(h == 0, 0)
                sums[l][j:j + c] += delta.sum(0, dtype=torch.float64)
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


def _ce_classes_first(zc: Tensor, y: Tensor) -> Tensor:
    """Per-(sample, neuron) cross-entropy from logits ``(C, n, c)``, consuming ``zc``."""
    picked = zc.gather(0, y.view(1, -1, 1).expand(1, *zc.shape[1:]))[0]  # (n, c)
    m = zc.amax(0)  # (n, c)
    return zc.sub_(m).exp_().sum(0).log_().add_(m).sub_(picked)


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
    out_norm = w_out.norm(dim=0)
    scores = {}
    if gates is not None:
        gv = torch.as_tensor(gates).detach().to(device=dev, dtype=torch.float64).flatten()
        if gv.shape != (h_dim,):
            raise UsageError(f"gates must hold one value per neuron of layer {layer} ({h_dim}), "
                             f"got shape {tuple(gv.shape)}")
        scores["gate"] = gv.abs()
    scores.update({
        "act_std": (mean2 - mean * mean).clamp(min=0).sqrt(),
        "in_norm": w_in.norm(dim=1),
        "out_norm": out_norm,
        "taylor": (acc["hg"] / n).abs(),
        "contribution": mean2.sqrt() * out_norm,
    })
    if last:
        scores["taylor2"] = acc["t2"] / n
    return {k: v.double().cpu().numpy() for k, v in scores.items()}


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
