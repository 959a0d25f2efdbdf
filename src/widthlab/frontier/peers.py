"""The practitioner's alternatives to learned widths, down to a multiply-add budget.

- :func:`slim_`: network slimming (Liu et al., 2017). After training with
  ``price * widthlab.nn.slimming.bn_l1(model)`` in the loss, every channel is ranked globally
  by its BatchNorm scale ``|gamma|`` and the lowest are removed until the model's
  multiply-adds per sample are at most ``target_macs``. Channels are the units of
  :func:`widthlab.units.build_graph`'s groups, so a residual stream is one group whose unit
  has several BatchNorms (the stem's, every block's second, the projection shortcut's): its
  score is the **max** of ``|gamma|`` over them (a stream channel goes only when no block
  writes to it with weight). Removal goes through :func:`widthlab.units.remove_units`
  (optimizer state kept, ready to fine-tune).
- :func:`cut_network_to_macs_`: widthlab's compensated whole-network cut
  (:func:`widthlab.frontier.network.cut_network`, ``target="macs"``) driven to an absolute
  multiply-add budget of the whole model (``cut_network``'s ``amount`` is a fraction of the
  selected groups' per-unit accounting, which counts a conv between two groups twice).
- :func:`tp_prune_`: Torch-Pruning 1.6's ``MetaPruner`` with its group magnitude importance
  (``GroupMagnitudeImportance``, L2 or L1 norm of every coupled weight), global ranking,
  pruned in small iterative steps until the multiply-adds are at most ``target_macs``.

Both count multiply-adds with :func:`widthlab.metrics.cost.count_macs` (per sample) and
return the widths reached. Example::

    from widthlab.frontier.peers import slim_, tp_prune_
    out = slim_(model, x[:2], target_macs=ResNetConfig().macs() // 2, optimizer=opt)
    out["widths"], out["macs"]      # {"stream:stages.0": 9, ...}, 15,43...
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from widthlab.errors import UsageError
from widthlab.frontier.budget import fewest_removals
from widthlab.frontier.network import cut_network, network_groups, unit_costs
from widthlab.metrics.cost import count_macs, count_params
from widthlab.units import Group, UnitGraph, build_graph, remove_units

__all__ = ["bn_scores", "cut_network_to_macs_", "slim_", "tp_prune_"]


def _args(example) -> tuple:
    return example if isinstance(example, tuple) else (example,)


def bn_scores(model: nn.Module, graph: UnitGraph) -> dict[str, torch.Tensor]:
    """Per group with BatchNorms: each unit's max ``|gamma|`` over the group's BatchNorm
    scales (float64, ``(group.size,)``). Groups no BatchNorm scales are left out."""
    modules = dict(model.named_modules())
    out = {}
    for g in graph.groups:
        score = torch.full((g.size,), -1.0, dtype=torch.float64)
        for s in g.slices:
            m = modules.get(s.module)
            if not (isinstance(m, _BatchNorm) and s.name == "weight" and m.weight is not None):
                continue
            gamma = m.weight.detach().abs().to(torch.float64).cpu()
            keep = s.units >= 0
            units = s.units[keep].long()
            score.scatter_reduce_(0, units, gamma[keep], reduce="amax")
        if (score >= 0).any():
            out[g.name] = score.clamp_min(0.0)
    return out


def _ranking(scores: dict[str, torch.Tensor]) -> list[tuple[float, str, int]]:
    """Every unit, lowest score first, without each group's best unit (one must stay)."""
    rows = []
    for name, s in scores.items():
        best = int(torch.argmax(s))
        rows += [(float(v), name, u) for u, v in enumerate(s.tolist()) if u != best]
    rows.sort()
    return rows


def _drops(rows, k: int, graph: UnitGraph) -> dict[Group, list[int]]:
    out: dict[Group, list[int]] = {}
    for _, name, u in rows[:k]:
        out.setdefault(graph[name], []).append(u)
    return out


def _macs_after(model: nn.Module, example, rows, k: int) -> int:
    trial = copy.deepcopy(model)
    graph = build_graph(trial, *_args(example))
    drops = _drops(rows, k, graph)
    if drops:
        remove_units(trial, graph, drops, check=False)
    return count_macs(trial, example)


