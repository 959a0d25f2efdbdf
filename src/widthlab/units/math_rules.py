"""Label rules of ops that read units: products, convolutions, embeddings, attention, norms,
reductions and pooling. Same signature as :mod:`~widthlab.units.shape_rules`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from widthlab.units.labels import Label, align, bundle, full, merge
from widthlab.units.shape_rules import broadcast, tensors_out

Operand = tuple[list[Label], tuple[int, ...], str]  # labels, shape, one letter per dim


def _to_letters(lab: Label, spec: str, letters: str) -> Label:
    """A label of an operand with dims ``spec`` as a grid over all ``letters``."""
    order = sorted(range(len(spec)), key=lambda d: letters.index(spec[d]))
    g = lab.grid.permute(order)
    shape = [1] * len(letters)
    for d in range(len(spec)):
        shape[letters.index(spec[d])] = lab.grid.shape[d]
    return Label(g.reshape(shape), frozenset(letters.index(spec[d]) for d in lab.dims))


def contract(rec, operands: list[Operand], out_spec: str) -> list[Label]:
    """Labels of an einsum-like product: labels sharing a letter (batch or contracted) are one
    unit element by element; a contracted letter facing data without labels fixes its units;
    a label spanning contracted and kept letters moves together along the contracted ones
    (attention: the dims of one head are one unit with its scores)."""
    letters = "".join(sorted(set("".join(spec for _, _, spec in operands))))
    size = {}
    for _, shape, spec in operands:
        for c, n in zip(spec, shape, strict=False):
            size[c] = max(size.get(c, 1), n)
    shape_all = tuple(size[c] for c in letters)
    contracted = {letters.index(c) for c in letters if c not in out_spec}
    batch = {letters.index(c) for c in out_spec
             if sum(c in spec for _, _, spec in operands) > 1}
    merged: list[Label] = []
    bare: list[set[int]] = []  # per operand: letters varying without a label
    for labels, shape, spec in operands:
        covered = set().union(*(lab.dims for lab in labels)) if labels else set()
        bare.append({letters.index(spec[d]) for d in range(len(spec))
                     if shape[d] > 1 and d not in covered})
    for i, (labels, _, spec) in enumerate(operands):
        for lab in labels:
            lab = _to_letters(lab, spec, letters)
            others = set().union(*(b for j, b in enumerate(bare) if j != i))
            if lab.dims & contracted & others:
                rec.book.fix(lab.grid)  # units summed against data
            for r in [r for r in merged if r.dims & lab.dims]:
                merged.remove(r)
                shared = r.dims & lab.dims & batch
                lab = merge(rec.book, r, lab, shape_all)
                if shared:  # units on a batch dim of both factors: attention heads
                    rec.book.mark("heads", lab.grid, rec.stack[-1])
            merged.append(lab)
    result = []
    for lab in merged:
        inter = lab.dims & contracted
        if inter and lab.dims <= contracted:
            continue
        if inter:
            if lab.dims & batch:
                rec.book.head_dims.append((lab.grid.reshape(-1).clone(),
                                           math.prod(shape_all[d] for d in inter)))
            lab = bundle(rec.book, lab, inter, rec.where,
                         mark="heads" if lab.dims & batch else None)
        order = [letters.index(c) for c in out_spec]
        g = lab.grid.permute(order + sorted(set(range(len(letters))) - set(order)))
        g = g.reshape(g.shape[:len(order)])
        result.append(Label(g, frozenset(order.index(d) for d in lab.dims)))
    return result


def _op(rec, t: Tensor, spec: str) -> Operand:
    return rec.labels(t), tuple(t.shape), spec


def mm(rec, func, args, kwargs, out):
    name = func.overloadpacket.__name__
    o = tensors_out(out)[0]
    if name in ("mm", "addmm"):
        a, b, specs = args[-2], args[-1], ("mk", "kn", "mn")
    elif name in ("bmm", "baddbmm"):
        a, b, specs = args[-2], args[-1], ("bmk", "bkn", "bmn")
    elif name == "mv" or name == "addmv":
        a, b, specs = args[-2], args[-1], ("mk", "k", "m")
    else:  # dot
        a, b, specs = args[0], args[1], ("k", "k", "")
    if name in ("addmm", "baddbmm", "addmv"):
        a, b = args[1], args[2]
    labels = contract(rec, [_op(rec, a, specs[0]), _op(rec, b, specs[1])], specs[2])
    if name in ("addmm", "baddbmm", "addmv"):
        labels = broadcast(rec, [args[0]], tuple(o.shape), extra=labels)
    return [labels]


def convolution(rec, func, args, kwargs, out):
    """Input channels meet the weight's dim 1, outputs carry dim 0 (and the bias); kernel
    dims are not units. With ``groups > 1`` a whole conv group (its input channels and its
    output channels) is one unit: removing it keeps every group's shape."""
    x, w, b = args[0], args[1], args[2]
    transposed, groups = args[6], args[8]
    o = tensors_out(out)[0]
    xl, wl = rec.labels(x), rec.labels(w)
    if any(lab.dims - {1} for lab in xl):
        rec.refuse(func, "has units on spatial dims")
    cin_dim, cout_dim = (0, 1) if transposed else (1, 0)
    w_in = next((lab for lab in wl if cin_dim in lab.dims), None)  # None: one channel
    w_out = next((lab for lab in wl if cout_dim in lab.dims), None)  # None: one output
    for lab in wl:
        if lab.dims & set(range(2, w.ndim)):
            rec.book.fix(lab.grid)
    x_ch = [lab for lab in xl if 1 in lab.dims]
    if transposed and groups > 1:
        rec.refuse(func, "is a grouped transposed convolution")
    if w_out is None:  # a single output channel is no unit
        if x_ch and w_in is not None:
            rec.book.union(x_ch[0].grid.reshape(-1), w_in.grid.reshape(-1))
        elif x_ch or w_in is not None:
            rec.book.fix((x_ch[0] if x_ch else w_in).grid)
        return [[]]
    out_atoms = w_out.grid.reshape(-1)
    if groups == 1 and w_in is not None:
        if x_ch:
            rec.book.union(x_ch[0].grid.reshape(-1), w_in.grid.reshape(-1))
        else:
            rec.book.fix(w_in.grid)
    elif groups == 1:  # a single input channel
        if x_ch:
            rec.book.fix(x_ch[0].grid)
    else:
        if w_in is not None:
            rec.book.fix(w_in.grid)
        if x_ch:
            rec.book.union(x_ch[0].grid.reshape(groups, -1), out_atoms.reshape(groups, -1)[:, :1])
        else:
            rec.book.fix(out_atoms)
        rec.book.union(out_atoms.reshape(groups, -1), out_atoms.reshape(groups, -1)[:, :1])
    if b is not None:
        rec.book.union(rec.labels(b)[0].grid.reshape(-1), out_atoms)
    shape = [1] * o.ndim
    shape[1] = o.shape[1]
    return [[Label(out_atoms.reshape(shape), frozenset({1}))]]


