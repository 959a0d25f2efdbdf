"""Widths of a whole network under one budget: :func:`cut_network` (generalises
:func:`~widthlab.frontier.cut_layers` from Linear layers under one accuracy tolerance to every
group of :mod:`widthlab.units` under a loss, parameter or multiply-add budget).

One pass over the calibration data (forward and backward) gives every selected group's
consumer inputs and the gradients of the loss in the consumers' outputs. Each group's ``obs``
frontier (:func:`~widthlab.frontier.group.group_frontier`) gives the increase ``dE`` of its
consumers' mean squared output error at every removal; the loss it costs is predicted as
``h/2 * dE`` scaled to one loss term (:func:`~widthlab.frontier.budget.loss_scale`: ``h`` is the
mean squared per-term gradient in the consumer's outputs, the empirical Fisher's mean
diagonal; a convolution's rows are its output positions, so the scale counts positions per
image). :func:`~widthlab.frontier.budget.allocate` then removes the cheapest next unit across
groups (per parameter or multiply-add saved for those targets), and the chosen widths are cut
group after group with :func:`~widthlab.frontier.models.cut_groups` (each group refitted on the
activations the earlier cuts left).

Groups read through a unit-mixing norm (residual streams under LayerNorm) have no ``obs``
costs and are not allocated (:func:`network_groups` leaves them out).

Example::

    graph = build_graph(gpt, x[:2])
    plan = cut_network(gpt, graph, calib, target="params", amount=0.3)
    plan.allocation.widths        # {"blocks.0.attn:heads": 4, "blocks.0.mlp.fc:out": 97, ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier.budget import Allocation, allocate
from widthlab.frontier.group import group_frontier
from widthlab.frontier.models import (
    Data,
    ModelFrontier,
    _consumers,
    collect,
    consumer_sites,
    cross_entropy,
    cut_groups,
    find_group,
)
from widthlab.units import Group, UnitGraph

__all__ = ["NetworkCut", "cut_network", "network_groups", "unit_costs"]


@dataclass
class NetworkCut:
    """``allocation``: the widths and the predicted (saving, loss increase) curve; ``scale``:
    each group's loss per unit of output error; ``saving``: parameters (or multiply-adds) per
    unit; ``total``: the selected groups' total; ``frontiers``: the cuts applied (empty when
    ``apply=False``)."""

    allocation: Allocation
    scale: dict[str, float]
    saving: dict[str, float]
    total: float
    frontiers: list[ModelFrontier] = field(default_factory=list)


def network_groups(model: nn.Module, graph: UnitGraph, kinds: Sequence[str] | None = None
                   ) -> list[Group]:
    """The groups :func:`cut_network` can allocate: no unit-mixing norm, at least one Linear
    or Conv2d consumer, more than one unit; optionally only ``kinds`` (``"ffn"``, ``"heads"``,
    ``"channels"``, ``"stream"``)."""
    out = []
    for g in graph.groups:
        if g.mixers or g.size < 2 or (kinds is not None and g.kind not in kinds):
            continue
        try:
            consumer_sites(model, g)
        except UsageError:
            continue
        out.append(g)
    return out


def unit_costs(model: nn.Module, groups: Sequence[Group], example) -> dict[str, dict]:
    """Parameters and multiply-adds (per sample) one unit of each group carries: every
    Linear/Conv2d weight slice of the group, ``per_index`` times the layer's output
    positions per sample (tokens of a sequence, pixels of a feature map)."""
    mods = dict(model.named_modules())
    wanted = {s.module for g in groups for s in g.slices
              if isinstance(mods.get(s.module), (nn.Linear, nn.Conv2d)) and s.name == "weight"}
    pos: dict[str, float] = {}

    def hook(name):
        def fwd(mod, inp, out):
            lead = out.shape[1] if isinstance(mod, nn.Conv2d) else out.shape[-1]
            pos[name] = out.numel() / (lead * len(example))
        return fwd

    handles = [mods[n].register_forward_hook(hook(n)) for n in wanted]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    out = {}
    for g in groups:
        macs = sum(int((s.units >= 0).sum()) * s.per_index * pos.get(s.module, 0.0)
                   for s in g.slices if s.module in wanted and s.name == "weight")
        out[g.name] = {"params": g.params / g.size, "macs": macs / g.size}
    return out


def _scale(rec: list) -> float:
    """``h/2`` per loss term from ``(sum of squared per-term gradients, rows, terms)``."""
    sumsq, rows, terms = rec
    return 0.0 if not rows else sumsq / rows * (rows / terms) / 2


def cut_network(model: nn.Module, graph: UnitGraph, calib: Data, *, target: str = "params",
                amount: float, groups: Sequence[Group | str] | None = None,
                min_width: int = 1, apply: bool = True, batch: int = 256,
                loss_fn=cross_entropy, damp: float = 1e-6) -> NetworkCut:
    """Choose the width of every group by the cheapest next removal, then cut the model.

    Parameters
    ----------
    model, graph : nn.Module, UnitGraph
        The trained model and ``build_graph(model, ...)``; cut in place when ``apply``.
    calib : (Tensor, Tensor)
        Calibration inputs and targets (costs, scales, refits).
    target : {"loss", "params", "macs"}
        ``loss``: remove while the predicted loss increase stays within ``amount``;
        ``params`` / ``macs``: remove the fraction ``amount`` of the selected groups' total.
    amount : float
        The loss increase, or the fraction to remove.
    groups : sequence of Group or str, optional
        Default: :func:`network_groups` (every group without a unit-mixing norm).
    min_width, apply, batch, loss_fn, damp
        The narrowest width of a group; whether to cut the model; samples per forward; the
        loss; the damping of the Gram matrices.

    Returns
    -------
    NetworkCut
    """
    if target not in ("loss", "params", "macs"):
        raise UsageError(f"target must be one of loss, params, macs; got {target!r}")
    grps = (network_groups(model, graph) if groups is None
            else [find_group(graph, g) for g in groups])
    mixed = [g.name for g in grps if g.mixers]
    if mixed:
        raise UsageError(f"groups {mixed} are read through a norm that mixes their units; "
                         "their removal costs are not comparable (leave them out)")
    if not grps:
        raise UsageError("no group to allocate: name groups without a unit-mixing norm")
    sites = {g.name: consumer_sites(model, g) for g in grps}
    unique = list({s.module: s for ss in sites.values() for s in ss}.values())
    acts, _, outg = collect(model, unique, calib, batch=batch, grads=True, loss_fn=loss_fn)
    per = unit_costs(model, grps, calib[0][:1])
    key = "params" if target == "loss" else target
    spec, scale, saving = {}, {}, {}
    for g in grps:
        cons = _consumers(sites[g.name], acts, {})
        fr = group_frontier(cons, g.size, "obs", ks=[g.size], damp=damp)
        scale[g.name] = sum(_scale(outg[s.module]) for s in sites[g.name]) / len(sites[g.name])
        saving[g.name] = per[g.name][key]
        if saving[g.name] <= 0:
            raise UsageError(f"group {g.name!r} carries no {key} to save")
        spec[g.name] = (fr.costs, scale[g.name], saving[g.name])
    del acts
    plan = allocate(spec, target=target, amount=amount, min_width=min_width)
    total = sum(g.size * saving[g.name] for g in grps)
    res = NetworkCut(plan, scale, saving, total)
    if apply:
        widths = {n: k for n, k in plan.widths.items() if k < graph[n].size}
        res.frontiers = cut_groups(model, graph, widths, calib, "obs", batch=batch,
                                   loss_fn=loss_fn, damp=damp)
    return res