def slim_(model: nn.Module, example, *, target_macs: int,
          optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Network slimming: remove the channels of smallest BatchNorm scale, ranked over the
    whole network, until ``count_macs(model, example) <= target_macs``; in place.

    Parameters
    ----------
    model : nn.Module
        A trained model with BatchNorms (ideally trained with
        :func:`widthlab.nn.slimming.bn_l1` in the loss).
    example : Tensor or tuple
        A small input batch: traces the groups and counts the multiply-adds (per sample).
    target_macs : int
        Multiply-adds per sample to reach (at most).
    optimizer : torch.optim.Optimizer, optional
        Its state is cut with the parameters (momentum buffers etc. of kept channels kept).

    Returns
    -------
    dict
        ``macs_before``, ``macs``, ``params``, ``removed`` (group -> units removed),
        ``widths`` (group -> units kept, every group with BatchNorms), ``threshold`` (the
        largest ``|gamma|`` removed; None when nothing was).

    Raises
    ------
    UsageError
        No BatchNorm scales a group; ``target_macs`` is not a positive int or below what one
        channel per group still costs (checked before the model is changed).
    """
    if isinstance(target_macs, bool) or not isinstance(target_macs, int) or target_macs < 1:
        raise UsageError(f"target_macs must be a positive int (multiply-adds per sample), "
                         f"got {target_macs!r}")
    graph = build_graph(model, *_args(example))
    scores = bn_scores(model, graph)
    if not scores:
        raise UsageError("slim_ ranks channels by their BatchNorm scales, but no group of this "
                         "model has a BatchNorm; use tp_prune_ or cut_network instead")
    rows = _ranking(scores)
    before = count_macs(model, example)
    lo = fewest_removals(
        lambda k: _macs_after(model, example, rows, k), len(rows), before, target_macs,
        f"target_macs={target_macs:,} cannot be reached by slim_: with one channel left in "
        "every BatchNorm group the model still costs {floor:,} multiply-adds per sample")
    drops = _drops(rows, lo, graph)
    if drops:
        remove_units(model, graph, drops, optimizer=optimizer)
    widths = {name: graph[name].size for name in scores}
    return {"macs_before": before, "macs": count_macs(model, example),
            "params": count_params(model), "removed": {g.name: len(d) for g, d in drops.items()},
            "widths": widths, "threshold": rows[lo - 1][0] if lo else None}


def _output_module(model: nn.Module, args: tuple) -> nn.Module | None:
    """The module whose output is the model's output (the classifier: left unpruned)."""
    seen: dict[int, nn.Module] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__(id(o), m))
             for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            out = model(*args)
    finally:
        for h in hooks:
            h.remove()
    return seen.get(id(out))


def tp_prune_(model: nn.Module, example, *, target_macs: int, importance: str = "l2",
              steps: int = 100, max_ratio: float = 0.95, global_pruning: bool = True) -> dict:
    """Torch-Pruning 1.6's group magnitude pruning, in place, until the multiply-adds per
    sample are at most ``target_macs``.

    ``torch_pruning.pruner.MetaPruner`` with ``GroupMagnitudeImportance(p=2)`` (``"l2"``) or
    ``p=1`` (``"l1"``), the classifier (the module producing the output) left out, the
    pruning ratio raised linearly to ``max_ratio`` over ``steps`` steps, stopped at the first
    step that reaches the target.

    Returns
    -------
    dict
        ``macs_before``, ``macs``, ``params``, ``steps`` (taken), ``met`` (target reached),
        ``widths`` (group of :func:`widthlab.units.build_graph` -> size after pruning).
    """
    try:
        import torch_pruning as tp
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        raise UsageError("tp_prune_ needs Torch-Pruning 1.6: pip install 'widthlab[dev]' "
                         "(or pip install 'torch-pruning>=1.6,<1.7')") from e
    if importance not in ("l1", "l2"):
        raise UsageError(f"importance must be 'l1' or 'l2', got {importance!r}")
    if isinstance(target_macs, bool) or not isinstance(target_macs, int) or target_macs < 1:
        raise UsageError(f"target_macs must be a positive int, got {target_macs!r}")
    if steps < 1 or not 0 < max_ratio < 1:
        raise UsageError(f"steps must be >= 1 and max_ratio in (0, 1), got {steps}, "
                         f"{max_ratio}")
    args = _args(example)
    before = count_macs(model, example)
    was = model.training
    model.eval()  # no probe may move a BatchNorm's running statistics
    try:
        head = _output_module(model, args)
        pruner = tp.pruner.MetaPruner(
            model, args[0] if len(args) == 1 else args,
            importance=tp.importance.GroupMagnitudeImportance(p=2 if importance == "l2" else 1),
            global_pruning=global_pruning, pruning_ratio=max_ratio, iterative_steps=steps,
            ignored_layers=[head] if head is not None else [])
        taken, macs = 0, before
        while macs > target_macs and taken < steps:
            pruner.step()
            taken += 1
            macs = count_macs(model, example)
    finally:
        model.train(was)
    graph = build_graph(model, *args)
    return {"macs_before": before, "macs": macs, "params": count_params(model),
            "steps": taken, "met": macs <= target_macs,
            "widths": {g.name: g.size for g in graph.groups}}


