"""Attention heads (and FFN units) of a Hugging Face model as units-core groups (plain torch).

The transformers callback's ``heads=`` option traces the model once with
:func:`widthlab.units.build_graph` on an example batch's ``input_ids`` and gates the chosen
groups with ``gate_layers(model, groups=[...], example=input_ids)``: a head group's gate sits on
the input columns of ``o_proj`` (a gate of 0 is the head removed), and ``shrink_`` removes
dead heads through :func:`~widthlab.units.remove_units`, which also cuts ``q/k/v_proj`` rows and
updates ``config.num_attention_heads`` / ``num_key_value_heads`` when all layers agree. One
unit of a head group is one key/value head with the query heads that share it (GQA); without
GQA a unit is one head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.units import build_graph


def _chosen(name: str, which) -> bool:
    if which is True or which == "all":
        return True
    module = name.split(":")[0]
    return any(module == w or module.startswith(w + ".") for w in which)


def select_groups(model: nn.Module, example: Tensor, heads, ffn) -> list[str]:
    """Names of the units-core groups of ``model`` to gate: its ``"heads"`` groups chosen by
    ``heads`` (True / "all" / attention module names) and its ``"ffn"`` groups chosen by
    ``ffn`` ("all" / FFN module names / falsy for none)."""
    for what, value in (("heads", heads), ("ffn", ffn)):
        if not (value in (True, False, None, "all") or (
                isinstance(value, Sequence) and not isinstance(value, str)
                and all(isinstance(v, str) for v in value))):
            raise UsageError(f"{what}= must be True/'all' or a list of module names, "
                             f"got {value!r}")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            graph = build_graph(model, example)
    finally:
        model.train(was)
    out = []
    for group in graph.groups:
        which = {"heads": heads, "ffn": ffn}.get(group.kind)
        if which and _chosen(group.name, which):
            out.append(group.name)
    named = [w for w in (heads, ffn) if isinstance(w, (list, tuple))]
    for names in named:
        for w in names:
            if not any(_chosen(g, [w]) for g in out):
                raise UsageError(f"{w!r} has no attention-head or FFN group in the units core "
                                 f"(groups: {[g.name for g in graph.groups]}); use a module "
                                 "name of model.named_modules()")
    if heads and not any(g.endswith(":heads") for g in out):
        raise UsageError("the units core finds no attention heads in this model "
                         f"(groups: {[g.name for g in graph.groups]})")
    return out


def head_counts(model: nn.Module) -> dict[str, int]:
    """``{attention module: query heads}`` of every attention module with ``q_proj`` and
    ``head_dim`` (Llama, Mistral, Qwen...)."""
    out = {}
    for name, m in model.named_modules():
        q, d = getattr(m, "q_proj", None), getattr(m, "head_dim", None)
        if isinstance(q, nn.Linear) and isinstance(d, int) and d > 0:
            out[name] = q.out_features // d
    return out
