"""Give a freshly built model the shapes of a saved ``state_dict``: :func:`resize_to_state_`.

A model whose units were removed during training (:func:`~widthlab.units.remove_units`,
:func:`widthlab.nn.surgery.shrink_`, a frontier cut) has smaller tensors than the same model
built afresh, so ``load_state_dict`` refuses its checkpoint. :func:`resize_to_state_` resizes
every parameter and persistent buffer of the fresh model to the saved shape (a parameter keeps
its identity, so an optimizer built before or after still points at it) and brings the
modules' size attributes up to date from the new shapes with the same per-module-type table
:func:`~widthlab.units.remove_units` uses (:mod:`~widthlab.units.updaters`). Sizes that no
shape states (a head count, a gate's input size) come from :func:`size_attrs`, saved beside
the ``state_dict`` as plain ints. Values are not copied: ``load_state_dict`` does that next.

Example::

    ckpt = {"model": model.state_dict(), "sizes": size_attrs(model)}   # when saving
    fresh = build()                                                     # when resuming
    resize_to_state_(fresh, ckpt["model"], ckpt["sizes"])
    fresh.load_state_dict(ckpt["model"])
    opt = make_optimizer(fresh); opt.load_state_dict(ckpt["opt"])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.units.hf import sync_config
from widthlab.units.snapshot import _set_data
from widthlab.units.updaters import HEAD_ATTRS, STREAM_ATTRS, UPDATERS, snapshot, update

# plain int sizes that no tensor shape states: head counts, stream widths, a selecting gate's
# input size (``UnitGate.n_in``) and original unit count (``n_units``)
PLAIN_ATTRS = tuple(dict.fromkeys((*HEAD_ATTRS, *STREAM_ATTRS, "n_in", "n_units")))


def size_attrs(model: nn.Module) -> dict[str, dict[str, int]]:
    """``{module name: {attribute: int}}`` of the plain size attributes (:data:`PLAIN_ATTRS`)
    of every module of ``model``: what :func:`resize_to_state_` cannot read off a shape.
    Only plain int attributes (not bools, not properties); weights-only loadable."""
    out = {}
    for name, m in model.named_modules():
        found = {a: int(v) for a in PLAIN_ATTRS
                 if isinstance(v := vars(m).get(a), int) and not isinstance(v, bool)}
        if found:
            out[name] = found
    return out


def _entries(model: nn.Module) -> list[tuple[str, nn.Module, str, Tensor]]:
    """``(state_dict key, owner, attribute, tensor)`` of every parameter and persistent
    buffer, tied tensors once per owner."""
    out = []
    for prefix, m in model.named_modules():
        dot = prefix + "." if prefix else ""
        for name, t in m._parameters.items():
            if t is not None:
                out.append((dot + name, m, name, t))
        for name, t in m._buffers.items():
            if t is not None and name not in m._non_persistent_buffers_set:
                out.append((dot + name, m, name, t))
    return out


def _updater(m: nn.Module):
    if type(m).__name__ == "Conv1D" and hasattr(m, "nf"):
        return True
    return next((UPDATERS[c] for c in type(m).__mro__ if c in UPDATERS), None)


def _expected(m: nn.Module, shapes: dict[str, tuple]) -> dict[str, tuple]:
    """The shapes ``m``'s tensors must have once its size attributes are derived from
    ``shapes`` (the table's module types; empty for the others)."""
    if isinstance(m, nn.Linear):
        out, inp = shapes["weight"]
        return {"weight": (out, inp), "bias": (out,)}
    if isinstance(m, nn.modules.conv._ConvNd):
        w = shapes["weight"]
        per_group = m.out_channels // m.groups
        if m.groups > 1 and not m.transposed and w[0] % per_group:
            raise UsageError(f"{w[0]} output channels cannot keep {per_group} channels per "
                             f"group of the grouped conv")
        out = w[1] * m.groups if m.transposed else w[0]
        return {"weight": (w[0], w[1], *m.kernel_size), "bias": (out,)}
    if isinstance(m, nn.modules.batchnorm._NormBase):
        t = shapes.get("weight", shapes.get("running_mean"))
        n = (t or (m.num_features,))[0]
        return {k: (n,) for k in ("weight", "bias", "running_mean", "running_var")}
    if isinstance(m, nn.GroupNorm) and "weight" in shapes:
        c = shapes["weight"][0]
        if c * m.num_groups % m.num_channels or c * m.num_groups < m.num_channels:
            raise UsageError(f"{c} channels cannot keep {m.num_channels // m.num_groups} "
                             "channels per group of the GroupNorm")
        return {"weight": (c,), "bias": (c,)}
    if hasattr(m, "normalized_shape") and "weight" in shapes:
        return {"weight": shapes["weight"], "bias": shapes["weight"]}
    return {}


def _plan(model: nn.Module, state: Mapping[str, Tensor]) -> dict[int, tuple]:
    """Validate everything; ``{id(tensor): (tensor, new shape, [(owner, attr)], key)}`` of the
    tensors whose shape changes."""
    changes: dict[int, tuple] = {}
    shapes: dict[int, dict[str, tuple]] = {}
    for key, m, attr, t in _entries(model):
        saved = state.get(key)
        if not torch.is_tensor(saved):
            raise UsageError(f"the saved state has no tensor {key!r} ({tuple(t.shape)}); it "
                             "was saved from another model: build the model the checkpoint "
                             "was saved from")
        shape = tuple(saved.shape)
        if saved.ndim != t.ndim:
            raise UsageError(f"the saved {key!r} has shape {shape}, the model's "
                             f"{tuple(t.shape)}: a change of rank cannot come from removing "
                             "units; build the model the checkpoint was saved from")
        shapes.setdefault(id(m), {})[attr] = shape
        if shape == tuple(t.shape):
            continue
        prev = changes.get(id(t))
        if prev is not None and prev[1] != shape:
            raise UsageError(f"{key!r} and {prev[3]!r} are one tied tensor but the saved "
                             f"state gives them shapes {shape} and {prev[1]}")
        owners = (prev[2] if prev else []) + [(m, attr)]
        changes[id(t)] = (t, shape, owners, prev[3] if prev else key)
    modules = dict(model.named_modules())
    for name, m in modules.items():
        own = shapes.get(id(m), {})
        touched = any(t is not None and id(t) in changes
                      for t in (*m._parameters.values(), *m._buffers.values()))
        if not touched or _updater(m) in (None, True):
            continue
        try:
            expected = _expected(m, own)
        except UsageError as e:
            raise UsageError(f"the saved shapes of {name or 'the model'} cannot be expressed: "
                             f"{e}") from None
        for attr, shape in own.items():
            if attr in expected and tuple(expected[attr]) != shape:
                raise UsageError(
                    f"the saved {(name + '.' if name else '') + attr!r} has shape {shape}, "
                    f"but {type(m).__name__}'s other saved tensors need "
                    f"{tuple(expected[attr])}; a {type(m).__name__} cannot have those shapes")
    return changes


def _check_sizes(model: nn.Module, sizes: Mapping[str, Mapping[str, int]]) -> None:
    modules = dict(model.named_modules())
    for name, attrs in sizes.items():
        m = modules.get(name)
        for attr, value in attrs.items():
            if m is None or attr not in PLAIN_ATTRS or not isinstance(vars(m).get(attr), int):
                raise UsageError(f"the saved size {name}.{attr} does not exist in the model; "
                                 "build the model the checkpoint was saved from")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"the saved size {name}.{attr} = {value!r} is not a size")


