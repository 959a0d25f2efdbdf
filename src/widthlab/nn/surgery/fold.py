"""Fold learned gates into the weights: :func:`fold_gates_` leaves a plain model.

Example::

    gate_layers(model, groups=["stream:model", "blocks.0.mlp.fc:out"], example=tokens)
    ...                                     # train with loss + price * size_penalty(model)
    fold_gates_(model, optimizer)           # shrink_, then gates into weights, hooks gone
    GPT(GPTConfig(n_embd=..., n_ffn=...)).load_state_dict(model.state_dict())
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.surgery._guard import unwatch
from widthlab.nn.surgery.gates import IN_ATTR, OUT_ATTR, UnitGate, _gate_input, _gate_output
from widthlab.nn.surgery.shrink import shrink_
from widthlab.nn.surgery.unit_gates import gate_points, remove_hooks, tied, unit_factor, unit_gates


def _along(f: Tensor, w: Tensor, dim: int) -> Tensor:
    shape = [1] * w.ndim
    shape[dim] = -1
    return f.to(w.dtype).view(shape)


def _scale_(module: nn.Module, attr: str, f: Tensor, dim: int) -> None:
    t = getattr(module, attr, None)
    if t is not None:
        t.mul_(_along(f, t, dim))


def _legacy(model: nn.Module) -> list[tuple[nn.Module, str, UnitGate]]:
    found = []
    for m in model.modules():
        for attr in (OUT_ATTR, IN_ATTR):
            gate = getattr(m, attr, None)
            if isinstance(gate, UnitGate):
                found.append((m, attr, gate))
    return found


def _check_foldable(model: nn.Module) -> None:
    for module, attr, gate in _legacy(model):
        if attr == IN_ATTR and gate.selects:
            raise UsageError(f"gate {gate.key!r} selects raw input features of its layer; a "
                             "plain layer cannot skip inputs, so it cannot be folded (gate "
                             "the layer's output units instead)")
        if getattr(module, "weight", None) is None:
            raise UsageError(f"gate {gate.key!r} sits on {type(module).__name__} without a "
                             "weight to fold it into")
    for gate in unit_gates(model):
        for name, _, where in gate_points(model, gate.unit_group):
            if where == "norm" and getattr(model.get_submodule(name), "weight", None) is None:
                raise UsageError(f"gate {gate.key!r}: norm {name!r} has no weight to fold "
                                 "the gate into")
            if where == "read" and tied(model, name):
                raise UsageError(f"gate {gate.key!r} is read by {name!r}, whose weight is tied "
                                 "to another module: folding would scale both; untie them "
                                 "first (or keep the gates)")


def _strip(model: nn.Module, optimizer) -> list[nn.Parameter]:
    gates = [g for _, _, g in _legacy(model)] + unit_gates(model)
    for m in model.modules():
        for hooks in (m._forward_pre_hooks, m._forward_hooks):
            for key, fn in list(hooks.items()):
                if fn in (_gate_output, _gate_input):
                    del hooks[key]
    for module, attr, _ in _legacy(model):
        delattr(module, attr)
    remove_hooks(model)
    params = [p for g in gates for p in g.parameters()]
    if optimizer is not None:
        ids = {id(p) for p in params}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        for p in params:
            optimizer.state.pop(p, None)
    return params


@torch.no_grad()
def fold_gates_(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                rule: str = "dead") -> dict[str, int]:
    """Remove dead units (:func:`shrink_`), multiply every gate into the weights and remove
    every gate, hook and gate attribute, in place: a plain model of the learned sizes.

    Each gate contributes its evaluation value (``relu(g)`` for the L1 kind, the
    deterministic ``clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)`` for hard
    concrete): an output gate into its layer's (or BatchNorm's) weight rows and bias, an
    input gate or a units-core read point into the reading layer's input columns, a stream
    gate at a LayerNorm into the norm's weight and bias. The model's evaluation output is
    unchanged, and its ``state_dict`` loads into the same class built at the new sizes
    (``ResNet(model.current_config())``; a GPT at the new ``n_embd`` / ``n_head`` /
    ``n_ffn``). The model's parameters leave :func:`shrink_`'s stale-optimizer check (its
    process-wide optimizer hook is removed once nothing is watched).

    Parameters
    ----------
    model : nn.Module
        Gated by :func:`~widthlab.nn.surgery.gate_layers` (names or groups).
    optimizer : torch.optim.Optimizer, optional
        Its state is cut by :func:`shrink_`, and the gate parameters are taken out of it.
        The folded weights changed scale, so a fresh optimizer is usually better.
    rule : str
        The :func:`shrink_` rule.

    Returns
    -------
    dict
        ``{gate key: units removed}`` as from :func:`shrink_`.

    Raises
    ------
    UsageError
        A gate that cannot be folded (one that selects raw inputs; a norm without weight),
        before anything is changed.
    """
    _check_foldable(model)
    with torch.enable_grad():
        removed = shrink_(model, optimizer, rule)
    for module, attr, gate in _legacy(model):
        s = gate.scale().detach()
        if attr == OUT_ATTR:
            _scale_(module, "weight", s, 0)
            _scale_(module, "bias", s, 0)
        else:
            _scale_(module, "weight", s, 1)
    for gate in unit_gates(model):
        s = gate.scale().detach()
        for name, sl, where in gate_points(model, gate.unit_group):
            module = model.get_submodule(name)
            f = unit_factor(s, sl)
            if where == "read":  # the weight's input dim (0 for a Hugging Face Conv1D)
                _scale_(module, "weight", f, sl.dim)
            else:
                _scale_(module, "weight", f, 0)
                _scale_(module, "bias", f, 0)
    params = list(model.parameters())  # the gates' included, before they go
    _strip(model, optimizer)
    unwatch(params)  # a plain model now: no process-wide optimizer check left
    return removed
