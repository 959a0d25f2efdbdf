"""The frontier of a group of units of a real model, and the cut applied to the model.

:func:`model_frontier` connects :func:`~widthlab.frontier.group.group_frontier` to a model and
a group of :mod:`widthlab.units`: forward hooks on the group's consumers (every ``nn.Linear``
or ``nn.Conv2d`` whose *input* dimension holds units of the group: an FFN's down projection,
an attention block's output projection reading whole heads, a residual block's second conv
reading its inner channels in im2col form) collect their inputs in one pass over the
calibration data, the consumers' block problems are built from the group's slices (a unit's
columns are where the slice names it), ``group_frontier`` ranks the units by ``method``, and
the model's own loss (mean cross-entropy: per token for a language model, per image for a
classifier) and accuracy are measured on separate evaluation data at every requested width.

:func:`apply_cut` removes the dropped units with :func:`widthlab.units.remove_units` (the one
remover) and writes the refitted consumer weights and biases of the chosen width.

A group read through an op that mixes its units (a residual stream under LayerNorm:
``Group.mixers``) has no least-squares refit: removing a unit changes the normalisation of
every other one. Its ``obs`` frontier falls back to the uncompensated ranking ``fallback``
and the result says so (``ModelFrontier.used``, ``compensated``); uncompensated methods leave
the consumers' kept weights as they are (FLAP's bias shift included only where no mixer is).

Example::

    graph = build_graph(model, x[:2])
    fr = model_frontier(model, graph, "blocks.0.mlp.fc:out", calib=(x_c, y_c),
                        eval=(x_e, y_e), method="obs", ks=[256, 128])
    fr.loss[128], fr.acc[128], fr.dense_loss
    apply_cut(model, graph, fr, 128)          # the model now has 128 FFN neurons there
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.frontier.blocks import BlockConsumer, conv_consumers, row_stats
from widthlab.frontier.group import GROUP_METHODS, GroupFrontier, group_frontier
from widthlab.units import Group, UnitGraph, all_or_nothing, remove_units

__all__ = ["ModelFrontier", "Site", "apply_cut", "collect", "consumer_sites", "cut_groups",
           "find_group", "group_frontier_of", "model_frontier", "model_loss"]

Data = tuple[Tensor, Tensor]


@dataclass
class Site:
    """A consumer of a group: ``module`` (its name), ``layer`` (the ``nn.Linear`` or
    ``nn.Conv2d``), ``col_units``: per input feature (Linear) or input channel (Conv2d) the
    group's unit there, ``-1`` where the index is no unit of the group."""

    module: str
    layer: nn.Module
    col_units: Tensor


@dataclass
class ModelFrontier:
    """One group's frontier on a model.

    ``group``: the group's name; ``method``: the ranking asked for; ``used``: the ranking
    used (``fallback`` where ``obs`` cannot refit a mixed group); ``compensated``: whether
    the consumers are refitted; ``frontier``: the :class:`GroupFrontier` (order, costs, cuts,
    consumer output errors); ``sites`` / ``consumers``: where the refitted weights go;
    ``loss`` / ``acc``: the model's evaluation loss and accuracy at each width;
    ``dense_loss`` / ``dense_acc``: the uncut model's.
    """

    group: str
    method: str
    used: str
    compensated: bool
    n_units: int
    frontier: GroupFrontier
    sites: list[Site]
    consumers: list[BlockConsumer]
    loss: dict[int, float] = field(default_factory=dict)
    acc: dict[int, float] = field(default_factory=dict)
    dense_loss: float = float("nan")
    dense_acc: float = float("nan")


def find_group(graph: UnitGraph, group: Group | str) -> Group:
    """``group`` itself, the group of that name, or the group a module produces
    (``"blocks.0.mlp.fc"`` -> ``"blocks.0.mlp.fc:out"``, ``"blocks.0.attn"`` -> its heads)."""
    if isinstance(group, Group):
        if not any(g is group for g in graph.groups):
            raise UsageError(f"group {group.name!r} is not a group of this graph")
        return group
    names = [g.name for g in graph.groups]
    for cand in (group, f"{group}:out", f"{group}:heads", f"stream:{group}"):
        if cand in names:
            return graph[cand]
    raise UsageError(f"no group {group!r}; name a group or the module producing it, one of "
                     f"{names}")


def consumer_sites(model: nn.Module, group: Group) -> list[Site]:
    """The group's consumers: ``nn.Linear`` / ``nn.Conv2d`` weights whose input dimension
    (dim 1) holds units of the group (see :class:`Site`)."""
    mods = dict(model.named_modules())
    sites = []
    for s in group.slices:
        layer = mods.get(s.module)
        if not (s.is_param and s.name == "weight" and s.dim == 1
                and isinstance(layer, (nn.Linear, nn.Conv2d))):
            continue
        if isinstance(layer, nn.Conv2d) and layer.groups > 1:
            raise UsageError(f"{s.module}: a grouped convolution consumes group {group.name!r}; "
                             "its refit is not supported (use an uncompensated method)")
        sites.append(Site(s.module, layer, s.units.clone()))
    if not sites:
        raise UsageError(f"group {group.name!r} has no nn.Linear or nn.Conv2d reading it; "
                         "nothing to refit or score")
    return sites