def cut_network_to_macs_(model: nn.Module, calib, *, target_macs: int, example=None,
                         calls: int = 4, **options) -> dict:
    """:func:`~widthlab.frontier.network.cut_network` (``target="macs"``) until the whole
    model costs at most ``target_macs`` multiply-adds per sample; in place.

    Each call asks ``cut_network`` for ``amount = (macs now - target) / total``, ``total`` the
    selected groups' per-unit multiply-adds times their sizes (so the first-order saving is
    the gap); removing units of two groups that share a conv saves less than that (the conv
    loses rows and columns), so the cut may fall short, and another call (one round) takes
    the rest, up to ``calls`` calls.

    Parameters
    ----------
    model : nn.Module
    calib : (Tensor, Tensor)
        Calibration inputs and targets of ``cut_network``.
    target_macs : int
        Multiply-adds per sample to reach (at most), counted by
        :func:`widthlab.metrics.cost.count_macs`.
    example : Tensor, optional
        A small batch to trace and count on (default: ``calib[0][:2]``).
    calls : int
        Most ``cut_network`` calls.
    **options
        Passed to ``cut_network`` (``groups``, ``min_width``, ``scale``, ``rounds`` of the
        first call, ``batch``, ``loss_fn``, ``damp``).

    Returns
    -------
    dict
        ``macs_before``, ``macs``, ``params``, ``calls`` (made), ``met``, ``widths`` (group
        -> size), ``cuts`` (the :class:`~widthlab.frontier.network.NetworkCut` of each call).
    """
    if isinstance(target_macs, bool) or not isinstance(target_macs, int) or target_macs < 1:
        raise UsageError(f"target_macs must be a positive int, got {target_macs!r}")
    if calls < 1:
        raise UsageError(f"calls must be >= 1, got {calls}")
    if "target" in options or "amount" in options or "apply" in options:
        raise UsageError("cut_network_to_macs_ sets target, amount and apply itself; pass "
                         "target_macs instead")
    example = calib[0][:2] if example is None else example
    graph = build_graph(model, *_args(example))
    before = macs = count_macs(model, example)
    cuts = []
    while macs > target_macs and len(cuts) < calls:
        names = options.get("groups")
        groups = (network_groups(model, graph) if names is None
                  else [graph[g if isinstance(g, str) else g.name] for g in names])
        groups = [g for g in groups if g.size > options.get("min_width", 1)]
        if not groups:
            break
        per = unit_costs(model, groups, _args(example)[0])
        total = sum(g.size * per[g.name]["macs"] for g in groups)
        amount = min(1.0, (macs - target_macs) / total)
        kw = dict(options, groups=[g.name for g in groups])
        if cuts:
            kw["rounds"] = 1
        cuts.append(cut_network(model, graph, calib, target="macs", amount=amount, **kw))
        macs = count_macs(model, example)
    return {"macs_before": before, "macs": macs, "params": count_params(model),
            "calls": len(cuts), "met": macs <= target_macs,
            "widths": {g.name: g.size for g in graph.groups}, "cuts": cuts}
