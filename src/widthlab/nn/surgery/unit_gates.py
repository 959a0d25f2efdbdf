"""Gates on the groups of :mod:`widthlab.units`: residual streams, attention heads, FFN and
conv channels of any eager model, each gated at ONE point where a gate of exactly 0 is the
same as removing the unit.

``gate_layers(model, groups=[...], example=x)`` (:func:`gate_groups`) traces the model with
:func:`~widthlab.units.build_graph` and puts one :class:`~widthlab.nn.surgery.UnitGate` per
group into ``model.widthlab_unit_gates`` (a ``ModuleDict``); the gate is applied by hooks:

- *read point* (heads, FFN, channels, and streams no norm mixes, e.g. a ResNet's): the input
  of every ``nn.Linear`` / ``nn.ConvNd`` (``groups=1``) / Hugging Face ``Conv1D`` that reads
  the units (the weight's input dimension is in the group) is multiplied, feature by
  feature, by its unit's gate: a head's ``o_proj`` input columns, the FFN's down
  projection input, the next conv's input channels, every conv, shortcut and classifier
  reading a stream. Those layers are linear in their input, so a
  gate of 0 is exactly the layer without those columns; nothing else reads the units (the
  identity shortcuts, ReLUs, pooling and BatchNorms act per unit).
- *norm point* (a stream mixed by LayerNorms, e.g. a pre-norm transformer's): every
  LayerNorm on the stream computes its mean and variance over the units whose gate is not
  0 and its output is multiplied by the gate; a unit with gate 0 is then absent from the
  statistics, so the gated model equals the smaller one. Pre-norm only: every read of the
  stream must go through one of its norms (true of GPT-2, nanoGPT, Llama-style blocks with
  LayerNorm; RMSNorm is refused).

:func:`shrink_` removes dead units of these groups with ONE call of
:func:`~widthlab.units.remove_units` (optimizer state kept), and
:func:`~widthlab.nn.surgery.fold_gates_` multiplies the gates into the weights.
Within one forward of the model a gate is sampled once (hard-concrete) and observed once
(L1's Smallify statistics), however many layers read it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.surgery.gates import BYPASS as _BYPASS
from widthlab.nn.surgery.gates import UnitGate
from widthlab.units import Group, Slice, UnitGraph, build_graph

CONTAINER = "widthlab_unit_gates"
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class bypassing:  # noqa: N801 - a context manager
    """``with bypassing():`` units-core gates pass their inputs through unchanged."""

    def __enter__(self) -> None:
        _BYPASS.append(True)

    def __exit__(self, *exc) -> None:
        _BYPASS.pop()


def gate_values(gate: UnitGate) -> Tensor:
    """This forward's gate ``(n,)``: the gate module applied to ones (eval ``scale()``, a
    hard-concrete sample in training, or L1's ``relu(g)`` with Smallify statistics observed
    once; ``1 * s`` is ``s`` exactly), so the gate's own forward hooks run as for a layer's
    gate; the same values for every reader of this forward."""
    s = gate.__dict__.get("_values")
    if s is None:
        s = gate(torch.ones(gate.width, dtype=gate.gate.dtype, device=gate.gate.device))
        object.__setattr__(gate, "_values", s)  # cleared when the model's forward ends
    return s


def _enter(gates: nn.ModuleDict, module, args) -> None:
    for g in gates.values():
        g.__dict__.pop("_values", None)
    if not _BYPASS and any(g.width != g.unit_group.size for g in gates.values()):
        _rebind(module, gates)  # a checkpoint of a shrunk model was loaded (resume)


def _leave(gates: nn.ModuleDict, module, args, output) -> None:
    for g in gates.values():  # no graph kept alive (and the model stays deep-copyable)
        g.__dict__.pop("_values", None)


def unit_factor(s: Tensor, sl: Slice) -> Tensor:
    """Per index of ``sl``'s dimension: its unit's gate, 1 where the index is in no unit."""
    units = sl.units.to(s.device)
    return torch.where(units >= 0, s[units.clamp(min=0)], torch.ones((), dtype=s.dtype,
                                                                      device=s.device))


def _read_hook(gate: UnitGate, sl: Slice, module: nn.Module, args: tuple):
    if _BYPASS:
        return None
    x = args[0]
    f = unit_factor(gate_values(gate), sl).to(x.dtype)
    if isinstance(module, _CONV):  # a conv's channels: (N, C, ...)
        f = f.view(-1, *([1] * (x.ndim - 2)))
    return (x * f, *args[1:])


def _norm_hook(gate: UnitGate, sl: Slice, module: nn.Module, args: tuple, output: Tensor):
    if _BYPASS:
        return None
    x = args[0]
    f = unit_factor(gate_values(gate), sl).to(x.dtype)  # (C,)
    alive = (f != 0).to(x.dtype)
    k = alive.sum()
    mean = (x * alive).sum(-1, keepdim=True) / k
    var = (((x - mean) * alive) ** 2).sum(-1, keepdim=True) / k
    y = (x - mean) * torch.rsqrt(var + getattr(module, "eps", 1e-5))
    if getattr(module, "weight", None) is not None:
        y = y * module.weight
    if getattr(module, "bias", None) is not None:
        y = y + module.bias
    return y * f


HOOKS = (_read_hook, _norm_hook, _enter, _leave)


def _is_read(module: nn.Module, sl: Slice) -> bool:
    """The slice is the input dimension of a layer linear in its input: an ``nn.Linear``,
    a ``ConvNd`` with ``groups=1`` (weight dim 1), a Hugging Face ``Conv1D`` (weight dim 0,
    ``x @ weight``)."""
    if sl.name != "weight":
        return False
    if type(module).__name__ == "Conv1D" and not isinstance(module, _CONV):
        return sl.dim == 0
    return sl.dim == 1 and (isinstance(module, nn.Linear)
                            or isinstance(module, _CONV) and module.groups == 1)


def _sharers(model: nn.Module, sl: Slice) -> list[tuple[str, nn.Module]]:
    """Every module holding the slice's tensor (a head tied to the embedding reads the
    stream through the slice recorded on the embedding)."""
    t = getattr(model.get_submodule(sl.module), sl.name)
    found = [(name, m) for name, m in model.named_modules()
             if any(p is t for p in m._parameters.values())]
    return found or [(sl.module, model.get_submodule(sl.module))]


def tied(model: nn.Module, name: str) -> bool:
    """Whether module ``name``'s weight is also another module's parameter."""
    w = model.get_submodule(name).weight
    return sum(any(p is w for p in m._parameters.values()) for m in model.modules()) > 1


def gate_points(model: nn.Module, group: Group) -> list[tuple[str, Slice, str]]:
    """``[(module name, slice, "read" | "norm")]``: where ``group``'s gate goes (see the
    module docstring); :class:`UsageError` when no exact point exists."""
    if group.mixers:
        names = {m.removeprefix("layer_norm in ") for m in group.mixers}
        other = sorted(m for m in group.mixers if not m.startswith("layer_norm in "))
        points = [(s.module, s, "norm") for s in group.slices
                  if s.module in names and s.name == "weight"]
        if other or len({p[0] for p in points}) != len(names):
            raise UsageError(
                f"group {group.name!r} is mixed by {', '.join(other or sorted(names))}: no "
                "point where a zero gate equals removing its units (a norm with weights and "
                "LayerNorm statistics is needed); gate its other groups instead")
        for name, _, _ in points:
            if "rms" in type(model.get_submodule(name)).__name__.lower():
                raise UsageError(f"group {group.name!r} is normalised by the RMSNorm "
                                 f"{name!r}; stream gates support LayerNorm only")
        return points
    points = [(name, s, "read") for s in group.slices for name, m in _sharers(model, s)
              if _is_read(m, s)]
    if not points:
        raise UsageError(f"group {group.name!r} is read by no Linear or Conv (groups=1) "
                         "layer, so no gate point removes its units exactly")
    return points


def _resolve(graph: UnitGraph, groups: Sequence[Group | str]) -> list[Group]:
    if isinstance(groups, (str, Group)):
        groups = [groups]
    out = []
    for g in groups:
        name = g.name if isinstance(g, Group) else g
        if not isinstance(name, str):
            raise UsageError(f"groups must be Group handles or group names, got {g!r}")
        try:
            out.append(graph[name])
        except KeyError as err:
            raise UsageError(f"{err.args[0]}; pass names from build_graph(model, ...)"
                             ".groups") from None
    if len({g.name for g in out}) != len(out):
        raise UsageError("a group is listed twice; gate each group once")
    return out


def gate_groups(model: nn.Module, groups: Sequence[Group | str], example, *,
                kind, init: float | None = None, seed: int = 0,
                keys: dict[str, str] | None = None) -> list[UnitGate]:
    """Gate units-core ``groups`` of ``model`` (see :func:`gate_layers`' ``groups``);
    ``keys``: ``{group name: gate key}`` where the key should not be the group's name (the
    transformers callback reports an FFN under its ``mlp`` module)."""
    if example is None:
        raise UsageError("gate_layers(groups=...) needs example=inputs (a tensor or a tuple "
                         "of the model's positional inputs) to trace the model")
    if getattr(model, CONTAINER, None) is not None:
        raise UsageError("model already has units-core gates; gate all groups in one call")
    if isinstance(model, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        raise UsageError(f"gate_layers(groups=...) keeps its gates in a submodule of the model, "
                         f"which a {type(model).__name__}'s forward would call; wrap the model "
                         "in an nn.Module whose forward calls it, and gate the wrapper")
    graph = build_graph(model, *_example_args(example))
    chosen = _resolve(graph, groups)
    plans = [gate_points(model, g) for g in chosen]  # validates before any change
    like = next(model.parameters(), torch.zeros(()))
    container = nn.ModuleDict()
    container.graph = graph
    gates = []
    for i, (group, points) in enumerate(zip(chosen, plans, strict=True)):
        key = (keys or {}).get(group.name, group.name)
        gate = UnitGate(group.size, dim=-1, key=key, init=init, kind=kind, seed=seed)
        gate.to(device=like.device, dtype=like.dtype)
        gate.unit_group, gate.group_name = group, group.name
        container[f"g{i}"] = gate
        _hook_points(model, gate, points)
        gates.append(gate)
    model.add_module(CONTAINER, container)
    model.register_forward_pre_hook(functools.partial(_enter, container))
    model.register_forward_hook(functools.partial(_leave, container))
    return gates


def _hook_points(model: nn.Module, gate: UnitGate, points) -> None:
    for name, sl, where in points:
        module = model.get_submodule(name)
        if where == "read":
            module.register_forward_pre_hook(functools.partial(_read_hook, gate, sl))
        else:
            module.register_forward_hook(functools.partial(_norm_hook, gate, sl))


def _rebind(model: nn.Module, container: nn.ModuleDict) -> None:
    """Trace ``model`` again and hook every gate to its group of the new graph: after
    ``resize_to_state_`` + ``load_state_dict`` of a shrunk checkpoint the gates and the
    model have the checkpoint's sizes, the old graph the fresh model's."""
    args, kwargs = container.graph.example
    with bypassing():
        graph = build_graph(model, *args, **kwargs)
    groups = []
    for gate in container.values():
        try:
            group = graph[getattr(gate, "group_name", gate.key)]
        except KeyError:
            group = _one_unit(model, gate.unit_group) if gate.width == 1 else None
        if group is None or group.size != gate.width:
            raise UsageError(
                f"gate {gate.key!r} has {gate.width} units but the model's group has "
                f"{'none' if group is None else group.size}; resize the model and its gates "
                "to the checkpoint (widthlab.units.resize_to_state_) and load it whole")
        groups.append((gate, group, gate_points(model, group)))
    _drop_point_hooks(model)
    container.graph = graph
    for gate, group, points in groups:
        gate.unit_group = group
        _hook_points(model, gate, points)


def _one_unit(model: nn.Module, old: Group) -> Group | None:
    """A group shrunk to one unit, which a new trace cannot see (a dimension of size 1 may
    broadcast, so it gets no unit): ``old``'s slices where the model now has exactly that
    unit (every index of the old slice was in the group, one index left). None otherwise."""
    slices = []
    for s in old.slices:
        t = getattr(model.get_submodule(s.module), s.name, None)
        if not torch.is_tensor(t) or t.ndim <= s.dim or t.shape[s.dim] != 1 or bool(
                (s.units < 0).any()):
            return None
        slices.append(Slice(s.module, s.name, s.dim, torch.zeros(1, dtype=torch.long),
                            s.is_param, s.per_index))
    return Group(old.name, old.kind, 1, 1, slices, mixers=old.mixers, owner=old.owner)


def _drop_point_hooks(model: nn.Module, hooks=(_read_hook, _norm_hook)) -> None:
    for m in model.modules():
        for table in (m._forward_pre_hooks, m._forward_hooks):
            for key, fn in list(table.items()):
                if isinstance(fn, functools.partial) and fn.func in hooks:
                    del table[key]


def _example_args(example) -> tuple:
    return example if isinstance(example, tuple) else (example,)


def unit_gates(model: nn.Module) -> list[UnitGate]:
    """The units-core gates of ``model`` (empty when it has none)."""
    container = getattr(model, CONTAINER, None)
    return list(container.values()) if container is not None else []


def remove_hooks(model: nn.Module) -> None:
    """Drop every units-core gate hook and the gate container from ``model``."""
    _drop_point_hooks(model, HOOKS)
    if getattr(model, CONTAINER, None) is not None:
        delattr(model, CONTAINER)
