"""Where a layer's neurons go: the consumer ``nn.Linear`` of a layer, found with ``torch.fx``.

A width frontier removes output neurons of an ``nn.Linear`` (the *layer*) and repairs the one
``nn.Linear`` that reads them (the *consumer*). That is exact only when every operation between
the two acts on each neuron separately (ReLU and friends, dropout in eval mode): then neuron
``j`` of the layer is column ``j`` of the consumer's input. :func:`trace_layer` checks this on
the model's ``torch.fx`` graph and refuses, naming the operation, a layer whose output feeds
several operations (a residual path, two heads) or a mixing operation (a norm, a sum).

It also extracts the *suffix*: the network after the consumer, as a function of the consumer's
output only, so the frontier evaluates every cut from cached activations without rerunning the
layers before it.

Example::

    path = trace_layer(model, "0")          # nn.Sequential(Linear, ReLU, Linear)
    path.consumer, path.ops                 # "2", ("ReLU",)
    a = consumer_inputs(model, path, x)     # (N, H) what the consumer reads
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError

__all__ = ["LayerPath", "consumer_inputs", "trace_layer"]

#: Modules that act on each feature separately (in eval mode).
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.Dropout, nn.AlphaDropout, nn.Identity,
)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.tanh,
    F.sigmoid, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, F.softsign, F.dropout,
    F.alpha_dropout, torch.relu, torch.tanh, torch.sigmoid, torch.dropout, torch.selu,
    torch.celu,
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_", "clamp",
                        "clamp_min", "contiguous", "float", "double"}
# scalar arithmetic (x * 2.0) is element-wise; with a second tensor it is not
_SCALAR_OPS = {operator.mul, operator.truediv, operator.add, operator.sub, torch.mul,
               torch.add, torch.sub, torch.div, torch.clamp}


@dataclass(frozen=True)
class LayerPath:
    """A layer, its consumer and what lies between and after them.

    Attributes
    ----------
    layer, consumer : str
        Module names (as in ``model.named_modules()``) of the two ``nn.Linear``.
    ops : tuple of str
        The element-wise operations between them, in order.
    suffix : torch.fx.GraphModule or None
        The rest of the network as a function of the consumer's output (None: the consumer's
        output is the model's output).
    """

    layer: str
    consumer: str
    ops: tuple[str, ...]
    suffix: fx.GraphModule | None


def _describe(node: fx.Node, mods: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(mods[node.target]).__name__})"
    if node.op == "output":
        return "the model's output"
    return f"{getattr(node.target, '__name__', node.target)}"


def _elementwise(node: fx.Node, src: fx.Node, mods: dict[str, nn.Module]) -> bool:
    """Whether ``node`` applies a per-feature function to ``src`` and reads no other tensor."""
    tensors = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
    if tensors != [src]:
        return False
    if node.op == "call_module":
        return isinstance(mods[node.target], ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS or node.target in _SCALAR_OPS
    if node.op == "call_method":
        return node.target in _ELEMENTWISE_METHODS or node.target in {"mul", "div", "add",
                                                                       "sub"}
    return False


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types on data-dependent control flow
        raise UsageError(f"cannot trace {type(model).__name__} with torch.fx ({exc}); the "
                         "frontier needs a model without data-dependent control flow") from exc


def _walk(gm: fx.GraphModule, layer: str, mods: dict[str, nn.Module]
          ) -> tuple[fx.Node, tuple[str, ...]]:
    """The consumer's node, following ``layer``'s single-use element-wise chain."""
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer]
    if len(calls) != 1:
        raise UsageError(f"layer {layer!r} is called {len(calls)} times in the forward pass; "
                         "the frontier needs a layer used exactly once")
    cur, ops = calls[0], []
    while True:
        users = list(cur.users)
        if len(users) != 1:
            names = ", ".join(_describe(u, mods) for u in users) or "nothing"
            raise UsageError(f"the output of layer {layer!r} feeds {len(users)} operations "
                             f"({names}): a residual path or several consumers; the frontier "
                             "needs exactly one consumer nn.Linear")
        nxt = users[0]
        if nxt.op == "call_module" and isinstance(mods[nxt.target], nn.Linear):
            return nxt, tuple(ops)
        if not _elementwise(nxt, cur, mods):
            raise UsageError(f"the output of layer {layer!r} reaches {_describe(nxt, mods)}, "
                             "which is not an element-wise operation of that output alone (a "
                             "residual sum, a norm, a reshape or the model's output); the "
                             "frontier needs layer -> element-wise ops -> one nn.Linear")
        ops.append(_describe(nxt, mods))
        cur = nxt


def _suffix(gm: fx.GraphModule, consumer: fx.Node, mods: dict[str, nn.Module]
            ) -> fx.GraphModule | None:
    """The graph after ``consumer`` as a module of the consumer's output alone."""
    after, seen = [], {consumer}
    for n in gm.graph.nodes:  # topological order: a node's inputs come before it
        if any(a in seen for a in n.all_input_nodes):
            seen.add(n)
            after.append(n)
    out = [n for n in after if n.op == "output"]
    if not out:
        raise UsageError("the model's output does not depend on the consumer layer")
    if len(after) == 1 and out[0].args[0] is consumer:
        return None
    g = fx.Graph()
    env = {consumer: g.placeholder("z")}
    for n in after:
        extra = [a for a in n.all_input_nodes if a not in env]
        if extra:
            raise UsageError(f"after consumer {consumer.target!r} the model reads other values "
                             f"({', '.join(_describe(a, mods) for a in extra)}); the frontier "
                             "needs a network that continues from the consumer's output alone")
        env[n] = g.node_copy(n, lambda a: env[a])
    return fx.GraphModule(gm, g)


