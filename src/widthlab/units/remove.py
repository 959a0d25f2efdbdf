"""Remove units of one group, in place: :func:`remove_units`.

Every slice of the group is cut (a parameter keeps its identity, so an optimizer keeps
working; its gradient and every optimizer state tensor shaped like it are cut on the same
dim, ``step`` and other scalars are kept), buffers are replaced, the size attributes of every
module touched are brought up to date (:mod:`~widthlab.units.updaters`), and the group itself
is renumbered so that it can be cut again. Everything is validated before the first change.

Example::

    graph = build_graph(model, x)
    g = graph["layer1.0.conv1:out"]
    remove_units(model, graph, g, [0, 5, 7], optimizer=opt)   # g.size drops by 3
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.units.graph import Group, Slice, UnitGraph
from widthlab.units.hf import sync_config
from widthlab.units.snapshot import Snapshot, forward_error
from widthlab.units.state import check_state, slice_param_, take
from widthlab.units.updaters import scale_heads, set_stream_width, snapshot, update


def _drop_index(group: Group, drop: Iterable[int]) -> Tensor:
    try:
        idx = torch.as_tensor(list(drop), dtype=torch.long)
    except (TypeError, ValueError) as e:
        raise UsageError(f"drop_indices must be integers, got {drop!r}") from e
    idx = idx.unique()
    if idx.numel() and (idx.min() < 0 or idx.max() >= group.size):
        raise UsageError(f"drop_indices must lie in [0, {group.size}) for group "
                         f"{group.name!r}; got {idx.tolist()}")
    if idx.numel() >= group.size:
        raise UsageError(f"cannot remove all {group.size} units of group {group.name!r}; "
                         "keep at least one")
    return idx


def _owners(model: nn.Module, t: Tensor) -> list[tuple[nn.Module, str]]:
    out = []
    for m in model.modules():
        for store in (m._parameters, m._buffers):
            for name, v in store.items():
                if v is t:
                    out.append((m, name))
    return out


@torch.no_grad()
def _cut(owners: list[tuple[nn.Module, str]], t: Tensor, dim: int, keep: Tensor,
         optimizer) -> None:
    keep = keep.to(t.device)
    if not isinstance(t, nn.Parameter):
        new = take(t, dim, keep)
        for m, name in owners:
            m._buffers[name] = new
        return
    slice_param_(t, dim, keep, optimizer)


def _plan(model: nn.Module, group: Group, drop: Tensor):
    tensors = []
    for s in group.slices:
        module = model.get_submodule(s.module)
        t = getattr(module, s.name, None)
        if not torch.is_tensor(t) or t.ndim <= s.dim or t.shape[s.dim] != s.units.numel():
            raise UsageError(
                f"group {group.name!r} does not match the model at {s.module}.{s.name} "
                f"(dim {s.dim}): the model changed since build_graph; call build_graph again")
        keep = torch.nonzero(~torch.isin(s.units, drop)).reshape(-1)
        if keep.numel() == 0:
            raise UsageError(
                f"removing units {drop.tolist()} of group {group.name!r} would leave "
                f"{s.module or 'the model'}.{s.name} with nothing along dim {s.dim}; keep at "
                "least one of the units that index it")
        tensors.append((s, t, keep))
    return tensors


def _renumber(group: Group, drop: Tensor) -> None:
    remap = torch.full((group.size,), -1, dtype=torch.long)
    kept = torch.tensor([u for u in range(group.size) if u not in set(drop.tolist())])
    remap[kept] = torch.arange(kept.numel())

    def cut(s: Slice) -> None:
        s.units = s.units[~torch.isin(s.units, drop)]
        s.units = torch.where(s.units >= 0, remap[s.units.clamp(min=0)], s.units)

    for s in group.slices + group.attrs:
        cut(s)
    group.size = int(kept.numel())


def _apply(model: nn.Module, group: Group, drop: Tensor, plan, optimizer) -> None:
    """Cut one group's units (already validated) and bring the modules up to date."""
    owners = {id(t): _owners(model, t) for _, t, _ in plan}
    modules = {id(m): m for _, t, _ in plan for m, _ in owners[id(t)]}
    for s in group.attrs:
        m = model.get_submodule(s.module)
        modules[id(m)] = m
    before = {k: snapshot(m) for k, m in modules.items()}
    counts: dict[int, dict[str, int]] = {}
    for s in group.attrs:
        m = model.get_submodule(s.module)
        kept = s.units[(s.units >= 0) & ~torch.isin(s.units, drop)].numel()
        counts.setdefault(id(m), {})[s.name] = int(kept + (s.units < 0).sum())
    old_units, new_units = group.size, group.size - int(drop.numel())
    for s, t, keep in plan:
        _cut(owners[id(t)], t, s.dim, keep, optimizer)
    if group.kind == "heads":
        for m in model.get_submodule(group.owner).modules():  # BERT counts in a child
            scale_heads(m, old_units, new_units)
    if group.kind == "stream":
        set_stream_width(model, [s.module for s in group.slices], old_units, new_units)
    for k, m in modules.items():
        update(m, before[k], counts.get(k, {}))
    _renumber(group, drop)