def embedding(rec, func, args, kwargs, out):
    w, idx = args[0], args[1]
    wl = rec.labels(w)
    if not wl:
        return [[]]
    rec.book.fix(wl[0].grid)  # the vocabulary is read by token id
    shape = (1,) * idx.ndim + (w.shape[1],)
    return [[Label(wl[1].grid.reshape(shape), frozenset({idx.ndim}))]]


def _per_head(rec, func, labels: list[Label], shape: tuple[int, ...]) -> Tensor | None:
    """Atoms of a (..., H, L, D) attention operand as (H, n): one row per head."""
    nd = len(shape)
    h_dim, d_dim = nd - 3, nd - 1
    rows = []
    for lab in labels:
        if lab.dims - {h_dim, d_dim}:  # positions, not units: a head cannot drop them
            rec.book.fix(lab.grid)
            continue
        g = full(lab, shape)
        g = g.reshape(-1, *g.shape[-3:])[0, :, 0, :]  # (H or 1, D or 1)
        rows.append(g.expand(shape[h_dim], g.shape[-1]))
    return torch.cat(rows, dim=1) if rows else None


def attention(rec, func, args, kwargs, out):
    """scaled_dot_product_attention: a head is one unit (its q, k and v rows, and with them
    the output columns that read it); with fewer key and value heads (grouped query
    attention) a kv head and the query heads it serves are one unit. The head dim is not a
    unit: the scale 1/sqrt(D) reads it."""
    q, k, v = args[0], args[1], args[2]
    mask = args[3] if len(args) > 3 and torch.is_tensor(args[3]) else kwargs.get("attn_mask")
    if torch.is_tensor(mask) and rec.labels(mask):
        rec.refuse(func, "takes a mask with units")
    h = q.shape[-3]

    def heads(t: Tensor) -> tuple[list[Label], tuple[int, ...]]:
        labels = rec.labels(t)
        n, d = t.shape[-3], t.ndim - 3
        if n != h:
            idx = torch.arange(h) // (h // n)
            labels = [Label(lab.grid.index_select(d, idx), lab.dims) if d in lab.dims else lab
                      for lab in labels]
        shape = list(t.shape)
        shape[-3] = h
        return labels, tuple(shape)

    parts = [_per_head(rec, func, *heads(t)) for t in (q, k, v)]
    parts = [p for p in parts if p is not None]
    if parts:
        atoms = torch.cat(parts, dim=1)  # (H, all atoms of the head)
        rec.book.union(atoms, atoms[:, :1])
        rec.book.mark("heads", atoms, rec.stack[-1])
        rec.book.head_dims.append((atoms[:, :1].clone(), int(q.shape[-1])))
    return [heads(v)[0]] + [[] for _ in tensors_out(out)[1:]]


