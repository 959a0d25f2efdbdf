"""Groups of coupled units from a traced forward: :func:`build_graph`, :class:`UnitGraph`.

The trace (:mod:`~widthlab.units.trace`) leaves atoms (one per index of every parameter
dimension) and edges between them. Connected components of the edges are *units*: sets of
parameter slices that must go together (a conv channel with its BatchNorm entries and the
next conv's input channel; a whole attention head with its q/k/v rows and output columns;
a whole conv group of a depthwise conv). A component joined to atom 0 reaches the model's
input or output (or is read by data, like a vocabulary) and is fixed. Units that share a
parameter dimension form one :class:`Group`: the units of one layer, of one residual stream
(every producer, consumer and norm on it), of one attention block's heads.

Views that split a unit dimension (``C -> (H, D)``, a channel shuffle, an equal ``split`` or
``chunk``) only stay valid if the kept units form a product along the new dims; when the ops
did not already make units whole along all but one of those dims (attention makes heads
whole), they are made whole along all but the innermost one, the one code usually computes
from the width (``C // groups`` of a channel shuffle: channel ``j`` of every shuffle group is
one unit).

Group kinds: ``"heads"`` (units are attention heads, or with grouped query attention one
kv head and the query heads it serves), ``"stream"`` (units joined by a residual add),
``"channels"`` (convolution output channels, or whole conv groups), ``"ffn"`` (the hidden
features of linear layers, SwiGLU's gate and up projections coupled).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor, nn

from widthlab.units.labels import Book, Label, bundle
from widthlab.units.trace import trace


@dataclass(eq=False)
class Slice:
    """One dimension of one tensor that a group owns: ``units[i]`` is the group unit that
    index ``i`` belongs to, ``-1`` where the index belongs to no unit of this group."""

    module: str  # owning module's name ("" for the model itself)
    name: str  # parameter or buffer attribute on that module ("weight", "running_mean")
    dim: int
    units: Tensor
    is_param: bool = True
    per_index: int = 1  # elements of the tensor per index along ``dim``


@dataclass(eq=False)  # a group is itself: hashable, so {group: drop_indices} works
class Group:
    """Coupled units: removing unit ``u`` removes every index ``i`` with ``units[i] == u`` of
    every slice. ``unit_width`` is the indices per unit in the first slice (a head's
    dimension for heads, 1 for channels); ``mixers`` name ops that mix the units (a LayerNorm
    over the stream: removal there is not the same as masking)."""

    name: str
    kind: str
    size: int
    unit_width: int
    slices: list[Slice]
    attrs: list[Slice] = field(default_factory=list)  # module attributes counting units
    mixers: tuple[str, ...] = ()
    owner: str = ""  # deepest module holding every slice ("" for the model)
    head_dim: int | None = None  # heads: the width of one head (q . k runs over it)

    @property
    def params(self) -> int:
        """Parameters the group's units hold, as traced: cutting another group that shares a
        tensor (a stream cut changes the next conv's per-channel count) is not reflected;
        re-trace with :func:`build_graph` after a cut."""
        return int(sum(int((s.units >= 0).sum()) * s.per_index for s in self.slices
                       if s.is_param))

    def __repr__(self) -> str:
        return f"Group({self.name!r}, kind={self.kind!r}, size={self.size})"


@dataclass
class UnitGraph:
    """All groups of a model, from :func:`build_graph`."""

    groups: list[Group]
    example: tuple[tuple, dict] | None = None  # the inputs it was traced on: remove_units'
    # check runs them through the cut model

    def __getitem__(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no group {name!r}; groups: {[g.name for g in self.groups]}")

    def describe(self) -> pd.DataFrame:
        """One row per group: name, kind, size (units), unit_width, head_dim (heads),
        params, mixed_by (ops that mix the units: removal is then not masking)."""
        table = pd.DataFrame([{"name": g.name, "kind": g.kind, "size": g.size,
                               "unit_width": g.unit_width, "head_dim": g.head_dim,
                               "params": g.params,
                               "mixed_by": ", ".join(sorted(set(g.mixers)))[:80]}
                              for g in self.groups],
                             columns=["name", "kind", "size", "unit_width", "head_dim",
                                      "params", "mixed_by"])
        table["head_dim"] = table["head_dim"].astype("Int64")  # missing where not heads
        return table


def _components(n: int, edges: list[tuple[Tensor, Tensor]]) -> np.ndarray:
    a = np.concatenate([e[0].numpy() for e in edges]) if edges else np.zeros(0, np.int64)
    b = np.concatenate([e[1].numpy() for e in edges]) if edges else np.zeros(0, np.int64)
    m = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return connected_components(m, directed=False)[1]


def _head_classes(book: Book, comp: np.ndarray) -> set[int]:
    marked = [atoms.numpy() for atoms, _ in book.marks.get("heads", [])]
    return set(np.unique(comp[np.concatenate(marked)]).tolist()) if marked else set()


def _resolve_products(book: Book) -> np.ndarray:
    """Components, after making units whole along all but one dim of every split view."""
    for _ in range(32):
        comp = _components(book.next_atom, book.edges)
        changed = False
        for a, b in book.couplings:
            if (comp[a.numpy()] == comp[0]).any() and not (comp[b.numpy()] == comp[0]).all():
                book.fix(b)
                changed = True
        heads = _head_classes(book, comp)
        for lab, where, axis in book.constraints:
            c = torch.from_numpy(comp[lab.grid.numpy()])
            varying = {d for d in lab.dims if (c != c.narrow(d, 0, 1)).any()}
            # units must lie along one axis: the innermost (the size code computes from the
            # width: C // groups), or, for attention heads, the heads axis
            keep = axis if axis is not None else max(lab.dims)
            if varying - {keep} and not (axis is None and len(varying) == 1
                                          and set(np.unique(c.numpy())) <= heads):
                bundle(book, Label(lab.grid, frozenset(varying)), varying - {keep}, where)
                changed = True
        if not changed:
            return comp
    raise RuntimeError("units: split views did not settle after 32 rounds")  # pragma: no cover


def _common(names: list[str]) -> str:
    parts = [n.split(".") if n else [] for n in names]
    out = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        out.append(level[0])
    return ".".join(out)


def _name(kind: str, slices: list[Slice], where: list[str]) -> str:
    if kind == "heads":
        return f"{_common([s.module for s in slices]) or 'model'}:heads"
    if kind == "stream":
        return f"stream:{_common(where) or 'model'}"
    producers = [s for s in slices if s.dim == 0 and s.name == "weight" and s.is_param]
    first = producers[0] if producers else slices[0]
    return f"{first.module or 'model'}:out" if producers else \
        f"{first.module or 'model'}.{first.name}:dim{first.dim}"


def _hits(items, comp, group_of, unit) -> dict[int, list]:
    """For (atoms, value) pairs: group -> the values whose atoms reach a unit of it."""
    out: dict[int, list] = {}
    for atoms, value in items:
        cls = comp[atoms.numpy()]
        for g in np.unique(group_of[cls[unit[cls]]]):
            out.setdefault(int(g), []).append(value)
    return out


def _unit_classes(book: Book, comp: np.ndarray):
    """Unit classes (not fixed, in two slots or more), their groups and rank in the group."""
    slot_cls = [comp[s.atoms.numpy()] for s in book.slots]
    n_cls = int(comp.max()) + 1
    slots_per = np.zeros(n_cls, np.int64)
    for cls in slot_cls:
        slots_per[np.unique(cls)] += 1
    unit = slots_per >= 2
    unit[comp[0]] = False
    a, b = [], []  # classes sharing a slot are one group
    for cls in slot_cls:
        u = np.unique(cls[unit[cls]])
        if len(u) > 1:
            a.append(torch.from_numpy(u[1:]))
            b.append(torch.from_numpy(np.full(len(u) - 1, u[0])))
    group_of = _components(n_cls, list(zip(a, b, strict=True)))
    allc = np.concatenate(slot_cls) if slot_cls else np.zeros(0, np.int64)
    allc = allc[unit[allc]]
    classes, first = np.unique(allc, return_index=True)
    order = np.lexsort((first, group_of[classes]))
    rank = np.full(n_cls, -1, np.int64)
    sizes: dict[int, int] = {}
    for c in classes[order]:
        g = int(group_of[c])
        rank[c] = sizes.get(g, 0)
        sizes[g] = int(rank[c]) + 1
    return slot_cls, unit, group_of, rank, sizes


def _groups(book: Book, comp: np.ndarray, model: nn.Module) -> list[Group]:
    params = {id(p) for p in model.parameters()}
    slot_cls, unit, group_of, rank, sizes = _unit_classes(book, comp)
    slices: dict[int, list[Slice]] = {}
    for s, cls in zip(book.slots, slot_cls, strict=True):
        gs = np.where(unit[cls], group_of[cls], -1)
        for g in pd.unique(gs[gs >= 0]):
            units = np.where(gs == g, rank[cls], -1)
            module, _, attr = s.name.rpartition(".")
            slices.setdefault(int(g), []).append(Slice(
                module, attr, s.dim, torch.from_numpy(units), id(s.tensor) in params,
                s.tensor.numel() // max(s.tensor.shape[s.dim], 1)))
    marks = {k: _hits(v, comp, group_of, unit) for k, v in book.marks.items()}
    mixers = _hits([(a, w) for a, w in book.mixers], comp, group_of, unit)
    attrs = _hits([(a, (m, n, a)) for m, n, a in book.attrs], comp, group_of, unit)
    head_dims = _hits(book.head_dims, comp, group_of, unit)
    groups = []
    for g, sl in slices.items():
        hit = {k: v.get(g, []) for k, v in marks.items()}
        kind = "heads" if hit.get("heads") else "stream" if hit.get("stream") else \
            "channels" if any(s.dim == 0 and s.name == "weight" and s.is_param
                              and _is_conv(model, s) for s in sl) else "ffn"
        own_attrs = []
        for module, attr, atoms in attrs.get(g, []):
            cls = comp[atoms.numpy()]
            units = np.where(unit[cls] & (group_of[cls] == g), rank[cls], -1)
            own_attrs.append(Slice(module, attr, 0, torch.from_numpy(units), False))
        width = int(np.bincount(sl[0].units[sl[0].units >= 0].numpy()).max())
        groups.append(Group(_name(kind, sl, [w for w in hit.get("stream", [])]), kind,
                            sizes[g], width, sl, own_attrs, tuple(sorted(set(mixers.get(g, [])))),
                            _common([s.module for s in sl]),
                            max(head_dims.get(g, [0])) or None if kind == "heads" else None))
    seen: dict[str, int] = {}
    for grp in groups:
        n = seen.get(grp.name, 0)
        seen[grp.name] = n + 1
        if n:
            grp.name = f"{grp.name}#{n + 1}"
    return groups


def _is_conv(model: nn.Module, s: Slice) -> bool:
    return isinstance(model.get_submodule(s.module), nn.modules.conv._ConvNd)


def build_graph(model: nn.Module, *example_args, **example_kwargs) -> UnitGraph:
    """The groups of coupled units of ``model``, from one forward on the example inputs.

    Parameters
    ----------
    model : nn.Module
        Any model whose forward runs eagerly (torch.nn, torchvision, timm, Hugging Face).
        It is run once; parameters, buffers (BatchNorm statistics) and the RNG state are
        restored, so the model is unchanged.
    *example_args, **example_kwargs
        Inputs of one forward (small: a batch of 1-2, short sequences).

    Returns
    -------
    UnitGraph
        ``graph.groups``: one :class:`Group` per set of coupled units (see the module doc for
        the kinds); ``graph.describe()`` lists them.

    Raises
    ------
    UnitTraceError
        An op of the forward touches unit dimensions and has no rule; the error names the op
        and the module running it.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    cuda = sorted({t.device.index or 0 for t in state.values() if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):  # the CPU's and every used GPU's generator
        try:
            book = trace(model, example_args, example_kwargs)
        finally:
            with torch.no_grad():
                for k, v in model.state_dict(keep_vars=True).items():
                    if k in state and v.shape == state[k].shape:
                        v.copy_(state[k])
    comp = _resolve_products(book)
    return UnitGraph(_groups(book, comp, model), (example_args, example_kwargs))


def list_units(model: nn.Module, *example_args, **example_kwargs) -> pd.DataFrame:
    """What can be sized in ``model``: one row per group (name, kind, size, unit_width,
    params, mixed_by), from one forward on the example inputs. Same as
    ``build_graph(model, *example_args, **example_kwargs).describe()``."""
    return build_graph(model, *example_args, **example_kwargs).describe()
