"""Which tensors a gated unit reaches: the producer, BatchNorms and consumers of its units.

The model is traced with ``torch.fx`` (part of PyTorch: no extra dependency). For a gate on
the output units of layer ``L`` the forward walk starts after ``L`` (after the BatchNorm that
follows it, where the gate sits) and goes through ops that keep a zero unit zero
(ReLU-like activations, tanh, dropout, pooling, ``Flatten``) until every path ends in a
consumer: a Linear (its input features; after a ``Flatten`` the block of features a channel
spans) or a Conv2d with ``groups=1`` (its input channels). Anything else, a residual add, a
concat, a BatchNorm *after* the gate, a sigmoid (``sigmoid(0) != 0``), the model's output,
raises :class:`~widthlab.errors.UsageError` naming the node.

An input gate on layer ``C`` walks backward from ``C``'s input through the same ops and
BatchNorms to the layer that makes those units; when every tensor on that path is read only
by the next op, the gate owns that producer's units (shrinking removes them there too).
Otherwise (the model's input, a ``Flatten``, a shared tensor) the gate selects ``C``'s raw
input features.

Example::

    groups = plan_groups(model)   # one Group per gate of the model
    groups[0].producer, groups[0].norms, groups[0].consumers
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from widthlab.errors import UsageError
from widthlab.nn.surgery.gates import IN_ATTR, OUT_ATTR, UnitGate, model_gates

LAYERS = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# modules and functions that map a zero unit to zero, unit by unit
ZERO_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardtanh,
                nn.Softsign, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.MaxPool1d, nn.MaxPool2d,
                nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                nn.Identity)
ZERO_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.tanh,
                  F.tanh, F.hardtanh, F.dropout, F.dropout1d, F.dropout2d, F.max_pool1d,
                  F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool2d,
                  F.adaptive_max_pool2d}
ZERO_METHODS = {"relu", "relu_", "tanh", "contiguous"}
NAMED_OPS = {operator.add: "a residual add", operator.iadd: "a residual add",
             torch.add: "a residual add", torch.cat: "a concat", torch.stack: "a stack",
             operator.mul: "a product", torch.sigmoid: "a sigmoid (sigmoid(0) != 0)"}


@dataclass
class Consumer:
    """A layer reading the units: ``name`` in the model, ``spatial``: reached through a
    Flatten from conv channels (each unit is a block of input features)."""

    name: str
    spatial: bool = False


@dataclass
class Group:
    """What one gate's units are part of (``producer`` None: the gate selects raw inputs)."""

    gate: UnitGate
    producer: str | None
    norms: list[str] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)


@dataclass
class GateSpec:
    """Where :func:`~widthlab.nn.surgery.gates.gate_layers` attaches a new gate."""

    key: str
    module: nn.Module
    attr: str
    n: int
    dim: int
    selects: bool
    like: torch.Tensor
    producer: str | None


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(model)``, with a UsageError when the model cannot be traced."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds (TraceError, TypeError, ...)
        raise UsageError(f"cannot trace the model with torch.fx ({type(exc).__name__}: {exc}); "
                         "shrinking needs a forward without data-dependent control flow"
                         ) from exc


def _node_of(gm: fx.GraphModule, name: str) -> fx.Node:
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == name]
    if len(nodes) != 1:
        raise UsageError(f"layer {name!r} is called {len(nodes)} times in the forward; gate a "
                         "layer that is used exactly once")
    return nodes[0]


def _layer(modules: dict[str, nn.Module], name: str) -> nn.Module:
    if name not in modules:
        raise UsageError(f"no submodule named {name!r}; names are those of "
                         "model.named_modules()")
    mod = modules[name]
    if not isinstance(mod, LAYERS) or (isinstance(mod, nn.Conv2d) and mod.groups != 1):
        raise UsageError(f"{name!r} is a {type(mod).__name__}; gates go on nn.Linear and "
                         "nn.Conv2d (groups=1) layers")
    return mod


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    what = NAMED_OPS.get(node.target) if node.op == "call_function" else None
    if node.op == "call_module":
        what = f"module {node.target!r}, a {type(modules[node.target]).__name__}"
    return f"node {node.name!r} ({what or f'{node.op} {node.target}'})"


