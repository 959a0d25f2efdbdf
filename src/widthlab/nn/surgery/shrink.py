"""Remove dead units from a gated user model for real, optimizer state included.

:func:`shrink_` finds every gate's units (:mod:`~widthlab.nn.surgery.graph`), asks the removal
rule (:mod:`~widthlab.nn.surgery.rules`) which are dead, and cuts them out of the producing
layer (weight rows, bias), the BatchNorms on the way (affine parameters and running
statistics), every consumer (a Linear's input columns, a block of them after a ``Flatten``; a
Conv2d's input channels), the gates (``g``, Smallify statistics, selected input positions) and
the optimizer's per-parameter state (Adam's / AdamW's ``exp_avg``, ``exp_avg_sq``,
``max_exp_avg_sq``, Adamax's ``exp_inf``, SGD's ``momentum_buffer``, RMSprop's
``square_avg``, ``grad_avg``; ``step`` is kept). Parameters stay the same objects, so the
optimizer keeps working and training continues as if the dead units had been masked.

Example::

    gate_layers(model, ["fc1", "fc2"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ...                                   # train with loss + price * size_penalty(model)
    removed = shrink_(model, opt)         # {"fc1": 113, "fc2": 40}
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.surgery._guard import check_optimizer, record, undoing, watch_unsliced
from widthlab.nn.surgery.gates import IN_ATTR, UnitGate
from widthlab.nn.surgery.graph import Group, plan_groups
from widthlab.nn.surgery.rules import DeadRule, SignFlipRule, get_rule
from widthlab.nn.surgery.unit_gates import CONTAINER, bypassing, unit_gates
from widthlab.units import remove_units
from widthlab.units.state import check_state, slice_param_, take

SIZE_ATTRS = {nn.Linear: ("out_features", "in_features"),
              nn.Conv2d: ("out_channels", "in_channels")}


@torch.no_grad()
def _keep_(owner: nn.Module, attr: str, dim: int, index: Tensor,
           optimizer: torch.optim.Optimizer | None) -> None:
    """Keep ``index`` along ``dim`` of ``owner.<attr>`` (a Parameter keeps its identity; its
    gradient and optimizer state are sliced alike)."""
    t = getattr(owner, attr, None)
    if t is None:
        return
    index = index.to(t.device)
    record(owner, attr, optimizer)  # put back if the shrink fails later
    if not isinstance(t, nn.Parameter):
        setattr(owner, attr, take(t, dim, index))
        return
    check_state(t, optimizer)  # before this tensor is sliced
    slice_param_(t, dim, index, optimizer)


def _cut_layer(layer: nn.Module, dim: int, index: Tensor, optimizer) -> None:
    _keep_(layer, "weight", dim, index, optimizer)
    if dim == 0:
        _keep_(layer, "bias", 0, index, optimizer)
    attr = SIZE_ATTRS[nn.Conv2d if isinstance(layer, nn.Conv2d) else nn.Linear][min(dim, 1)]
    setattr(layer, attr, int(layer.weight.shape[dim]))


def _cut_norm(norm: nn.Module, index: Tensor, optimizer) -> None:
    for attr in ("weight", "bias", "running_mean", "running_var"):
        _keep_(norm, attr, 0, index, optimizer)
    norm.num_features = int(index.numel())


def _cut_gate(gate: UnitGate, index: Tensor, optimizer) -> None:
    for attr in ("gate", "flip_mean", "flip_var", "index", "unit_ids"):
        _keep_(gate, attr, 0, index, optimizer)


def _expand(units: Tensor, block: int) -> Tensor:
    """Feature positions of ``units`` when each unit spans ``block`` consecutive features."""
    return (units[:, None] * block + torch.arange(block, device=units.device)).flatten()


def _cut_consumer(layer: nn.Module, n_units: int, keep: Tensor, optimizer) -> None:
    """Remove the input features of ``layer`` that the removed units (not in ``keep``) fed."""
    in_gate = getattr(layer, IN_ATTR, None)
    selecting = isinstance(in_gate, UnitGate) and in_gate.selects
    size = in_gate.n_in if selecting else layer.weight.shape[1]
    if size % n_units:
        raise UsageError(f"layer of {size} input features cannot be split into {n_units} "
                         "units; shrinking follows Flatten only from conv channels")
    block = size // n_units
    kept_pos = _expand(keep.to(layer.weight.device), block)  # (k * block,)
    if not selecting:
        _cut_layer(layer, 1, kept_pos, optimizer)
        return
    new_pos = torch.full((size,), -1, dtype=torch.long, device=kept_pos.device)
    new_pos[kept_pos] = torch.arange(len(kept_pos), device=kept_pos.device)
    mapped = new_pos[in_gate.index]  # (entries,), -1 where the input position is gone
    entries = (mapped >= 0).nonzero().flatten()
    _cut_layer(layer, 1, entries, optimizer)
    _cut_gate(in_gate, entries, optimizer)
    record(in_gate, "index", optimizer)
    in_gate.index = mapped[entries]
    in_gate.n_in = int(len(kept_pos))


def _apply(modules: dict[str, nn.Module], group: Group, keep: Tensor, optimizer) -> None:
    gate = group.gate
    n_units = gate.width
    _cut_gate(gate, keep, optimizer)
    if group.producer is None:  # a selecting input gate: only its layer's columns go
        _cut_layer(modules[group.consumers[0].name], 1, keep, optimizer)
        return
    _cut_layer(modules[group.producer], 0, keep, optimizer)
    for name in group.norms:
        _cut_norm(modules[name], keep, optimizer)
    for consumer in group.consumers:
        _cut_consumer(modules[consumer.name], n_units, keep, optimizer)


def shrink_(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
            rule: str | DeadRule | SignFlipRule = "dead") -> dict[str, int]:
    """Remove every gated unit the rule calls dead, from its layer and all its consumers.

    Parameters
    ----------
    model : nn.Module
        A model gated by :func:`~widthlab.nn.surgery.gates.gate_layers`.
    optimizer : torch.optim.Optimizer, optional
        The optimizer training ``model``: its state of every sliced parameter is sliced in
        place (``step`` kept). Element-wise optimizers only (SGD, Adam, AdamW, Adamax, NAdam,
        RAdam, RMSprop, Adagrad, ASGD, Rprop); LBFGS, Adafactor and unknown optimizers are
        refused before anything is cut. Pass None only when no optimizer holds state of the
        model (or create a new one after shrinking): an optimizer left out that still holds
        state of a shrunk parameter raises a :class:`UsageError` at its next ``step()``.
    rule : {"dead", "smallify"} or a rule object
        See :mod:`widthlab.nn.surgery.rules`.

    Returns
    -------
    dict
        ``{gate key: number of units removed}``.

    Raises
    ------
    UsageError
        A gate whose units reach something that cannot be followed (named in the message),
        a rule that cannot read a gate's kind, or an optimizer whose state cannot be sliced.
        The model and the optimizer are then left exactly as they were.
    """
    rule = get_rule(rule)
    check_optimizer(model, optimizer)  # before anything is cut
    groups = plan_groups(model)
    for gate in [g.gate for g in groups] + unit_gates(model):  # a rule that cannot read
        rule.dead(gate)  # some gate fails before any change
    modules = dict(model.named_modules())
    shapes = {p: p.shape for p in model.parameters()}
    with undoing(model) as undo:  # a refusal half-way puts every cut back
        removed = _shrink(groups, modules, rule, optimizer, undo)
        removed.update(shrink_units(model, rule, optimizer, undo))  # atomic: last
    if optimizer is None:  # a stale optimizer fails clearly at its next step()
        watch_unsliced([p for p in model.parameters() if p.shape != shapes[p]])
    return removed


def _closed_one(gate: UnitGate, dead: Tensor, undo) -> Tensor:
    """All units dead: unit 0 stays, switched off (gate exactly 0); the new dead mask."""
    undo.save(gate, "gate", clone=True)
    with torch.no_grad():
        gate.gate[0] = gate.kind.closed(gate.gate[0])
    dead = dead.clone()
    dead[0] = False
    return dead


def shrink_units(model: nn.Module, rule, optimizer, undo) -> dict[str, int]:
    """Remove the dead units of every units-core gated group in ONE
    :func:`~widthlab.units.remove_units` call, then cut the gates alike."""
    gates = unit_gates(model)
    deads = {}
    for gate in gates:
        dead = rule.dead(gate)
        if bool(dead.all()):
            dead = _closed_one(gate, dead, undo)
        deads[gate.key] = dead
    request = {g.unit_group: deads[g.key].nonzero().flatten().tolist() for g in gates
               if bool(deads[g.key].any())}
    kept = _remove_or_keep_coupled(model, request, optimizer)
    for gate in gates:
        if gate.unit_group in kept:
            deads[gate.key] = torch.zeros_like(deads[gate.key])
    for gate in gates:
        if bool(deads[gate.key].any()):
            _cut_gate(gate, (~deads[gate.key]).nonzero().flatten(), optimizer)
    return {g.key: int(deads[g.key].sum()) for g in gates}


def _remove_or_keep_coupled(model: nn.Module, request: dict, optimizer) -> set:
    """One :func:`remove_units` call; if the model refuses it and streams or heads are in
    it (code that reads the head width off the stream needs matching counts), those stay
    masked (their gates are 0: same outputs) with a warning, the rest is cut. Returns the
    groups left masked."""
    graph = getattr(model, CONTAINER, None)
    if not request:
        return set()
    with bypassing():  # remove_units' check runs the cut model without the gates
        try:
            remove_units(model, graph.graph, request, optimizer=optimizer)
            return set()
        except UsageError as err:
            coupled = {g for g in request if g.kind in ("stream", "heads")}
            if not coupled:
                raise
            warnings.warn(f"shrink_ left the dead units of {sorted(g.name for g in coupled)} "
                          f"masked (gate 0, outputs unchanged): {err}", stacklevel=4)
            rest = {g: d for g, d in request.items() if g not in coupled}
            if rest:
                remove_units(model, graph.graph, rest, optimizer=optimizer)
            return coupled


def _shrink(groups: list[Group], modules: dict[str, nn.Module], rule, optimizer,
            undo) -> dict[str, int]:
    removed, routed = {}, []
    for group in groups:
        dead = rule.dead(group.gate)  # asked now: an earlier group may have cut this gate
        removed[group.gate.key] = int(dead.sum())
        if dead.numel() == 0:  # an earlier group took every unit this gate had left
            continue
        if bool(dead.all()):  # a layer keeps one unit, switched off (gate exactly 0)
            dead = _closed_one(group.gate, dead, undo)
            removed[group.gate.key] -= 1
        if bool(dead.any()) and _via_units(group, modules):
            routed.append((group.gate, dead))
        elif bool(dead.any()):
            _apply(modules, group, (~dead).nonzero().flatten(), optimizer)
    if routed:  # name-gated layers traced at gate_layers(example=...): ONE remove_units call
        request = {g.unit_group: d.nonzero().flatten().tolist() for g, d in routed}
        with bypassing():
            remove_units(modules[""], routed[0][0].unit_graph, request, optimizer=optimizer)
        for gate, dead in routed:
            _cut_gate(gate, (~dead).nonzero().flatten(), optimizer)
    return removed


def _via_units(group: Group, modules: dict[str, nn.Module]) -> bool:
    """The gate is tied to a units-core group and no consumer selects raw inputs (whose
    positions only the layer-slicing path remaps)."""
    if getattr(group.gate, "unit_group", None) is None:
        return False
    for c in group.consumers:
        gate = getattr(modules[c.name], IN_ATTR, None)
        if isinstance(gate, UnitGate) and gate.selects:
            return False
    return True
