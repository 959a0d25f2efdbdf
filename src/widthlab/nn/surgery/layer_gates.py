"""Where the gates of named layers go and which units-core group each one removes.

``gate_layers(model, names, example=x)`` puts a gate after a layer (after the BatchNorm that
directly follows a conv) or before it (``inputs=``); which tensors a gated unit reaches comes
from the units core (:func:`widthlab.units.build_graph`, traced on ``example`` with every
gate bypassed), not from a walker of its own:

- an *output* gate on layer ``L`` owns the group whose units are ``L``'s output rows. It is
  placed only where a gate of exactly 0 equals removing the unit: the group holds nothing
  but ``L`` (and the BatchNorm the gate follows) and the input columns of layers linear in
  their input; and one forward of ``example`` with the gate at 0 must reach those columns as
  exact zeros (a sigmoid, ``sigmoid(0) != 0``, or anything else that maps 0 elsewhere is
  refused, naming the layer). A residual stream or attention heads are gated with
  ``groups=`` instead; units that reach the model's output have no group and are refused.
- an *input* gate on layer ``C`` owns the units of the layer feeding ``C`` when ``C`` is
  their only reader (one group, ``C``'s input columns its units in order); otherwise it
  *selects* ``C``'s raw input features: it keeps ``index`` (the positions still read), and a
  removed feature is a removed column of ``C`` (:func:`cut_columns`).

The example is kept on the model (never in its ``state_dict``): :func:`~widthlab.nn.surgery.
shrink_` traces the model again on it (:func:`trace_gated`), so the groups always match the
model's current sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.surgery.gates import IN_ATTR, OUT_ATTR, UnitGate
from widthlab.nn.surgery.unit_gates import bypassing
from widthlab.units import Group, UnitGraph, build_graph

LAYERS = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
EXAMPLE = "_widthlab_example"  # plain attribute of the model: no state_dict entry
NO_EXAMPLE = ("pass example=x[:2], a small input batch (a tensor or a tuple of the model's "
              "positional inputs), so widthlab can trace which layers read these units")


@dataclass
class GateSpec:
    """Where :func:`~widthlab.nn.surgery.gates.gate_layers` attaches a new gate."""

    key: str
    module: nn.Module
    attr: str
    n: int
    dim: int
    selects: bool
    like: Tensor
    layer: str  # the gated layer (per_weight: its weights over its units)


def _args(example) -> tuple:
    return example if isinstance(example, tuple) else (example,)


def store_example(model: nn.Module, example) -> None:
    """Keep ``example`` on ``model`` (detached) for :func:`trace_gated`."""
    if example is None:
        raise UsageError(f"gate_layers(model, names) needs example=: {NO_EXAMPLE}")
    args = tuple(a.detach() if torch.is_tensor(a) else a for a in _args(example))
    object.__setattr__(model, EXAMPLE, args)


def trace_gated(model: nn.Module) -> UnitGraph:
    """The units graph of ``model`` on its stored example, every gate bypassed (a selecting
    gate still selects, so its layer reads what it reads in training)."""
    args = _example(model)
    with bypassing():
        return build_graph(model, *args)


def _example(model: nn.Module) -> tuple:
    """The stored example, on the model's device (it may have moved since gate_layers)."""
    args = model.__dict__.get(EXAMPLE)
    if args is None:
        raise UsageError(f"this model's layer gates have no example to trace; gate it with "
                         f"gate_layers(..., example=...): {NO_EXAMPLE}")
    like = next(model.parameters(), None)
    if like is not None:
        args = tuple(a.to(like.device, like.dtype if a.is_floating_point() else a.dtype)
                     if torch.is_tensor(a) else a for a in args)
    return args


def layer(modules: dict[str, nn.Module], name: str) -> nn.Module:
    """The named ``nn.Linear`` / ``nn.Conv2d`` (``groups=1``), or a UsageError."""
    if name not in modules:
        raise UsageError(f"no submodule named {name!r}; names are those of "
                         "model.named_modules()")
    mod = modules[name]
    if not isinstance(mod, LAYERS) or (isinstance(mod, nn.Conv2d) and mod.groups != 1):
        raise UsageError(f"{name!r} is a {type(mod).__name__}; gates go on nn.Linear and "
                         "nn.Conv2d (groups=1) layers")
    return mod


def _find(graph: UnitGraph, module: str, dim: int) -> Group | None:
    for g in graph.groups:
        if any(s.module == module and s.name == "weight" and s.dim == dim for s in g.slices):
            return g
    return None


def _reads(modules: dict[str, nn.Module], group: Group) -> list:
    """The group's slices that are input columns of a Linear / Conv2d (groups=1)."""
    return [s for s in group.slices if s.name == "weight" and s.dim == 1
            and isinstance(modules.get(s.module), LAYERS)
            and getattr(modules[s.module], "groups", 1) == 1]