def _zero_keeping(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], ZERO_MODULES)
    if node.op == "call_function":
        return node.target in ZERO_FUNCTIONS
    return node.op == "call_method" and node.target in ZERO_METHODS


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """``Flatten()``, ``torch.flatten(x, 1)``, ``x.flatten(1)``, ``x.view(x.size(0), -1)``."""
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    args = list(node.args[1:]) + list(node.kwargs.values())
    if (node.op, node.target) in (("call_function", torch.flatten), ("call_method", "flatten")):
        return args == [1] or args == [1, -1]
    return node.op == "call_method" and node.target in ("view", "reshape") and (
        len(args) == 2 and args[1] == -1)


def _harmless(node: fx.Node) -> bool:
    """A shape query of the batch dimension (``x.size(0)``)."""
    return node.op == "call_method" and node.target == "size" and node.args[1:] == (0,)


def _walk_forward(node: fx.Node, modules: dict[str, nn.Module], key: str,
                  spatial: bool) -> list[Consumer]:
    """Consumers of the units flowing out of ``node`` (``spatial``: they are conv channels)."""
    out: list[Consumer] = []
    stack, seen = [(node, False)], set()
    while stack:
        cur, flat = stack.pop()
        for user in cur.users:
            if user in seen or _harmless(user):
                continue
            seen.add(user)
            mod = modules.get(user.target) if user.op == "call_module" else None
            bad = None
            if user.op == "output":
                bad = "the model's output (gate a hidden layer)"
            elif user.args[:1] != (cur,) or any(a is cur for a in user.args[1:]):
                bad = _describe(user, modules)
            elif isinstance(mod, nn.Linear) and (flat or not spatial):
                out.append(Consumer(user.target, spatial))
                continue
            elif isinstance(mod, nn.Linear):
                bad = f"{_describe(user, modules)} reading conv channels unflattened"
            elif isinstance(mod, nn.Conv2d) and mod.groups == 1 and spatial and not flat:
                out.append(Consumer(user.target))
                continue
            elif _is_flatten(user, modules) and not flat:
                stack.append((user, True))
                continue
            elif _zero_keeping(user, modules):
                stack.append((user, flat))
                continue
            else:
                bad = _describe(user, modules)
            raise UsageError(f"cannot follow the units of {key!r} into {bad}; shrinking "
                             "follows units only into Linear, Conv2d (groups=1), activations "
                             "with f(0) = 0, dropout, pooling and Flatten")
    return out


def _out_site(gm: fx.GraphModule, modules: dict[str, nn.Module], name: str
              ) -> tuple[fx.Node, list[str]]:
    """The node after which an output gate of ``name`` sits, and the BatchNorm it passes."""
    node = _node_of(gm, name)
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and isinstance(
            modules[users[0].target], NORMS) and users[0].args[:1] == (node,):
        return users[0], [users[0].target]
    return node, []


def _producer(node: fx.Node, modules: dict[str, nn.Module], consumer: nn.Module
              ) -> tuple[str | None, list[str]]:
    """Backward from a layer's input to the layer making those units, if it can be owned."""
    norms, cur = [], node
    while len(cur.users) == 1 and cur.op in ("call_module", "call_function", "call_method"):
        mod = modules.get(cur.target) if cur.op == "call_module" else None
        if isinstance(mod, LAYERS) and not (isinstance(mod, nn.Conv2d) and mod.groups != 1):
            same = isinstance(mod, nn.Conv2d) == isinstance(consumer, nn.Conv2d)
            return (cur.target, norms[::-1]) if same else (None, [])
        if isinstance(mod, NORMS):
            norms.append(cur.target)
        elif not _zero_keeping(cur, modules):
            break
        if not cur.args or not isinstance(cur.args[0], fx.Node):
            break
        cur = cur.args[0]
    return None, []