def _requests(graph: UnitGraph, group, drop_indices) -> list[tuple[Group, Tensor]]:
    items = group.items() if isinstance(group, dict) else [(group, drop_indices)]
    out = []
    for g, drop in items:
        if isinstance(g, str):
            g = graph[g]
        if not any(x is g for x in graph.groups):
            raise UsageError(f"group {g.name!r} is not a group of this graph")
        if drop is None:
            raise UsageError(f"no drop_indices for group {g.name!r}")
        out.append((g, _drop_index(g, drop)))
    return out


def remove_units(model: nn.Module, graph: UnitGraph, group: Group | str | dict,
                 drop_indices: Iterable[int] | None = None,
                 optimizer: torch.optim.Optimizer | None = None, *, check: bool = True
                 ) -> None:
    """Remove units ``drop_indices`` of ``group`` from ``model``, in place.

    Parameters
    ----------
    model : nn.Module
        The model ``graph`` was built from (parameters keep their identity).
    graph : UnitGraph
        From :func:`~widthlab.units.build_graph`; the group is renumbered in place, so more
        units of it (and of any other group) can be removed later with the same graph.
    group : Group, str or dict
        A group of ``graph`` or its name; or ``{group: drop_indices, ...}`` to cut several
        groups at once (attention whose code reads the head width off the stream, such as
        nanoGPT or ``nn.MultiheadAttention``: ``k`` heads with ``k * head_dim`` stream units).
    drop_indices : iterable of int
        Units to remove, in ``[0, group.size)``; at least one unit must stay.
    optimizer : torch.optim.Optimizer, optional
        Its per-parameter state tensors shaped like their parameter are cut alike
        (``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``...); ``step`` is kept.
    check : bool, default True
        Run the graph's example inputs through the cut model (eval mode, no gradient); if
        the forward fails, everything is put back as it was and :class:`UsageError` says
        why. Nothing is ever left half cut.
    """
    requests = _requests(graph, group, drop_indices)
    requests = [(g, d) for g, d in requests if d.numel()]
    plans = [_plan(model, g, d) for g, d in requests]
    for plan in plans:
        for _, t, _ in plan:
            check_state(t, optimizer)
    saved = Snapshot(model, [t for plan in plans for _, t, _ in plan], optimizer,
                     [g for g, _ in requests])
    try:
        for (g, d), plan in zip(requests, plans, strict=True):
            _apply(model, g, d, plan, optimizer)
        sync_config(model)
    except BaseException:  # an updater or the config refused half-way: undo everything
        saved.restore()
        raise
    error = forward_error(model, graph) if check and requests else None
    if error is not None:
        saved.restore()
        names = ", ".join(g.name for g, _ in requests)
        raise UsageError(
            f"removing those units of {names} leaves a model whose forward fails "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); nothing was "
            "changed. The code reads a width the graph cannot see: for attention that takes "
            "its head width from the stream, cut k heads with k * head_dim stream units in "
            "one call: remove_units(model, graph, {heads: [...], stream: [...]})")