def trace_layer(model: nn.Module, layer: str) -> LayerPath:
    """Find the consumer of ``layer`` in ``model`` and the network after it.

    Parameters
    ----------
    model : nn.Module
        Any module ``torch.fx`` can trace; dropout counts as element-wise (eval mode).
    layer : str
        A name from ``model.named_modules()`` of an ``nn.Linear``.

    Returns
    -------
    LayerPath

    Raises
    ------
    UsageError
        If ``layer`` is not an ``nn.Linear`` of the model, is called more than once, or its
        output feeds anything but one ``nn.Linear`` through element-wise operations.
    """
    mods = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in mods:
        linears = [n for n, m in mods.items() if isinstance(m, nn.Linear)]
        raise UsageError(f"no module {layer!r} in {type(model).__name__}; nn.Linear layers: "
                         f"{', '.join(linears) or 'none'}")
    if not isinstance(mods[layer], nn.Linear):
        raise UsageError(f"layer {layer!r} is a {type(mods[layer]).__name__}; the frontier "
                         "removes output neurons of an nn.Linear")
    gm = _trace(copy.deepcopy(model).eval())
    node, ops = _walk(gm, layer, mods)
    cons = mods[node.target]
    if cons.in_features != mods[layer].out_features:
        raise UsageError(f"consumer {node.target!r} reads {cons.in_features} features, layer "
                         f"{layer!r} writes {mods[layer].out_features}")
    return LayerPath(layer, str(node.target), ops, _suffix(gm, node, mods))


class _Stop(Exception):
    """Raised by the capture hook: nothing after the consumer's input is needed."""


@torch.no_grad()
def consumer_inputs(model: nn.Module, path: LayerPath, x: Tensor, *, batch: int = 4096,
                    dtype: torch.dtype = torch.float64, neuron_major: bool = False) -> Tensor:
    """What the consumer reads, ``(N, H)`` in ``dtype``, for the inputs ``x`` (eval mode).

    The forward pass stops at the consumer (a pre-hook captures its input and aborts), so the
    layers after it cost nothing. ``model`` is used as given (its dtype and device); ``x`` is
    moved to the model's device in batches of ``batch`` samples. ``neuron_major=True`` returns
    the transpose ``(H, N)`` (contiguous), written batch by batch with no ``(N, H)`` copy.
    """
    cons = dict(model.named_modules())[path.consumer]
    p = next(model.parameters())
    got: list[Tensor] = []

    def hook(_mod, args):
        got.append(args[0].detach().to(dtype))
        raise _Stop

    was_training = model.training
    model.eval()
    handle = cons.register_forward_pre_hook(hook)
    out: list[Tensor] = []
    buf: Tensor | None = None
    try:
        for i in range(0, len(x), batch):
            try:
                model(x[i:i + batch].to(device=p.device, dtype=p.dtype))
            except _Stop:
                pass
            a = got.pop()
            if a.dim() != 2:
                raise UsageError(f"consumer {path.consumer!r} reads a tensor of shape "
                                 f"{tuple(a.shape)}; the frontier needs (batch, features)")
            if not neuron_major:
                out.append(a)
                continue
            if buf is None:
                buf = a.new_empty(a.shape[1], len(x))
            buf[:, i:i + len(a)] = a.t()
    finally:
        handle.remove()
        model.train(was_training)
    if neuron_major:
        return buf if buf is not None else torch.empty(0, 0, dtype=dtype, device=p.device)
    return torch.cat(out)