def _groups(model: nn.Module, gates: list[tuple[UnitGate, str, str]]) -> list[Group]:
    """Groups of ``(gate, layer name, side)`` triples, with their checks."""
    gm, modules = trace(model), dict(model.named_modules())
    groups, owners = [], {}
    for gate, name, side in gates:
        layer = _layer(modules, name)
        spatial = isinstance(layer, nn.Conv2d)
        if side == "out":
            site, norms = _out_site(gm, modules, name)
            group = Group(gate, name, norms, _walk_forward(site, modules, gate.key, spatial))
        elif gate.selects:
            group = Group(gate, None, [], [Consumer(name)])
        else:
            producer, norms = _producer(_node_of(gm, name).args[0], modules, layer)
            if producer is None:
                raise UsageError(f"input gate {gate.key!r} no longer sits on a layer's units; "
                                 "gate the model again from scratch")
            group = Group(gate, producer, norms, [Consumer(name)])
        if group.producer is not None:
            if group.producer in owners:
                raise UsageError(f"the units of {group.producer!r} have two gates "
                                 f"({owners[group.producer]!r}, {gate.key!r}); keep one")
            owners[group.producer] = gate.key
        groups.append(group)
    return groups


def _attached(model: nn.Module) -> list[tuple[UnitGate, str, str]]:
    found = []
    for mod in model.modules():
        for attr, side in ((OUT_ATTR, "out"), (IN_ATTR, "in")):
            gate = getattr(mod, attr, None)
            if isinstance(gate, UnitGate):
                found.append((gate, gate.key.removesuffix(":in"), side))
    return found


def plan_groups(model: nn.Module) -> list[Group]:
    """One :class:`Group` per gate attached to ``model`` (UsageError where one cannot be
    followed)."""
    attached = _attached(model)
    return _groups(model, attached) if attached else []


def plan_gates(model: nn.Module, outs: list[str], ins: list[str]) -> list[GateSpec]:
    """Where the new output gates (on ``outs``) and input gates (on ``ins``) go, checked
    together with the gates the model already has; changes nothing."""
    gm, modules = trace(model), dict(model.named_modules())
    taken = {g.producer for g in plan_groups(model) if g.producer is not None}
    have = {(name, side) for _, name, side in _attached(model)}
    specs: list[GateSpec] = []
    for name in outs:
        layer = _layer(modules, name)
        if (name, "out") in have or name in taken:
            raise UsageError(f"the output units of {name!r} already have a gate")
        site, _ = _out_site(gm, modules, name)
        _walk_forward(site, modules, name, isinstance(layer, nn.Conv2d))
        conv = isinstance(layer, nn.Conv2d)
        specs.append(GateSpec(name, modules[site.target], OUT_ATTR,
                              layer.out_channels if conv else layer.out_features,
                              1 if conv else -1, False, layer.weight, name))
        taken.add(name)
    for name in ins:
        layer = _layer(modules, name)
        if (name, "in") in have:
            raise UsageError(f"the input features of {name!r} already have a gate")
        conv = isinstance(layer, nn.Conv2d)
        producer, _ = _producer(_node_of(gm, name).args[0], modules, layer)
        if producer in taken:
            continue  # these units already have a gate
        n = layer.in_channels if conv else layer.in_features
        if producer is not None:
            p = modules[producer]
            n = p.out_channels if conv else p.out_features
            taken.add(producer)
        specs.append(GateSpec(f"{name}:in", layer, IN_ATTR, n, 1 if conv else -1,
                              producer is None, layer.weight, producer))
    return specs


__all__ = ["Consumer", "GateSpec", "Group", "model_gates", "plan_gates", "plan_groups", "trace"]
