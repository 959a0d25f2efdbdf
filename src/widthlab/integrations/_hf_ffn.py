"""FFN gates on Hugging Face models through the units core (plain torch, no transformers import).

``gate_layers`` traces with ``torch.fx``, which a Hugging Face model does not pass, and its
shrink cannot follow SwiGLU's product. Until the gate family takes units-core groups
(``gate_layers(model, groups=...)``), the transformers callback gates FFN units here: a
:class:`~widthlab.nn.surgery.UnitGate` on the input of each FFN's down projection (a forward
pre-hook), and :func:`shrink_ffn_` removes the dead units of each gate's units-core group
(``gate_proj``/``up_proj`` rows, ``down_proj`` columns, the gate itself, their optimizer state)
with :func:`~widthlab.units.remove_units`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.nn.surgery import UnitGate, model_gates
from widthlab.nn.surgery.gates import IN_ATTR
from widthlab.units import build_graph, remove_units

DOWN = ("down_proj", "c_proj", "fc2", "dense_4h_to_h")  # Llama-like, GPT-2, OPT, GPT-NeoX
GATE_BUFFERS = ("flip_mean", "flip_var", "unit_ids")


def _gate_input(module: nn.Module, args: tuple) -> tuple:
    return (getattr(module, IN_ATTR)(args[0]), *args[1:])


def ffn_modules(model: nn.Module, names: Sequence[str] | str) -> dict[str, nn.Module]:
    """``{mlp name: down projection}`` of the FFNs ``names`` (``"all"``: every module whose
    name ends in ``mlp`` and that has a down projection)."""
    modules = dict(model.named_modules())
    if names == "all":
        names = [n for n, m in modules.items()
                 if n.split(".")[-1] == "mlp" and any(hasattr(m, d) for d in DOWN)]
        if not names:
            raise UsageError("the model has no '*.mlp' module with a down projection "
                             f"({', '.join(DOWN)}); name the FFN modules: ffn=[...]")
    out = {}
    for name in names:
        m = modules.get(name)
        down = next((getattr(m, d) for d in DOWN if hasattr(m, d)), None) if m else None
        if down is None:
            raise UsageError(f"{name!r} is not an FFN module with a down projection "
                             f"({', '.join(DOWN)}); names are those of model.named_modules()")
        out[name] = down
    return out


def _n_in(down: nn.Module) -> int:
    if hasattr(down, "nf"):  # transformers' Conv1D: weight (in, out)
        return int(down.weight.shape[0])
    return int(down.in_features)


def gate_ffn(model: nn.Module, names, *, kind="l1", seed: int = 0,
             init: float | None = None) -> dict[str, tuple]:
    """Gate the FFN units of ``names`` in place; ``{key: (gate, down, hook handle)}``."""
    plan = ffn_modules(model, names)
    for name, down in plan.items():
        if hasattr(down, IN_ATTR):
            raise UsageError(f"the FFN {name!r} is already gated")
    out = {}
    for name, down in plan.items():
        w = down.weight
        gate = UnitGate(_n_in(down), dim=-1, key=name, kind=kind, seed=seed, init=init)
        gate.to(device=w.device, dtype=w.dtype)
        down.add_module(IN_ATTR, gate)
        out[name] = (gate, down, down.register_forward_pre_hook(_gate_input))
    return out


def _group_of(graph, gate_name: str):
    for group in graph.groups:
        if any(s.module == gate_name and s.name == "gate" for s in group.slices):
            return group
    raise UsageError(f"the units core finds no group for the gate {gate_name!r}")


@torch.no_grad()
def shrink_ffn_(model: nn.Module, gates: Mapping[str, tuple], optimizer, rule,
                example: Mapping) -> dict[str, int]:
    """Remove every FFN unit whose gate ``rule`` calls dead; ``{key: units removed}``."""
    names = {id(m): n for n, m in model.named_modules()}
    dead = {k: rule.dead(g) for k, (g, _, _) in gates.items()}
    if not any(bool(d.any()) for d in dead.values()):
        return {k: 0 for k in gates}
    was = model.training
    model.eval()  # the gate's deterministic path; no noise drawn, no statistics updated
    try:
        graph = build_graph(model, **example)
    finally:
        model.train(was)
    removed = {}
    for key, (gate, _, _) in gates.items():
        d = dead[key].clone()
        if bool(d.all()):  # keep one unit, switched off
            gate.gate[0] = gate.kind.closed(gate.gate[0])
            d[0] = False
        removed[key] = int(d.sum())
        if not removed[key]:
            continue
        keep = (~d).nonzero().flatten()
        group = _group_of(graph, names[id(gate)])
        remove_units(model, graph, group, d.nonzero().flatten().tolist(), optimizer=optimizer)
        for buf in GATE_BUFFERS:
            t = getattr(gate, buf, None)
            if t is not None and t.shape[0] != gate.gate.shape[0]:
                gate._buffers[buf] = t.index_select(0, keep.to(t.device))
    return removed


@torch.no_grad()
def fold_gates_(model: nn.Module, gates: Mapping[str, tuple]) -> None:
    """Multiply each gate's evaluation value into its down projection's input weights and
    remove the gate and its hook: ``model`` becomes a plain model computing the same
    evaluation outputs."""
    for gate, down, handle in gates.values():
        s = gate.scale().detach()
        if hasattr(down, "nf"):
            down.weight.mul_(s.view(-1, 1))
        else:
            down.weight.mul_(s.view(1, -1))
        handle.remove()
        del down._modules[IN_ATTR]
    if model_gates(model):
        raise UsageError("the model still has gates that were not put there by this callback")
