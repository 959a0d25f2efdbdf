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
groups (per parameter, multiply-add or second of forward latency saved for those targets: a
unit's latency is the measured slope of :func:`latency_slopes`), and the chosen widths are cut
group after group with :func:`~widthlab.frontier.models.cut_groups` (each group refitted on the
activations the earlier cuts left).

Groups read through a unit-mixing norm (residual streams under LayerNorm) have no least-squares
refit. Named in ``groups`` (or with ``network_groups(..., mixed=True)``) they are ranked by the
uncompensated ``fallback`` (default ``activation``) and their costs are the increases of the
same consumer output error when the ranked units are zeroed without refit
(:func:`plain_costs`), put on the loss scale like the others; the cut only removes their units.
``NetworkCut.methods`` says which ranking each group used. (The norm's own change when a unit
goes is not in these costs: a first-order view of such groups.)

Cuts interact (a later block reads the earlier blocks' cut outputs; one group's removal costs
are measured with every other group whole), so by default the budget is spent in 4 rounds,
costs, scales and refits recomputed after each, and each group's scale is the larger of the
Fisher one and the *measured* one (the calibration loss increase of its own obs cut to half,
over the output error that cut adds): one-shot Fisher scales can lose to the uniform cut,
measured scales alone can send a group to one channel (benchmarks/README.md has the ResNet
numbers of each choice).

Example::

    graph = build_graph(gpt, x[:2])
    plan = cut_network(gpt, graph, calib, target="params", amount=0.3)   # cuts gpt in place
    plan.allocation.widths        # {"blocks.0.attn:heads": 4, "blocks.0.mlp.fc:out": 97, ...}
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier.blocks import BlockConsumer
from widthlab.frontier.budget import Allocation, allocate
from widthlab.frontier.group import GROUP_METHODS, group_frontier
from widthlab.frontier.models import (
    Data,
    ModelFrontier,
    _consumers,
    apply_cut,
    collect,
    consumer_sites,
    cross_entropy,
    cut_groups,
    find_group,
    model_loss,
)
from widthlab.metrics.cost import as_args
from widthlab.units import Group, UnitGraph, all_or_nothing, remove_units

__all__ = ["NetworkCut", "cut_network", "latency_slopes", "network_groups", "plain_costs",
           "unit_costs"]


@dataclass
class NetworkCut:
    """``allocation``: the widths and the predicted (saving, loss increase) curve; ``scale``:
    each group's loss per unit of output error; ``saving``: parameters (or multiply-adds) per
    unit; ``total``: the selected groups' total; ``frontiers``: the cuts applied (empty when
    ``apply=False``); ``methods``: the ranking each group used (``obs``, or the uncompensated
    ``fallback`` for a group read through a unit-mixing norm)."""

    allocation: Allocation
    scale: dict[str, float]
    saving: dict[str, float]
    total: float
    frontiers: list[ModelFrontier] = field(default_factory=list)
    methods: dict[str, str] = field(default_factory=dict)


def network_groups(model: nn.Module, graph: UnitGraph, kinds: Sequence[str] | None = None,
                   *, mixed: bool = False) -> list[Group]:
    """The groups :func:`cut_network` allocates by default: at least one Linear or Conv2d
    consumer, more than one unit, no unit-mixing norm unless ``mixed``; optionally only
    ``kinds`` (``"ffn"``, ``"heads"``, ``"channels"``, ``"stream"``)."""
    out = []
    for g in graph.groups:
        if (g.mixers and not mixed) or g.size < 2 or (kinds is not None
                                                      and g.kind not in kinds):
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

    args = as_args(example)  # a tensor or a tuple of the forward's arguments
    batch = args[0].shape[0]

    def hook(name):
        def fwd(mod, inp, out):
            lead = out.shape[1] if isinstance(mod, nn.Conv2d) else out.shape[-1]
            pos[name] = out.numel() / (lead * batch)
        return fwd

    handles = [mods[n].register_forward_hook(hook(n)) for n in wanted]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    def per_index(s) -> int:  # read off the live tensor: ``Slice.per_index`` is the traced
        t = getattr(mods[s.module], s.name)  # one, stale once another group cut the tensor
        return t.numel() // t.shape[s.dim]

    out = {}
    for g in groups:
        macs = sum(int((s.units >= 0).sum()) * per_index(s) * pos.get(s.module, 0.0)
                   for s in g.slices if s.module in wanted and s.name == "weight")
        params = sum(int((s.units >= 0).sum()) * per_index(s) for s in g.slices if s.is_param)
        out[g.name] = {"params": params / g.size, "macs": macs / g.size}
    return out


def _best_time(model: nn.Module, x, reps: int) -> float:
    """The best of ``reps`` forwards' seconds; on a GPU the kernels are waited for (a bare
    clock there times the launches only)."""
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    with torch.no_grad():
        model(x)  # warm-up (allocations, kernels)
        best = float("inf")
        for _ in range(reps):
            sync()
            t = time.perf_counter()
            model(x)
            sync()
            best = min(best, time.perf_counter() - t)
    return best


def latency_slopes(model: nn.Module, graph: UnitGraph, groups: Sequence[Group], example, *,
                   reps: int = 7) -> dict[str, float]:
    """Seconds of forward latency one unit of each group costs, measured: the best of
    ``reps`` forwards of ``example`` (no gradient, eval mode, the current thread count) by the
    model as it is and by a copy with the last half of the group's units removed
    (:func:`widthlab.units.remove_units`), the difference over the units removed. Which units
    go does not change the shapes, hence not the time. A slope below 1 ns (no measurable
    change) is set to 1 ns, so such a group is cut last for a latency target."""
    was = model.training
    model.eval()
    try:
        base = _best_time(model, example, reps)
        out = {}
        for g in groups:
            m2, g2 = copy.deepcopy(model), copy.deepcopy(graph)
            drop = list(range(g.size - g.size // 2, g.size))
            remove_units(m2, g2, g.name, drop)
            out[g.name] = max((base - _best_time(m2, example, reps)) / len(drop), 1e-9)
    finally:
        model.train(was)
    return out


def plain_costs(consumers: Sequence[BlockConsumer], order: Sequence[int]) -> list[float]:
    """The increase of the consumers' summed mean squared output error at each removal of
    ``order`` when the removed units' columns are zeroed without refit (the last NaN, as
    ``GroupFrontier.costs``): ``E(R) = sum tr(W_R G_RR W_R^T)`` over the consumers, ``G``
    their calibration Gram matrices."""
    out = [0.0] * len(order)
    for c in consumers:
        n = c.weight.shape[1]
        g, w = c.stats.gram[:n, :n].to(c.weight), c.weight
        t = torch.zeros_like(w)  # sum over the removed blocks r of W_r G[r, :]
        where = {int(u): i for i, u in enumerate(c.units.tolist())}
        for step, u in enumerate(order[:-1]):
            if u not in where:
                continue
            m = c.cols[where[u]]
            wu = w[:, m]
            out[step] += float(2 * (wu * t[:, m]).sum() + (wu * (wu @ g[m][:, m])).sum())
            t += wu @ g[m]
    out[-1] = float("nan")
    return out


def _scale(rec: list) -> float:
    """``h/2`` per loss term from ``(sum of squared per-term gradients, rows, terms)``."""
    sumsq, rows, terms = rec
    return 0.0 if not rows else sumsq / rows * (rows / terms) / 2


def _measured_scale(model, graph, name, sites, cons, fr, probe, calib, dense, batch,
                    loss_fn) -> float:
    """Loss increase on ``calib`` of the group's obs cut to ``probe`` units, per unit of the
    output error that cut adds (the costs' own scale, measured instead of predicted; an
    uncompensated frontier's cut removes its units only)."""
    err = fr.calib_losses[probe]
    if not err > 0:
        return 0.0
    mf = ModelFrontier(name, fr.method, fr.method, fr.method == "obs", len(fr.order), fr,
                       sites, cons)
    m2, g2 = copy.deepcopy(model), copy.deepcopy(graph)
    apply_cut(m2, g2, mf, probe)
    return max(model_loss(m2, calib, batch=batch, loss_fn=loss_fn)[0] - dense, 0.0) / err


def cut_network(model: nn.Module, graph: UnitGraph, calib: Data, *, target: str = "params",
                amount: float, groups: Sequence[Group | str] | None = None,
                min_width: int = 1, apply: bool = True, batch: int = 256,
                loss_fn=cross_entropy, damp: float = 1e-6, scale: str = "max",
                rounds: int = 4, fallback: str = "activation") -> NetworkCut:
    """Choose the width of every group by the cheapest next removal, then cut the model.

    Parameters
    ----------
    model, graph : nn.Module, UnitGraph
        The trained model and ``build_graph(model, ...)``; cut in place when ``apply`` (a
        failure part-way puts both back as they were).
    calib : (Tensor, Tensor)
        Calibration inputs and targets (costs, scales, refits).
    target : {"loss", "params", "macs", "latency"}
        ``loss``: remove while the predicted loss increase stays within ``amount``;
        ``params`` / ``macs`` / ``latency``: remove the fraction ``amount`` of the selected
        groups' total (latency: CPU forward seconds per unit from :func:`latency_slopes` on
        ``batch`` calibration inputs, measured again every round).
    amount : float
        The loss increase, or the fraction to remove.
    groups : sequence of Group or str, optional
        Default: :func:`network_groups` (every group without a unit-mixing norm). A group
        read through a unit-mixing norm is ranked by ``fallback`` (see the module docstring).
    min_width, apply, batch, loss_fn, damp
        The narrowest width of a group; whether to cut the model; samples per forward; the
        loss; the damping of the Gram matrices.
    scale : {"max", "measured", "fisher"}
        How a group's output error becomes loss: ``fisher`` (half the empirical Fisher's mean
        diagonal in the consumer's outputs, no extra pass), ``measured`` (the calibration loss
        increase of the group's own obs cut to half its units, over the output error it adds:
        one cut copy and one calibration forward per group; zero where that cut costs nothing
        measurable, which lets the group be cut to ``min_width``), or ``max`` of the two.
    rounds : int
        Allocate and cut in this many steps, each a share of the budget, the costs, scales and
        refits recomputed on the model the earlier steps left (cuts interact: a later block
        reads the earlier blocks' cut outputs). ``apply=False`` needs ``rounds=1``.
    fallback : str
        The uncompensated ranking of groups read through a unit-mixing norm (one of
        :data:`~widthlab.frontier.group.GROUP_METHODS` but ``obs`` and ``flap``, whose bias
        compensation cannot pass such a norm).

    Returns
    -------
    NetworkCut
    """
    grps = _checked_groups(model, graph, groups, target, scale, rounds, apply, fallback)
    with all_or_nothing(model, graph):  # a later round's failure undoes the earlier cuts
        return _cut_rounds(model, graph, [g.name for g in grps], calib, target, amount,
                           min_width, apply, batch, loss_fn, damp, scale, rounds, fallback)


def _cut_rounds(model, graph, names, calib, target, amount, min_width, apply, batch, loss_fn,
                damp, scale, rounds, fallback) -> NetworkCut:
    key = "params" if target == "loss" else target
    total0 = None
    res = None
    for r in range(1, rounds + 1):
        cur = [graph[n] for n in names]
        plan, scales, saving = _round(model, graph, cur, calib, key, batch, loss_fn, damp,
                                      scale, fallback)
        total = sum(g.size * saving[g.name] for g in cur)
        if total0 is None:
            total0 = total
        if target == "loss":
            step = amount / rounds
        else:  # the cumulative saving r/rounds of the way, as a fraction of what is left
            step = min(1.0, max(0.0, (amount * total0 * r / rounds - (total0 - total)) / total))
        plan = allocate(plan, target=target, amount=step, min_width=min_width)
        done = total0 - total
        if res is None:
            res = NetworkCut(plan, scales, saving, total0,
                             methods={g.name: fallback if g.mixers else "obs" for g in cur})
        else:
            res.allocation.removed += plan.removed
            res.allocation.curve += [(done + a, res.allocation.curve[-1][1] + b)
                                     if res.allocation.curve else (done + a, b)
                                     for a, b in plan.curve]
            res.allocation.met, res.scale, res.saving = plan.met, scales, saving
            res.allocation.widths = plan.widths
        if apply:
            widths = {n: k for n, k in plan.widths.items() if k < graph[n].size}
            res.frontiers += cut_groups(model, graph, widths, calib, "obs", batch=batch,
                                        loss_fn=loss_fn, damp=damp, fallback=fallback)
    return res


def _checked_groups(model, graph, groups, target, scale, rounds, apply, fallback
                    ) -> list[Group]:
    """:func:`cut_network`'s arguments checked before anything runs; its groups."""
    if target not in ("loss", "params", "macs", "latency"):
        raise UsageError(f"target must be one of loss, params, macs, latency; got {target!r}")
    if scale not in ("fisher", "measured", "max"):
        raise UsageError(f"scale must be 'fisher', 'measured' or 'max', got {scale!r}")
    if rounds < 1 or (rounds > 1 and not apply):
        raise UsageError(f"rounds must be >= 1 (and > 1 only with apply=True), got {rounds}")
    if fallback not in GROUP_METHODS or fallback in ("obs", "flap"):
        # flap's bias compensation cannot pass a unit-mixing norm: its cut there would not be
        # the one its costs were measured on
        raise UsageError(f"fallback must be an uncompensated ranking (one of "
                         f"{', '.join(m for m in GROUP_METHODS if m not in ('obs', 'flap'))}),"
                         f" got {fallback!r}")
    grps = (network_groups(model, graph) if groups is None
            else [find_group(graph, g) for g in groups])
    if not grps:
        raise UsageError("no group to allocate: name groups (network_groups(model, graph, "
                         "mixed=True) lists every one)")
    return grps


def _round(model, graph, grps, calib, key, batch, loss_fn, damp, scale, fallback):
    """Every group's costs (obs, or ``fallback``'s order with :func:`plain_costs` for a group
    read through a unit-mixing norm), loss scale and per-unit saving on the model as it is."""
    sites = {g.name: consumer_sites(model, g) for g in grps}
    unique = list({s.module: s for ss in sites.values() for s in ss}.values())
    acts, wgrad, outg = collect(model, unique, calib, batch=batch, grads=True, loss_fn=loss_fn)
    per = unit_costs(model, grps, calib[0][:1])
    if key == "latency":
        for name, v in latency_slopes(model, graph, grps, calib[0][:batch]).items():
            per[name]["latency"] = v
    spec, scales, saving = {}, {}, {}
    dense = model_loss(model, calib, batch=batch, loss_fn=loss_fn)[0]
    for g in grps:
        cons = _consumers(sites[g.name], acts, wgrad if fallback == "taylor" else {})
        probe = max(1, g.size // 2)
        method = fallback if g.mixers else "obs"
        fr = group_frontier(cons, g.size, method, ks=[g.size, probe], damp=damp)
        costs = fr.costs if method == "obs" else plain_costs(cons, fr.order)
        fisher = sum(_scale(outg[s.module]) for s in sites[g.name]) / len(sites[g.name])
        scales[g.name] = fisher
        if scale != "fisher":
            measured = _measured_scale(model, graph, g.name, sites[g.name], cons, fr, probe,
                                       calib, dense, batch, loss_fn)
            scales[g.name] = measured if scale == "measured" else max(measured, fisher)
        saving[g.name] = per[g.name][key]
        if saving[g.name] <= 0:
            raise UsageError(f"group {g.name!r} carries no {key} to save")
        spec[g.name] = (costs, scales[g.name], saving[g.name])
    return spec, scales, saving