def _norm_over(rec, func, x: Tensor, dims: set[int], params: list[Tensor], kind: str):
    """Norm statistics over ``dims``: params join the units there; units only there mix."""
    labels = rec.labels(x)
    on = [lab for lab in labels if lab.dims & dims]
    for p in params:
        for plab in rec.labels(p, buffer=True):
            plab = align(plab, x.ndim)
            match = [lab for lab in on if lab.dims & plab.dims]
            if match:
                merge(rec.book, match[0], plab, tuple(x.shape))
            else:  # a LayerNorm over (C, H, W): its H and W entries are positions
                rec.book.fix(plab.grid)
    result = []
    for lab in labels:
        if lab.dims & dims and lab.dims <= dims:
            rec.book.mixers.append((lab.grid.reshape(-1).clone(), f"{kind} in {rec.where}"))
        elif lab.dims & dims:
            rec.refuse(func, "normalizes over units that span other dims")
        result.append(lab)
    return result


def layer_norm(rec, func, args, kwargs, out):
    x, normalized = args[0], args[1]
    params = [p for p in args[2:4] if torch.is_tensor(p)]
    dims = set(range(x.ndim - len(normalized), x.ndim))
    labels = _norm_over(rec, func, x, dims, params, "layer_norm")
    for lab in labels:
        if lab.dims == {x.ndim - 1}:
            rec.book.attrs.append((rec.stack[-1], "normalized_shape", lab.grid.reshape(-1)))
    return [labels] + [[] for _ in tensors_out(out)[1:]]


def rms_norm(rec, func, args, kwargs, out):
    x, normalized = args[0], args[1]
    params = [p for p in args[2:3] if torch.is_tensor(p)]
    labels = _norm_over(rec, func, x, set(range(x.ndim - len(normalized), x.ndim)), params,
                        "rms_norm")
    return [labels] + [[] for _ in tensors_out(out)[1:]]


def batch_norm(rec, func, args, kwargs, out):
    x = args[0]
    params = [p for p in args[1:5] if torch.is_tensor(p)]
    labels = rec.labels(x)
    if any(lab.dims - {1} for lab in labels):
        rec.refuse(func, "has units on spatial dims")
    ch = [lab for lab in labels if 1 in lab.dims]
    for p in params:
        for plab in rec.labels(p, buffer=True):
            if ch:
                rec.book.union(plab.grid.reshape(-1), ch[0].grid.reshape(-1))
            else:
                rec.book.fix(plab.grid)
    return [labels] + [[] for _ in tensors_out(out)[1:]]


