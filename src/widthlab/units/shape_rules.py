"""Label rules of elementwise and shape ops: pointwise, broadcast, views, slicing, concat.

Each rule takes ``(rec, func, args, kwargs, out)`` and returns one list of labels per tensor
output (in ``tree_flatten`` order). See :mod:`~widthlab.units.labels` for what a label is.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten

from widthlab.units.labels import FIXED, Label, align, bundle, compress, full, materialize, merge


def tensors_out(out) -> list[Tensor]:
    return [o for o in tree_flatten(out)[0] if torch.is_tensor(o)]


def broadcast(rec, operands: list[Tensor], shape: tuple[int, ...], why: str = "",
              extra: list[Label] | None = None) -> list[Label]:
    """Labels of a broadcasting elementwise op over ``operands`` with output ``shape``.

    Labels sharing a dim are one unit element by element (a residual add joins the stream;
    a product joins SwiGLU's gate and up projections). Along a dim where an operand varies
    without labels (data, a constant such as RoPE's cos), units are joined along that dim
    (per-dim constants apply to every head alike) or, if that is all the label spans, fixed.
    """
    nd = len(shape)
    result: list[Label] = list(extra or [])
    free: set[int] = set()
    labeled_inputs = 0
    for t in operands:
        if t.ndim == 0:
            continue
        labels = [align(lab, nd) for lab in rec.labels(t)]
        covered = set().union(*(lab.dims for lab in labels)) if labels else set()
        off = nd - t.ndim
        free |= {d + off for d in range(t.ndim) if t.shape[d] > 1 and d + off not in covered}
        if labels and not rec.is_param(t):
            labeled_inputs += 1
        for lab in labels:
            for r in [r for r in result if r.dims & lab.dims]:
                result.remove(r)
                distinct = bool((full(r, shape) != full(lab, shape)).any())
                lab = merge(rec.book, r, lab, shape)
                if why and labeled_inputs > 1 and distinct:  # x + f(x) of one unit is no add
                    rec.book.mark(why, full(lab, shape), rec.stack[-1])
            result.append(lab)
    out = []
    for lab in result:
        inter = lab.dims & free
        if inter and lab.dims <= free:
            rec.book.fix(lab.grid)  # per-position data (a position embedding): not units
            continue
        if inter:
            lab = bundle(rec.book, lab, inter, rec.where)
        if lab is not None:
            out.append(lab)
    return out


def pointwise(rec, func, args, kwargs, out):
    outs = tensors_out(out)
    operands = [t for t in tree_flatten((args, kwargs))[0] if torch.is_tensor(t)]
    name = func.overloadpacket.__name__.rstrip("_")
    why = "stream" if name in ("add", "sub") else ""
    labels = broadcast(rec, operands, tuple(outs[0].shape), why)
    return [labels for _ in outs]


def same(rec, func, args, kwargs, out):
    """Unary ops (activations, copies, dropout): every output has the input's labels."""
    labels = rec.labels(args[0])
    return [labels for _ in tensors_out(out)]


def _register_split(rec, lab: Label, shape, dim: int, parts: int, where: str) -> None:
    """An equal split along a unit dim: kept units must form a product (parts, size)."""
    if dim not in lab.dims or parts < 2:
        return
    if shape[dim] == parts:  # parts of one index: the code's part count cannot change
        rec.book.union(lab.grid, lab.grid.narrow(dim, 0, 1))
        return
    g = full(lab, shape).unflatten(dim, (parts, shape[dim] // parts)).contiguous()
    c = compress(g)
    if c is not None and len(c.dims) > 1:
        rec.book.constraints.append((c, where, dim + 1))


def reshape(rec, func, args, kwargs, out):
    """view / reshape / flatten / unflatten / squeeze / unsqueeze: element order is kept, so
    the labels are laid out over the input and read back in the output's shape."""
    x, o = args[0], tensors_out(out)[0]
    name = func.overloadpacket.__name__
    shape = rec.pre if name.endswith("_") else tuple(x.shape)
    if name.startswith("as_strided") and not (o.is_contiguous() and o.storage_offset() == 0
                                             and o.numel() == math.prod(shape)):
        rec.refuse(func, "reads units through strides that are not a plain view")
    result = []
    for lab in rec.labels(x):
        g = materialize(lab, shape).reshape(o.shape)
        new = compress(g)
        if new is None:
            rec.book.fix(lab.grid)
            continue
        if len(new.dims) > 1:
            rec.book.constraints.append((new, f"{func} in {rec.where}", None))
        result.append(new)
    return [result]


def expand(rec, func, args, kwargs, out):
    o = tensors_out(out)[0]
    return [[align(lab, o.ndim) for lab in rec.labels(args[0])]]


def permute(rec, func, args, kwargs, out):
    x = args[0]
    name = func.overloadpacket.__name__
    if name == "permute":
        order = [d % x.ndim for d in args[1]]
    else:
        order = list(range(x.ndim))
        if name in ("transpose", "transpose_", "swapaxes"):
            a, b = args[1] % x.ndim, args[2] % x.ndim
        else:  # t, numpy_T
            a, b = 0, max(x.ndim - 1, 0)
        order[a], order[b] = order[b], order[a]
    back = {old: new for new, old in enumerate(order)}
    return [[Label(lab.grid.permute(order), frozenset(back[d] for d in lab.dims))
             for lab in rec.labels(x)]]


def select(rec, func, args, kwargs, out):
    x, dim, index = args[0], args[1] % args[0].ndim, args[2]
    result = []
    for lab in rec.labels(x):
        if dim in lab.dims and lab.dims == {dim}:
            rec.book.fix(lab.grid.select(dim, index))  # code names a position along units
            continue
        g = lab.grid.select(dim, index if dim in lab.dims else 0)
        result.append(Label(g, frozenset(d - (d > dim) for d in lab.dims if d != dim)))
    return [result]


def slice_(rec, func, args, kwargs, out):
    x = args[0]
    dim = (args[1] if len(args) > 1 else 0) % x.ndim
    start = args[2] if len(args) > 2 and args[2] is not None else 0
    end = args[3] if len(args) > 3 and args[3] is not None else x.shape[dim]
    step = args[4] if len(args) > 4 else 1
    result = []
    for lab in rec.labels(x):
        if dim in lab.dims:
            idx = torch.arange(x.shape[dim])[slice(start, end, step)]
            lab = Label(lab.grid.index_select(dim, idx), lab.dims)
        result.append(lab)
    return [result]


def split(rec, func, args, kwargs, out):
    x, outs = args[0], tensors_out(out)
    name = func.overloadpacket.__name__
    at = 1 if name == "unbind" else 2
    dim = (args[at] if len(args) > at else kwargs.get("dim", 0)) % x.ndim
    sizes = [o.shape[dim] if name != "unbind" else 1 for o in outs]
    labels = rec.labels(x)
    if len(set(sizes)) == 1:
        for lab in labels:
            _register_split(rec, lab, tuple(x.shape), dim, len(outs), f"{func} in {rec.where}")
    else:  # a boundary the code states: units before the last part would move it; fixed
        for lab in labels:
            if dim in lab.dims:
                rec.book.fix(lab.grid.narrow(dim, 0, sum(sizes[:-1])))
    result, start = [], 0
    for _o, size in zip(outs, sizes, strict=False):
        part = []
        for lab in labels:
            if dim in lab.dims:
                g = lab.grid.narrow(dim, start, size)
                if name == "unbind":
                    g = g.squeeze(dim)
                lab = Label(g, lab.dims)
                if name == "unbind":
                    lab = Label(g, frozenset(d - (d > dim) for d in lab.dims if d != dim))
            elif name == "unbind":
                lab = Label(lab.grid.squeeze(dim), frozenset(d - (d > dim) for d in lab.dims))
            if lab.dims:
                part.append(lab)
        result.append(part)
        start += size
    return result


def _cat(rec, labels: list[list[Label]], shapes: list[tuple], dim: int, shape) -> list[Label]:
    along = [[lab for lab in labs if dim in lab.dims] for labs in labels]
    across: list[Label] = []
    for labs in labels:
        for lab in labs:
            if dim not in lab.dims:
                across = broadcast(rec, [], shape, extra=across + [lab])
    if not any(along):
        return across
    dims = frozenset().union(*(lab.dims for labs in along for lab in labs))
    parts = []
    for s, labs in zip(shapes, along, strict=False):
        part = tuple(s[d] if d in dims else 1 for d in range(len(s)))
        parts.append(materialize(labs[0], part) if labs else torch.full(part, FIXED))
    lab = Label(torch.cat(parts, dim), dims)
    for other in [a for a in across if a.dims & lab.dims]:
        across.remove(other)
        lab = merge(rec.book, lab, other, shape)
    return across + [lab]


def cat(rec, func, args, kwargs, out):
    o = tensors_out(out)[0]
    tensors = [t for t in args[0] if t.ndim == o.ndim]  # legacy empty (0,) inputs are skipped
    dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % o.ndim
    labels = [rec.labels(t) for t in tensors]
    return [_cat(rec, labels, [tuple(t.shape) for t in tensors], dim, tuple(o.shape))]


def stack(rec, func, args, kwargs, out):
    o = tensors_out(out)[0]
    dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % o.ndim
    labels, shapes = [], []
    for t in args[0]:
        labels.append([Label(lab.grid.unsqueeze(dim),
                             frozenset(d + (d >= dim) for d in lab.dims))
                       for lab in rec.labels(t)])
        shapes.append(tuple(t.unsqueeze(dim).shape))
    return [_cat(rec, labels, shapes, dim, tuple(o.shape))]


def index_select(rec, func, args, kwargs, out):
    x, dim, index = args[0], args[1] % args[0].ndim, args[2]
    return [[Label(lab.grid.index_select(dim, index), lab.dims) if dim in lab.dims else lab
             for lab in rec.labels(x)]]


def gather_fix(rec, func, args, kwargs, out):
    """Data-dependent indexing (advanced indexing, gather, scatter): units along an indexed
    dim are fixed; labels on the other dims are kept when the layout is one index block."""
    x, o = args[0], tensors_out(out)[0]
    real = []
    if func.overloadpacket.__name__ == "index":
        real = [d for d, i in enumerate(args[1]) if i is not None]
    block = bool(real) and real == list(range(real[0], real[-1] + 1))
    result = []
    for lab in rec.labels(x):
        if not block or lab.dims & set(real):
            rec.book.fix(lab.grid)
            continue
        g = lab.grid
        for d in reversed(real):
            g = g.select(d, 0)
        inserted = o.ndim - (x.ndim - len(real))
        for _ in range(inserted):
            g = g.unsqueeze(real[0])
        shift = inserted - len(real)
        result.append(Label(g, frozenset(d if d < real[0] else d + shift for d in lab.dims)))
    return [result]


def pad(rec, func, args, kwargs, out):
    x, widths = args[0], list(args[1])
    result = []
    for lab in rec.labels(x):
        g = lab.grid
        for i in range(len(widths) // 2):
            d = x.ndim - 1 - i
            lo, hi = widths[2 * i], widths[2 * i + 1]
            if d not in lab.dims or (lo == 0 and hi == 0):
                continue
            if lo < 0 or hi < 0:
                rec.refuse(func, "crops a unit dimension")
            shape_lo = list(g.shape)
            shape_lo[d] = lo
            shape_hi = list(g.shape)
            shape_hi[d] = hi
            g = torch.cat([torch.full(shape_lo, FIXED), g, torch.full(shape_hi, FIXED)], d)
        result.append(Label(g, lab.dims))
    return [result]


def roll(rec, func, args, kwargs, out):
    x, shifts = args[0], args[1]
    dims = args[2] if len(args) > 2 else []
    result = []
    for lab in rec.labels(x):
        for s, d in zip(shifts, dims, strict=False):
            if d % x.ndim in lab.dims:
                lab = Label(lab.grid.roll(s, d % x.ndim), lab.dims)
        result.append(lab)
    return [result]


def flip(rec, func, args, kwargs, out):
    x, dims = args[0], [d % args[0].ndim for d in args[1]]
    return [[Label(lab.grid.flip([d for d in dims if d in lab.dims]), lab.dims)
             for lab in rec.labels(x)]]


def repeat(rec, func, args, kwargs, out):
    reps = list(args[1])
    result = []
    for lab in rec.labels(args[0]):
        lab = align(lab, len(reps))
        mine = [r if d in lab.dims else 1 for d, r in enumerate(reps)]
        result.append(Label(lab.grid.repeat(mine), lab.dims))
    return [result]


def channel_shuffle(rec, func, args, kwargs, out):
    x, groups = args[0], args[1]
    result = []
    for lab in rec.labels(x):
        if 1 not in lab.dims:
            result.append(lab)
            continue
        if lab.dims != {1}:
            rec.refuse(func, "shuffles channels whose units span other dims")
        c = x.shape[1]
        g = lab.grid.reshape(groups, c // groups)
        rec.book.constraints.append((Label(g, frozenset({0, 1})), f"{func} in {rec.where}",
                                     1))
        shape = [1] * x.ndim
        shape[1] = c
        result.append(Label(g.t().reshape(shape).contiguous(), lab.dims))
    return [result]