@torch.no_grad()
def resize_to_state_(model: nn.Module, state: Mapping[str, Tensor],
                     sizes: Mapping[str, Mapping[str, int]] | None = None) -> list[str]:
    """Give every parameter and buffer of ``model`` the shape it has in ``state``, in place.

    Parameters
    ----------
    model : nn.Module
        Built as the model ``state`` was saved from was built (same modules, gates and
        hooks), before units were removed from that one.
    state : mapping
        Its ``state_dict`` (only shapes are read; load the values with
        ``model.load_state_dict(state)`` afterwards). Entries that are not parameters or
        persistent buffers (e.g. a generator's state) are left to ``load_state_dict``.
    sizes : mapping, optional
        :func:`size_attrs` of the saved model: the plain sizes set after the shapes.

    Returns
    -------
    list of str
        The ``state_dict`` keys whose shape changed.

    Raises
    ------
    UsageError
        A tensor missing from ``state``, a change of rank, tied tensors saved with two shapes,
        shapes that a module cannot have together (a Linear's bias against its weight, a
        grouped conv's channels per group, a kernel size), or a size attribute the model
        lacks; it names the tensor. Nothing is changed then.

    Notes
    -----
    Parameters keep their identity (their gradient is dropped): an optimizer built over the
    model still points at them; load its ``state_dict`` after this call. Size attributes of
    the table's module types (``in_features``/``out_features``, ``in_channels``/
    ``out_channels`` and ``groups``, ``num_features``, ``normalized_shape``, GroupNorm's
    channels, embedding sizes, attention dimensions) are derived from the new shapes.
    """
    changes = _plan(model, state)
    _check_sizes(model, sizes or {})
    modules = {id(m): m for c in changes.values() for m, _ in c[2]}
    before = {k: snapshot(m) for k, m in modules.items()}
    for t, shape, owners, _ in changes.values():
        new = torch.zeros(shape, dtype=t.dtype, device=t.device)
        if isinstance(t, nn.Parameter):
            t.grad = None
            _set_data(t, new)
        else:
            for m, attr in owners:
                m._buffers[attr] = new
    named = dict(model.named_modules())
    for name, attrs in (sizes or {}).items():
        for attr, value in attrs.items():
            setattr(named[name], attr, int(value))
    for k, m in modules.items():  # what a shape states wins over a saved size
        update(m, before[k], {})
    sync_config(model)
    return [c[3] for c in changes.values()]


__all__ = ["PLAIN_ATTRS", "resize_to_state_", "size_attrs"]