def group_norm(rec, func, args, kwargs, out):
    """GroupNorm: the channels of one norm group are one unit (statistics stay per group)."""
    x, w, b, groups = args[0], args[1], args[2], args[6]
    labels = rec.labels(x)
    ch = [lab for lab in labels if 1 in lab.dims]
    if any(lab.dims - {1} for lab in labels):
        rec.refuse(func, "has units on spatial dims")
    atoms = ch[0].grid.reshape(groups, -1) if ch else None
    if atoms is not None:
        rec.book.union(atoms, atoms[:, :1])
        rec.book.attrs.append((rec.stack[-1], "num_groups", atoms[:, 0].clone()))
        rec.book.attrs.append((rec.stack[-1], "num_channels", atoms.reshape(-1).clone()))
    for p in (w, b):
        if torch.is_tensor(p):
            for plab in rec.labels(p):
                if atoms is not None:
                    rec.book.union(plab.grid.reshape(-1), atoms.reshape(-1))
                else:
                    rec.book.fix(plab.grid)
    return [labels] + [[] for _ in tensors_out(out)[1:]]


def _dims_arg(x: Tensor, args, kwargs, at: int = 1) -> tuple[set[int], bool]:
    dim = args[at] if len(args) > at and not isinstance(args[at], bool) else kwargs.get("dim")
    keep = kwargs.get("keepdim", False)
    for a in args[at + 1:]:
        if isinstance(a, bool):
            keep = a
    if dim is None or dim == []:
        return set(range(x.ndim)), keep
    dims = [dim] if isinstance(dim, int) else list(dim)
    return {d % max(x.ndim, 1) for d in dims}, keep


def reduction(rec, func, args, kwargs, out):
    """sum / mean / max / var over dims: units only summed over mix (flagged); units summed
    together with kept dims move together along the summed ones."""
    x = args[0]
    at = 2 if func.overloadpacket.__name__ in ("norm", "linalg_vector_norm") else 1  # (x, p, dim)
    dims, keep = _dims_arg(x, args, kwargs, at)
    result = []
    for lab in rec.labels(x):
        inter = lab.dims & dims
        if inter and lab.dims <= dims:
            rec.book.mixers.append((lab.grid.reshape(-1).clone(), f"{func} in {rec.where}"))
            continue
        if inter:
            lab = bundle(rec.book, lab, inter, rec.where)
        if not keep:
            g = lab.grid
            for d in sorted(dims, reverse=True):
                g = g.squeeze(d) if g.ndim > d else g
            lab = Label(g, frozenset(d - sum(r < d for r in dims) for d in lab.dims))
        result.append(lab)
    return [result for _ in tensors_out(out)]


def softmax(rec, func, args, kwargs, out):
    x, dim = args[0], args[1] % args[0].ndim
    result = []
    for lab in rec.labels(x):
        if dim in lab.dims and lab.dims == {dim}:
            rec.book.mixers.append((lab.grid.reshape(-1).clone(), f"{func} in {rec.where}"))
        elif dim in lab.dims:
            lab = bundle(rec.book, lab, {dim}, rec.where)
        if lab is not None:
            result.append(lab)
    return [result]


def scan(rec, func, args, kwargs, out):
    """cumsum and kin: along a unit dim the order of units matters (refused); elsewhere
    units pass through."""
    x, dim = args[0], args[1] % max(args[0].ndim, 1)
    labels = rec.labels(x)
    if any(dim in lab.dims for lab in labels):
        rec.refuse(func, "accumulates along units")
    return [labels for _ in tensors_out(out)]


def pool(rec, func, args, kwargs, out):
    """Pooling and resizing act on spatial dims only: channel units pass through."""
    labels = rec.labels(args[0])
    if any(lab.dims & set(range(2, args[0].ndim)) for lab in labels):
        rec.refuse(func, "pools over units")
    return [labels for _ in tensors_out(out)]


def full_like(rec, func, args, kwargs, out):
    return [rec.labels(args[0])]


def unused(rec, func, args, kwargs, out):
    """Ops whose outputs carry no units (shape queries, comparisons into masks, argmax)."""
    return [[] for _ in tensors_out(out)]
