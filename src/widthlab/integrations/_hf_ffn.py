"""The FFN units of a Hugging Face model as units-core groups (plain torch, no transformers
import).

The transformers callback gates the FFNs it is given (``ffn="all"`` or ``mlp`` module names)
with the gate family's group gating (:func:`~widthlab.nn.surgery.unit_gates.gate_groups`, what
``gate_layers(model, groups=..., example=...)`` runs): :func:`ffn_groups` finds, for each FFN,
the units-core group its down projection reads (SwiGLU's ``gate_proj``/``up_proj`` rows and
``down_proj`` columns coupled; GPT-2's transposed ``Conv1D``), and the gate is keyed by the
FFN's module name. Its gate sits on the down projection's input (a gate of 0 is the unit
removed); ``shrink_`` removes dead units with :func:`~widthlab.units.remove_units` (optimizer
state kept) and ``fold_gates_`` multiplies the gates into the down projections.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.units import build_graph

DOWN = ("down_proj", "c_proj", "fc2", "dense_4h_to_h")  # Llama-like, GPT-2, OPT, GPT-NeoX


def ffn_modules(model: nn.Module, names: Sequence[str] | str) -> dict[str, str]:
    """``{mlp name: down projection name}`` of the FFNs ``names`` (``"all"``: every module
    whose name ends in ``mlp`` and that has a down projection)."""
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
        down = next((d for d in DOWN if hasattr(m, d)), None) if m is not None else None
        if down is None:
            raise UsageError(f"{name!r} is not an FFN module with a down projection "
                             f"({', '.join(DOWN)}); names are those of model.named_modules()")
        out[name] = f"{name}.{down}" if name else down
    return out


def ffn_groups(model: nn.Module, names: Sequence[str] | str, example: Tensor) -> dict[str, str]:
    """``{units-core group name: mlp name}``: the group each FFN's down projection reads
    (its weight's input dimension: 1 for ``nn.Linear``, 0 for GPT-2's ``Conv1D``)."""
    downs = ffn_modules(model, names)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            graph = build_graph(model, example)
    finally:
        model.train(was)
    out = {}
    for mlp, down in downs.items():
        dim = 0 if hasattr(model.get_submodule(down), "nf") else 1
        group = next((g for g in graph.groups if any(
            s.module == down and s.name == "weight" and s.dim == dim for s in g.slices)), None)
        if group is None or group.kind == "stream":
            raise UsageError(f"the units core finds no FFN group read by {down!r} "
                             f"(groups: {[g.name for g in graph.groups]})")
        out[group.name] = mlp
    return out