def _slice(group: Group, module: str, dim: int):
    return next(s for s in group.slices if s.module == module and s.name == "weight"
                and s.dim == dim)


def output_group(graph: UnitGraph, modules: dict[str, nn.Module], name: str) -> Group:
    """The group of layer ``name``'s output units, checked as an output gate's group."""
    group = _find(graph, name, 0)
    if group is None:
        raise UsageError(f"cannot follow the units of {name!r}: they reach the model's output "
                         "or an op that fixes their number (gate a hidden layer)")
    if group.kind in ("stream", "heads") or group.mixers:
        what = f"mixed by {', '.join(group.mixers)}" if group.mixers else \
            f"part of {'a residual stream' if group.kind == 'stream' else 'attention heads'}"
        raise UsageError(f"cannot gate the units of {name!r} alone: they are {what} (group "
                         f"{group.name!r}); gate that group: gate_layers(model, groups="
                         f"[{group.name!r}], example=...)")
    return group


def input_group(graph: UnitGraph, modules: dict[str, nn.Module], name: str) -> Group | None:
    """The group an input gate on ``name`` owns: the units of the layer feeding it when
    ``name`` is their only reader and its input columns are those units in order; None: the
    gate selects raw inputs."""
    group = _find(graph, name, 1)
    if group is None or group.kind in ("stream", "heads") or group.mixers:
        return None
    if _find(graph, name, 1) is not group or [s.module for s in _reads(modules, group)] != [name]:
        return None
    units = _slice(group, name, 1).units
    if not torch.equal(units, torch.arange(group.size)) or _find_producer(group) is None:
        return None
    return group


def _find_producer(group: Group):
    return next((s for s in group.slices if s.name == "weight" and s.dim == 0), None)


def _site(model: nn.Module, modules: dict[str, nn.Module], name: str) -> str:
    """The module an output gate of ``name`` follows: the BatchNorm reading exactly
    ``name``'s output, else ``name`` itself (one forward of the stored example)."""
    outputs, site = {}, [name]

    def after(_m, _a, out):
        outputs["x"] = out

    def before(m, args):
        if outputs.get("x") is not None and args and args[0] is outputs["x"]:
            site[0] = next(k for k, v in modules.items() if v is m)

    handles = [modules[name].register_forward_hook(after)]
    handles += [m.register_forward_pre_hook(before) for m in modules.values()
                if isinstance(m, NORMS)]
    try:
        _probe(model)
    finally:
        for h in handles:
            h.remove()
    return site[0]


def _probe(model: nn.Module) -> None:
    """One eval-mode forward of the stored example, gates bypassed, nothing changed."""
    args = _example(model)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), bypassing(), torch.random.fork_rng(devices=[]):
            model(*args)
    finally:
        for m, mode in modes:
            m.training = mode


def check_output_gate(model: nn.Module, modules: dict[str, nn.Module], name: str,
                      group: Group, site: str) -> None:
    """A gate of 0 after ``site`` equals removing ``name``'s units: nothing but ``name``,
    ``site`` and layers' input columns hold the units, and those columns read exact zeros."""
    reads = _reads(modules, group)
    for s in group.slices:
        if s.module not in (name, site) and not any(s is r for r in reads):
            m = modules.get(s.module)
            raise UsageError(f"cannot follow the units of {name!r} into module {s.module!r}, "
                             f"a {type(m).__name__} ({s.name}): a gate after {site!r} does "
                             "not remove them there (a gate follows units into Linear and "
                             "Conv2d (groups=1) inputs through ops that keep 0 at 0); gate "
                             f"the whole group: gate_layers(model, groups=[{group.name!r}], "
                             "example=...)")
    seen: dict[str, Tensor] = {}
    handles = [modules[site].register_forward_hook(lambda m, a, out: out * 0)]
    for s in reads:
        def grab(m, args, key=s.module):
            seen.setdefault(key, args[0].detach().movedim(1 if isinstance(m, nn.Conv2d)
                                                           else -1, 0))
        handles.append(modules[s.module].register_forward_pre_hook(grab))
    try:
        _probe(model)
    finally:
        for h in handles:
            h.remove()
    for s in reads:
        x = seen.get(s.module)
        if x is None or x.shape[0] != s.units.numel():
            continue
        if bool(x[(s.units >= 0).to(x.device)].ne(0).any()):
            raise UsageError(f"cannot follow the units of {name!r} into {s.module!r}: a gate "
                             f"of 0 after {site!r} does not reach {s.module!r} as 0 (an op in "
                             "between maps 0 elsewhere, e.g. a Sigmoid); gate another layer")


def calls(model: nn.Module, modules: dict[str, nn.Module], names: list[str]) -> None:
    """Every named layer runs exactly once in a forward of the stored example."""
    count = dict.fromkeys(names, 0)
    handles = [modules[n].register_forward_pre_hook(
        lambda m, a, n=n: count.__setitem__(n, count[n] + 1)) for n in set(names)]
    try:
        _probe(model)
    finally:
        for h in handles:
            h.remove()
    for n, c in count.items():
        if c != 1:
            raise UsageError(f"layer {n!r} is called {c} times in the forward; gate a layer "
                             "that is used exactly once")


