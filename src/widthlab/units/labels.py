"""Unit labels carried by traced tensors, and the atom bookkeeping the trace fills in.

Every dimension of every parameter the forward touches gets one *atom* per index (an integer
id). A traced tensor carries a list of :class:`Label` s: each is a grid of atom ids that is
broadcastable to the tensor (size 1 on every dimension it does not span), saying which unit
an element belongs to along the dimensions it spans. ``(B, T, C)`` activations of a linear
layer carry one label spanning ``C``; attention queries ``(B, H, T, D)`` carry one label
spanning ``H`` and ``D`` (one atom per head dimension); a weight ``(O, I)`` carries two labels,
one per dimension. Labels on one tensor span disjoint dimensions.

Ops record *edges* (two atoms are the same unit, or must be removed together) in the
:class:`Book`; the graph turns the edges into connected components (units). Atom ``0`` is
``FIXED``: a unit joined to it cannot be removed (it reaches the model's input or output, or
an op that reads units by data, such as an embedding's vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

FIXED = 0


@dataclass(frozen=True, eq=False)
class Label:
    """Atom ids ``grid`` (int64, the tensor's ndim, size 1 outside ``dims``) over ``dims``."""

    grid: Tensor
    dims: frozenset[int]


@dataclass
class Slot:
    """One dimension of one parameter or buffer: its atoms, in index order."""

    tensor: Tensor
    name: str  # qualified name in the model ("h.0.attn.c_attn.weight")
    dim: int
    atoms: Tensor


@dataclass
class Book:
    """What the trace learnt: atoms, edges between them and the notes the graph needs."""

    next_atom: int = 1
    edges: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    # (label over factor axes, where, axis or None): kept units must form a product over the
    # axes; with an axis, units must lie along it (an equal split's part size, computed
    # from the width: the number of parts is stated by the code)
    constraints: list[tuple[Label, str, int | None]] = field(default_factory=list)
    mixers: list[tuple[Tensor, str]] = field(default_factory=list)  # atoms read by a norm etc.
    marks: dict[str, list[tuple[Tensor, str]]] = field(default_factory=dict)
    # (module name, attribute, atoms): the attribute states how many of these atoms are kept
    attrs: list[tuple[str, str, Tensor]] = field(default_factory=list)
    # (a, b): when any atom of ``a`` is fixed, ``b`` is fixed too (nn.MultiheadAttention: the
    # heads' total width must equal the embedding width)
    couplings: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    head_dims: list[tuple[Tensor, int]] = field(default_factory=list)  # (head atoms, D)

    def new_atoms(self, n: int) -> Tensor:
        atoms = torch.arange(self.next_atom, self.next_atom + n, dtype=torch.long)
        self.next_atom += n
        return atoms

    def union(self, a: Tensor, b: Tensor) -> None:
        """Atoms ``a`` and ``b`` (broadcastable grids) are one unit, element by element."""
        a, b = torch.broadcast_tensors(a, b)
        self.edges.append((a.reshape(-1).clone(), b.reshape(-1).clone()))

    def fix(self, atoms: Tensor) -> None:
        self.union(atoms.reshape(-1), torch.zeros(1, dtype=torch.long))

    def mark(self, kind: str, atoms: Tensor, where: str) -> None:
        self.marks.setdefault(kind, []).append((atoms.reshape(-1).clone(), where))


def full(label: Label, shape: tuple[int, ...]) -> Tensor:
    """The label's grid expanded over ``shape`` on its own dims (others stay size 1)."""
    sizes = [shape[d] if d in label.dims else 1 for d in range(len(shape))]
    return label.grid.expand(sizes)


def materialize(label: Label, shape: tuple[int, ...]) -> Tensor:
    return label.grid.expand(shape).contiguous()


def compress(grid: Tensor, keep: frozenset[int] | None = None) -> Label | None:
    """A label from a full grid: spans the dims where it varies (or ``keep``); None if none."""
    dims = []
    for d in range(grid.ndim):
        if grid.shape[d] > 1 and (grid != grid.narrow(d, 0, 1)).any():
            dims.append(d)
    if keep is not None:
        dims = sorted(set(dims) | {d for d in keep if grid.shape[d] > 1})
    if not dims:
        return None
    index = tuple(slice(None) if d in dims else slice(0, 1) for d in range(grid.ndim))
    return Label(grid[index].contiguous(), frozenset(dims))


def bundle(book: Book, label: Label, dims: set[int], where: str, mark: str | None = None
           ) -> Label | None:
    """Units along ``dims`` of ``label`` move together: join them and drop those dims."""
    along = sorted(set(dims) & label.dims)
    if not along:
        return label
    rest = [d for d in range(label.grid.ndim) if d not in along]
    g = label.grid.permute(*rest, *along)
    flat = g.reshape(*g.shape[:len(rest)], -1)  # (..rest.., n_along)
    book.union(flat, flat[..., :1])
    if mark is not None:
        book.mark(mark, flat, where)
    index = tuple(slice(0, 1) if d in along else slice(None) for d in range(label.grid.ndim))
    dims_left = label.dims - set(along)
    if not dims_left:
        return None
    return Label(label.grid[index].contiguous(), frozenset(dims_left))


def align(label: Label, ndim: int) -> Label:
    """The label of a tensor broadcast to ``ndim`` dims (leading dims added)."""
    extra = ndim - label.grid.ndim
    if extra == 0:
        return label
    grid = label.grid.reshape((1,) * extra + tuple(label.grid.shape))
    return Label(grid, frozenset(d + extra for d in label.dims))


def merge(book: Book, a: Label, b: Label, shape: tuple[int, ...]) -> Label:
    """Join two labels of one tensor element by element (their dims overlap)."""
    book.union(full(a, shape), full(b, shape))
    if b.dims <= a.dims:
        return a
    if a.dims < b.dims:
        return b
    dims = a.dims | b.dims
    sizes = tuple(shape[d] if d in dims else 1 for d in range(len(shape)))
    return Label(a.grid.expand(sizes).contiguous(), dims)
