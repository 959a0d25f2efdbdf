"""Shared kernels of :mod:`widthlab.metrics.importance`: the supported hidden
activation, the parameters, data, scale and per-layer forward of an MLP in a chosen dtype,
and the per-sample cross-entropy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from widthlab.errors import UsageError

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