def _batches(data: Data, batch: int):
    x, y = data
    if len(x) != len(y):
        raise UsageError(f"inputs and targets differ in length ({len(x)} vs {len(y)})")
    for i in range(0, len(x), batch):
        yield x[i:i + batch], y[i:i + batch]


def cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over every position: ``(..., V)`` logits, ``(...)`` targets."""
    logits = out.reshape(-1, out.shape[-1])
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, y.reshape(-1))


@torch.no_grad()
def model_loss(model: nn.Module, data: Data, *, batch: int = 256,
               loss_fn: Callable[[Tensor, Tensor], Tensor] = cross_entropy
               ) -> tuple[float, float]:
    """The model's mean loss (weighted by targets per batch) and accuracy (argmax) on
    ``data = (inputs, targets)``, in eval mode."""
    was = model.training
    model.eval()
    tot = hits = n = 0.0
    try:
        for xb, yb in _batches(data, batch):
            out = model(xb)
            m = yb.numel()
            tot += float(loss_fn(out, yb)) * m
            hits += float((out.argmax(-1) == yb).sum())
            n += m
    finally:
        model.train(was)
    return tot / n, hits / n


class _Stop(Exception):
    pass


def collect(model: nn.Module, sites: Sequence[Site], data: Data, *, batch: int = 256,
            grads: bool = False, loss_fn=cross_entropy):
    """One pass over ``data``: every site's inputs (concatenated, detached) and, with
    ``grads``, the mean over batches of ``d loss / d weight`` and the per-term output
    gradients' ``(sum over rows of the mean square over outputs, rows, loss terms)`` (the
    per-term gradient is ``terms * d mean_loss / d output``: a row's gradient of the summed
    loss; for a classifier exactly the per-sample gradient).
    """
    acts: dict[str, list[Tensor]] = {s.module: [] for s in sites}
    outg: dict[str, list[float]] = {s.module: [0.0, 0, 0] for s in sites}
    wgrad: dict[str, Tensor] = {}
    cur = {"terms": 1}

    seen: set[str] = set()

    def hook(name):
        def fwd(mod, inp, out):
            acts[name].append(inp[0].detach())
            seen.add(name)
            if not grads and len(seen) == len(acts):
                raise _Stop  # every site has its inputs: the rest of the forward is not needed
            if grads and out.requires_grad:
                def on_grad(g, name=name):
                    g = g * cur["terms"]  # per loss term
                    width = g.shape[1] if g.ndim == 4 else g.shape[-1]
                    rec = outg[name]
                    rec[0] += float(g.double().square().sum()) / width  # mean over outputs
                    rec[1] += g.numel() // width  # rows
                out.register_hook(on_grad)
        return fwd

    handles = [s.layer.register_forward_hook(hook(s.module)) for s in sites]
    was = model.training
    # the caller's accumulated gradients, put back afterwards
    saved = {p: p.grad for p in model.parameters()} if grads else {}
    model.eval()
    try:
        for xb, yb in _batches(data, batch):
            cur["terms"] = yb.numel()
            if not grads:
                seen.clear()
                with torch.no_grad():
                    try:
                        model(xb)
                    except _Stop:
                        pass
                continue
            model.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            for s in sites:
                outg[s.module][2] += yb.numel()
                g = s.layer.weight.grad.detach() * len(xb)
                wgrad[s.module] = wgrad.get(s.module, 0) + g
    finally:
        for h in handles:
            h.remove()
        model.train(was)
        for p, g in saved.items():
            p.grad = g
    n = len(data[0])
    out = {k: torch.cat(v) for k, v in acts.items()}
    return out, {k: v / n for k, v in wgrad.items()}, outg


def _blocks_of(col_units: Tensor, per: int) -> tuple[Tensor, Tensor]:
    """``cols (U_c, b)``, ``units (U_c,)`` of a site whose index ``i`` spans columns
    ``i*per:(i+1)*per`` (1 for a Linear, ``kh*kw`` for a Conv2d)."""
    ids = torch.unique(col_units[col_units >= 0])
    idx = [torch.nonzero(col_units == u).flatten() for u in ids.tolist()]
    if len({len(i) for i in idx}) != 1:
        raise UsageError("the units of this group span different numbers of a consumer's "
                         "inputs; a block refit needs equal blocks")
    base = torch.stack(idx)  # (U_c, b0)
    cols = (base[:, :, None] * per + torch.arange(per)).reshape(len(ids), -1)
    return cols, ids


def _consumers(sites: Sequence[Site], acts: dict, wgrad: dict) -> list[BlockConsumer]:
    out = []
    for s in sites:
        x, g = acts[s.module], wgrad.get(s.module)
        if isinstance(s.layer, nn.Conv2d):
            cons = conv_consumers(s.layer, x, unit_ids=s.col_units, grad=g, module=s.module)
            out.extend(cons)
            continue
        cols, units = _blocks_of(s.col_units, 1)
        w = s.layer.weight.detach().double()
        b = None if s.layer.bias is None else s.layer.bias.detach().double()
        out.append(BlockConsumer(w, b, cols, units, row_stats(x),
                                 None if g is None else g.double(), s.module))
    return out


def _eval_stats(sites: Sequence[Site], acts: dict) -> list:
    stats = []
    for s in sites:
        x = acts[s.module]
        if isinstance(s.layer, nn.Conv2d):
            stats.extend(c.stats for c in conv_consumers(s.layer, x, unit_ids=s.col_units))
        else:
            stats.append(row_stats(x))
    return stats


def group_frontier_of(model: nn.Module, graph: UnitGraph, group: Group | str, calib: Data,
                      eval: Data | None = None, method: str = "obs", *,
                      ks: Sequence[int] | None = None, fallback: str = "activation",
                      batch: int = 256, loss_fn=cross_entropy, allow_same: bool = False,
                      damp: float = 1e-6, seed: int = 0) -> ModelFrontier:
    """:func:`model_frontier` without the model's loss at every width (the consumers' output
    errors only, on ``eval`` when given): what :func:`cut_groups` needs."""
    if method not in GROUP_METHODS or fallback not in GROUP_METHODS or fallback == "obs":
        raise UsageError(f"method must be one of {', '.join(GROUP_METHODS)} and fallback an "
                         f"uncompensated one; got {method!r}, {fallback!r}")
    grp = find_group(graph, group)
    sites = consumer_sites(model, grp)
    used = fallback if (grp.mixers and method == "obs") else method
    acts, wgrad, _ = collect(model, sites, calib, batch=batch, grads=used == "taylor",
                             loss_fn=loss_fn)
    cons = _consumers(sites, acts, wgrad)
    del acts
    ev = None
    if eval is not None:
        ev_acts, _, _ = collect(model, sites, eval, batch=batch)
        ev = _eval_stats(sites, ev_acts)
        del ev_acts
    fr = group_frontier(cons, grp.size, used, ks=ks, eval=ev, allow_same=allow_same,
                        damp=damp, seed=seed)
    return ModelFrontier(grp.name, method, used, used == "obs", grp.size, fr, sites, cons)


def model_frontier(model: nn.Module, graph: UnitGraph, group: Group | str, calib: Data,
                   eval: Data, method: str = "obs", *, ks: Sequence[int] | None = None,
                   fallback: str = "activation", batch: int = 256, loss_fn=cross_entropy,
                   allow_same: bool = False, damp: float = 1e-6, seed: int = 0
                   ) -> ModelFrontier:
    """The frontier of one group of ``model`` by ``method``, with the model's loss on it.

    Parameters
    ----------
    model : nn.Module
        The trained model (not modified: each width is measured on a cut copy).
    graph : UnitGraph
        ``build_graph(model, ...)``.
    group : Group or str
        A group of ``graph``, its name, or the name of the module producing it.
    calib, eval : (Tensor, Tensor)
        Inputs and targets (class ids; token ids for a language model) that fit the
        compensation and that measure it; they must differ unless ``allow_same``.
    method : str
        One of :data:`~widthlab.frontier.group.GROUP_METHODS`.
    ks : sequence of int, optional
        Widths to measure (default 100/75/50/25% and 1).
    fallback : str
        The uncompensated ranking a group read through a unit-mixing norm uses for ``obs``.
    batch, loss_fn, damp, seed
        Samples per forward; the loss ``loss_fn(outputs, targets)`` (default: mean
        cross-entropy over every position); ``group_frontier``'s damping and random seed.

    Returns
    -------
    ModelFrontier
    """
    res = group_frontier_of(model, graph, group, calib, eval, method, ks=ks,
                            fallback=fallback, batch=batch, loss_fn=loss_fn,
                            allow_same=allow_same, damp=damp, seed=seed)
    res.dense_loss, res.dense_acc = model_loss(model, eval, batch=batch, loss_fn=loss_fn)
    for k in sorted(res.frontier.cuts):
        m2, g2 = copy.deepcopy(model), copy.deepcopy(graph)
        apply_cut(m2, g2, res, k)
        res.loss[k], res.acc[k] = model_loss(m2, eval, batch=batch, loss_fn=loss_fn)
    return res


def cut_groups(model: nn.Module, graph: UnitGraph, widths: dict, calib: Data,
               method: str = "obs", **kw) -> list[ModelFrontier]:
    """Cut several groups in place, one after the other: each group's frontier is computed
    on the model the previous cuts left (its consumers see the already cut upstream) and cut
    to ``widths[group]`` (a width, or a fraction in (0, 1) of the group's units). Every width
    is checked before the first cut, and a failure part-way puts the model and ``graph`` back
    as they were.

    Parameters
    ----------
    model, graph, calib, method
        As for :func:`model_frontier`; ``graph`` is renumbered along with the model.
    widths : dict
        ``{group or group name or producing module: width or fraction}``.
    **kw
        ``fallback``, ``batch``, ``loss_fn``, ``damp``, ``seed`` of :func:`model_frontier`.

    Returns
    -------
    list of ModelFrontier
        One per group, in order (``used`` says which ranking each used).
    """
    plan = [(name, _width(w, graph[name].size, name))  # every width checked before a cut
            for name, w in ((find_group(graph, g).name, w) for g, w in widths.items())]
    if len({n for n, _ in plan}) != len(plan):
        raise UsageError(f"a group is named twice in widths ({[n for n, _ in plan]}); give "
                         "each group one width")
    out = []
    with all_or_nothing(model, graph):  # a later group's failure undoes the earlier cuts
        for name, k in plan:
            fr = group_frontier_of(model, graph, name, calib, None, method, ks=[k], **kw)
            if k < graph[name].size:  # its full width leaves the group as it is
                apply_cut(model, graph, fr, k)
            out.append(fr)
    return out


def _width(w, size: int, name: str) -> int:
    """A width (an int) or a fraction (a float in (0, 1)) of a group of ``size`` units."""
    if isinstance(w, float) and 0 < w < 1:
        return max(1, round(w * size))
    if isinstance(w, bool) or not isinstance(w, int):
        raise UsageError(f"width {w!r} of group {name!r}: give a number of units as an int "
                         "or a fraction of them as a float in (0, 1), e.g. 64 or 0.5")
    if not 1 <= w <= size:
        raise UsageError(f"width {w!r} of group {name!r} is not in [1, {size}]")
    return w


def _write(site: Site, cons: list[BlockConsumer], weights: list, keep_idx: Tensor) -> None:
    """Write the refitted ``(W, b)`` of a site's consumers onto its cut layer; ``keep_idx``:
    the site's kept input features / channels (original numbering)."""
    layer = site.layer
    with torch.no_grad():
        if isinstance(layer, nn.Conv2d):
            (w, b), = weights  # groups == 1: one consumer
            kk = layer.kernel_size[0] * layer.kernel_size[1]
            cols = (keep_idx[:, None] * kk + torch.arange(kk)).reshape(-1)
            new = w[:, cols].reshape(layer.weight.shape)
        else:
            (w, b), = weights
            new = w[:, keep_idx]
        # new tensors, not writes into the old ones: all_or_nothing can put those back
        layer.weight.data = new.to(layer.weight, copy=True)
        if b is not None:
            if layer.bias is None:
                layer.bias = nn.Parameter(b.to(layer.weight, copy=True))
            else:
                layer.bias.data = b.to(layer.bias, copy=True)


def apply_cut(model: nn.Module, graph: UnitGraph, fr: ModelFrontier, k: int, *,
              optimizer=None) -> None:
    """Cut ``fr``'s group of ``model`` to width ``k`` in place: the dropped units go with
    :func:`widthlab.units.remove_units`, then (compensated methods, and FLAP's bias where no
    norm mixes the group) the refitted consumer weights are written.

    ``model`` and ``graph`` must be those ``fr`` was computed on, or deep copies of them."""
    if k not in fr.frontier.cuts:
        raise UsageError(f"width {k} was not computed; widths: {sorted(fr.frontier.cuts)}")
    cut = fr.frontier.cuts[k]
    grp = graph[fr.group]
    drop = sorted(set(range(fr.n_units)) - set(cut.kept.tolist()))
    mods = dict(model.named_modules())
    sites = [Site(s.module, mods[s.module], s.col_units) for s in fr.sites]
    if drop:
        remove_units(model, graph, grp, drop, optimizer=optimizer)
    if not (fr.compensated or (fr.used == "flap" and not grp.mixers)):
        return
    i = 0
    dropped = torch.tensor(drop, dtype=torch.long)
    for s in sites:
        n = 1  # one consumer per Linear and per (ungrouped) Conv2d
        keep_idx = torch.nonzero(~torch.isin(s.col_units, dropped)).flatten()
        _write(s, fr.consumers[i:i + n], cut.weights[i:i + n], keep_idx)
        i += n
