"""Remove dead units from a gated user model for real, optimizer state included.

:func:`shrink_` traces the model again (:func:`~widthlab.nn.surgery.layer_gates.plan_cuts`:
each gate's units-core group), asks the removal rule (:mod:`~widthlab.nn.surgery.rules`) which
units are dead, and removes them with ONE :func:`~widthlab.units.remove_units` call: from the
producing layer (weight rows, bias), the BatchNorms on the way (affine parameters and running
statistics), every consumer (a Linear's input columns, a block of them after a ``Flatten``; a
Conv2d's input channels); then from the gates (``g``, Smallify statistics) and the layers
whose gates select raw inputs (their columns and selected positions, :func:`_select_cut`),
all through :mod:`widthlab.units.state`'s slicing, with the optimizer's per-parameter state
(Adam's / AdamW's ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, Adamax's ``exp_inf``,
SGD's ``momentum_buffer``, RMSprop's ``square_avg``, ``grad_avg``; ``step`` is kept).
Parameters stay the same objects, so the
optimizer keeps working and training continues as if the dead units had been masked.

Example::

    gate_layers(model, ["fc1", "fc2"], example=x[:2])
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
from widthlab.nn.surgery.gates import UnitGate
from widthlab.nn.surgery.layer_gates import LayerCut, plan_cuts
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


def _cut_gate(gate: UnitGate, index: Tensor, optimizer) -> None:
    for attr in ("gate", "flip_mean", "flip_var", "index", "unit_ids"):
        _keep_(gate, attr, 0, index, optimizer)


def _expand(units: Tensor, block: int) -> Tensor:
    """Feature positions of ``units`` when each unit spans ``block`` consecutive features."""
    return (units[:, None] * block + torch.arange(block, device=units.device)).flatten()


def _select_cut(layer: nn.Module, gate: UnitGate, sl, n_units: int, drop: Tensor,
                optimizer) -> None:
    """A selecting input gate reads units that lose ``drop``: cut the entries those units
    fed (the layer's columns, the gate's entries) and renumber the kept input positions
    (each unit spans ``n_in // n_units`` consecutive positions, checked against the trace)."""
    size = gate.n_in
    block = size // n_units if size % n_units == 0 else 0
    index = gate.index.cpu()
    if not block or not torch.equal(sl.units, index // block):
        raise UsageError(f"the inputs {gate.key!r} selects do not lie in blocks of "
                         f"{n_units} units of the layer feeding it; shrinking follows such "
                         "inputs only through a Flatten of conv channels")
    kept = torch.nonzero(~torch.isin(torch.arange(n_units), drop)).flatten()
    kept_pos = _expand(kept, block)
    new_pos = torch.full((size,), -1, dtype=torch.long)
    new_pos[kept_pos] = torch.arange(len(kept_pos))
    mapped = new_pos[index]  # (entries,), -1 where the input position is gone
    entries = (mapped >= 0).nonzero().flatten()
    _cut_layer(layer, 1, entries, optimizer)
    _cut_gate(gate, entries, optimizer)
    record(gate, "index", optimizer)
    gate.index = mapped[entries].to(gate.gate.device)
    gate.n_in = int(len(kept_pos))


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
    graph, cuts = plan_cuts(model)
    for gate in [c.gate for c in cuts] + unit_gates(model):  # a rule that cannot read
        rule.dead(gate)  # some gate fails before any change
    shapes = {p: p.shape for p in model.parameters()}
    with undoing(model) as undo:  # a refusal half-way puts every cut back
        removed = _shrink(model, graph, cuts, rule, optimizer, undo)
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


def _shrink(model: nn.Module, graph, cuts: list[LayerCut], rule, optimizer,
            undo) -> dict[str, int]:
    """The layer gates: ONE remove_units call for every gate owning a group, then the gates
    selecting raw inputs (their own dead entries asked after the groups' cut)."""
    removed, request, keeps = {}, {}, {}
    for c in (c for c in cuts if c.group is not None):
        dead = rule.dead(c.gate)
        if bool(dead.all()):  # a layer keeps one unit, switched off (gate exactly 0)
            dead = _closed_one(c.gate, dead, undo)
        removed[c.gate.key] = int(dead.sum())
        if bool(dead.any()):
            request[c.group] = c.units[dead.cpu()].tolist()
            keeps[c.gate.key] = (c.gate, (~dead).nonzero().flatten())
    modules = dict(model.named_modules())
    for c in (c for c in cuts if c.single):  # its one unit stays (switched off if dead)
        removed[c.gate.key] = 0
        if bool(rule.dead(c.gate).all()):
            _closed_one(c.gate, rule.dead(c.gate), undo)
    selecting = [c for c in cuts if c.group is None and not c.single]
    if request:
        for c in selecting:
            _follow(modules[c.layer], c, request, optimizer)
        for group in request:  # put back by the undo if a later step refuses
            for sl in group.slices:
                record(model.get_submodule(sl.module), sl.name, optimizer)
        with bypassing():
            remove_units(model, graph, request, optimizer=optimizer)
        for gate, keep in keeps.values():
            _cut_gate(gate, keep, optimizer)
    for c in selecting:
        dead = rule.dead(c.gate)  # asked now: a group above may have cut this gate
        if dead.numel() and bool(dead.all()):
            dead = _closed_one(c.gate, dead, undo)
        removed[c.gate.key] = int(dead.sum())
        if bool(dead.any()):
            keep = (~dead).nonzero().flatten()
            _cut_gate(c.gate, keep, optimizer)
            _cut_layer(modules[c.layer], 1, keep, optimizer)
    return removed


def _follow(layer: nn.Module, cut: LayerCut, request: dict, optimizer) -> None:
    """A selecting gate whose inputs are units of a group being cut: its entries are cut
    here (the slice leaves the group, so remove_units does not cut those columns again)."""
    for group, drop in request.items():
        sl = next((s for s in group.slices if s.module == cut.layer and s.name == "weight"
                   and s.dim == 1), None)
        if sl is not None:
            group.slices.remove(sl)
            _select_cut(layer, cut.gate, sl, group.size, torch.tensor(drop), optimizer)
