"""The transformer study's models: a GPT, optionally gated on its FFN neurons and heads, or cut
to given per-block widths (a static model of learned widths, trained from scratch).

Group names are :func:`widthlab.units.build_graph`'s: ``blocks.<i>.mlp.fc:out`` (block i's
FFN neurons) and ``blocks.<i>.attn:heads`` (its heads).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.nn.gpt import GPT, GPTConfig, build_gpt
from widthlab.nn.surgery import gate_layers
from widthlab.units import build_graph, remove_units


def ffn_group(block: int) -> str:
    return f"blocks.{block}.mlp.fc:out"


def heads_group(block: int) -> str:
    return f"blocks.{block}.attn:heads"


def unit_params(cfg: GPTConfig, group: str) -> int:
    """Parameters one unit of ``group`` carries: an FFN neuron its fc row and proj column
    (and fc bias), a head its q, k, v rows and its output-projection columns."""
    if group.endswith(":out"):
        return 2 * cfg.n_embd + int(cfg.bias)
    head = cfg.n_embd // cfg.n_head
    return 4 * head * cfg.n_embd + 3 * head * int(cfg.bias)


def _example(cfg: GPTConfig) -> torch.Tensor:
    return torch.zeros(1, min(cfg.block_size, 8), dtype=torch.long)  # (1, t)


def gpt_model(cfg: dict, seed: int, *, gate: str | None = None, heads: bool = True,
              widths: Mapping[str, int] | None = None) -> GPT:
    """A GPT of ``GPTConfig(**cfg)`` built from ``seed``.

    ``gate``: ``"l1"`` or ``"hard_concrete"`` gates on every block's FFN neurons (and heads
    when ``heads``), each priced per parameter its unit carries (``price_scale``).
    ``widths``: group name -> units to keep (the first ones; a fresh model cut this way is a
    model built at those widths, as the init does not depend on the width).
    """
    c = GPTConfig(**cfg)
    model = build_gpt(c, seed)
    if widths:
        graph = build_graph(model, _example(c))
        names = {g.name: g for g in graph.groups}
        drop = {}
        for name, k in widths.items():
            if name not in names or not 1 <= int(k) <= names[name].size:
                raise UsageError(f"cannot cut group {name!r} to {k} units; groups: "
                                 f"{', '.join(sorted(names))}")
            if int(k) < names[name].size:
                drop[names[name]] = list(range(int(k), names[name].size))
        if drop:
            remove_units(model, graph, drop)
    if gate is not None:
        groups = [ffn_group(b) for b in range(c.n_layer)]
        groups += [heads_group(b) for b in range(c.n_layer)] if heads else []
        for g in gate_layers(model, groups=groups, example=_example(c), kind=gate, seed=seed):
            g.price_scale = float(unit_params(c, g.key))
    return model


def current_widths(model: nn.Module) -> dict[str, int]:
    """Every block's FFN width and head count of a (cut or shrunk) GPT."""
    out = {}
    for b, block in enumerate(model.blocks):
        out[ffn_group(b)] = int(block.mlp.fc.out_features)
        out[heads_group(b)] = int(block.attn.n_head)
    return out


__all__ = ["current_widths", "ffn_group", "gpt_model", "heads_group", "unit_params"]