def attached(model: nn.Module) -> list[tuple[UnitGate, str, str]]:
    """``(gate, layer name, "out" | "in")`` of every layer gate of ``model``."""
    found = []
    for mod in model.modules():
        for attr, side in ((OUT_ATTR, "out"), (IN_ATTR, "in")):
            gate = getattr(mod, attr, None)
            if isinstance(gate, UnitGate):
                found.append((gate, gate.key.removesuffix(":in"), side))
    return found


def _owned(model: nn.Module, graph: UnitGraph, modules) -> dict[int, str]:
    """``{id(group): gate key}`` of the groups the model's layer gates already own."""
    owned = {}
    for gate, name, side in attached(model):
        group = _find(graph, name, 0) if side == "out" else (
            None if gate.selects else input_group(graph, modules, name))
        if group is not None:
            owned[id(group)] = gate.key
    return owned


def plan_gates(model: nn.Module, outs: list[str], ins: list[str], example) -> list[GateSpec]:
    """Where the new output gates (on ``outs``) and input gates (on ``ins``) go, checked
    together with the gates the model already has; stores ``example`` (the old one is put
    back if a check fails)."""
    old = model.__dict__.get(EXAMPLE)
    try:
        return _plan(model, outs, ins, example)
    except BaseException:
        model.__dict__.pop(EXAMPLE, None)
        if old is not None:
            object.__setattr__(model, EXAMPLE, old)
        raise


def _plan(model: nn.Module, outs: list[str], ins: list[str], example) -> list[GateSpec]:
    modules = dict(model.named_modules())
    for name in outs + ins:
        layer(modules, name)
    store_example(model, example)
    calls(model, modules, outs + ins)
    graph = trace_gated(model)
    owned = _owned(model, graph, modules)
    have = {(name, side) for _, name, side in attached(model)}
    specs: list[GateSpec] = []
    for name in outs:
        mod = modules[name]
        group = output_group(graph, modules, name)
        if (name, "out") in have or id(group) in owned:
            raise UsageError(f"the output units of {name!r} already have a gate")
        site = _site(model, modules, name)
        check_output_gate(model, modules, name, group, site)
        conv = isinstance(mod, nn.Conv2d)
        specs.append(GateSpec(name, modules[site], OUT_ATTR, group.size, 1 if conv else -1,
                              False, mod.weight, name))
        owned[id(group)] = name
    for name in ins:
        mod = modules[name]
        if (name, "in") in have:
            raise UsageError(f"the input features of {name!r} already have a gate")
        group = input_group(graph, modules, name)
        if group is not None and id(group) in owned:
            continue  # these units already have a gate
        conv = isinstance(mod, nn.Conv2d)
        n = group.size if group is not None else mod.weight.shape[1]
        specs.append(GateSpec(f"{name}:in", mod, IN_ATTR, n, 1 if conv else -1,
                              group is None, mod.weight, name))
        if group is not None:
            owned[id(group)] = f"{name}:in"
    return specs


@dataclass
class LayerCut:
    """One layer gate at a shrink: its group in the fresh trace (None: it selects raw
    inputs of ``layer``) and the group's unit of each gate unit."""

    gate: UnitGate
    layer: str
    group: Group | None
    units: Tensor | None
    single: bool = False  # one unit left (a trace gives a size-1 dim no unit): kept


def plan_cuts(model: nn.Module) -> tuple[UnitGraph | None, list[LayerCut]]:
    """Every layer gate of ``model`` with its group in a fresh trace (UsageError where a
    gate's units no longer match one, or two gates own one group)."""
    found = attached(model)
    if not found:
        return None, []
    graph, modules = trace_gated(model), dict(model.named_modules())
    cuts, owners = [], {}
    for gate, name, side in found:
        if side == "in" and gate.selects:
            cuts.append(LayerCut(gate, name, None, None))
            continue
        if gate.width == 1:
            cuts.append(LayerCut(gate, name, None, None, single=True))
            continue
        group = output_group(graph, modules, name) if side == "out" else \
            input_group(graph, modules, name)
        units = None if group is None else _slice(group, name, 0 if side == "out" else 1).units
        if group is None or units.numel() != gate.width or bool((units < 0).any()):
            raise UsageError(f"gate {gate.key!r} no longer sits on one group of units of "
                             f"{name!r} ({gate.width} units); gate the model again from scratch")
        if id(group) in owners:
            raise UsageError(f"the units of group {group.name!r} have two gates "
                             f"({owners[id(group)]!r}, {gate.key!r}); keep one")
        owners[id(group)] = gate.key
        cuts.append(LayerCut(gate, name, group, units))
    return graph, cuts
