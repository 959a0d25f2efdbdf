"""Resume a shrunk gated model: cut a freshly gated copy down to the units a checkpoint kept.

A checkpoint of a model shrunk by :func:`~widthlab.nn.surgery.shrink_` has smaller tensors
than the same model built afresh, so ``load_state_dict`` needs the layout first. Gates of a
stochastic kind record, in their ``unit_ids`` buffer, which of their original units they
still have (saved in the ``state_dict``); :func:`restore_layout_` reads them and removes the
other units from the fresh model (layers, BatchNorms, consumers, gates, optimizer state)
in the order :func:`shrink_` removed them, after which the checkpoint loads.

Example::

    model = build()                                   # the same construction, same gates
    ckpt = torch.load(path)
    restore_layout_(model, ckpt["model"])
    model.load_state_dict(ckpt["model"])              # noise generators included
    opt = make_optimizer(model); opt.load_state_dict(ckpt["optimizer"])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.surgery.graph import plan_groups
from widthlab.nn.surgery.shrink import _apply


def _names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def restore_layout_(model: nn.Module, state: Mapping[str, Tensor],
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Remove from ``model`` every gated unit that ``state`` (a ``state_dict`` of a shrunk
    copy of it) no longer has; returns ``{gate key: units removed}``.

    Parameters
    ----------
    model : nn.Module
        Gated exactly as the copy was when it started (same gates, full widths).
    state : mapping
        The copy's ``state_dict``; each gate's ``unit_ids`` entry says which units it kept.
    optimizer : torch.optim.Optimizer, optional
        Sliced alike (usually made after this call, then loaded from the checkpoint).

    Raises
    ------
    UsageError
        A gate of a kind that records no units (``"l1"``) whose width differs from the
        checkpoint's, a gate missing from ``state``, or kept units the model does not have.
        Nothing is changed then.
    """
    groups = plan_groups(model)
    names = _names(model)
    wanted = []
    for group in groups:
        gate, prefix = group.gate, names[id(group.gate)]
        if f"{prefix}.gate" not in state:
            raise UsageError(f"the checkpoint has no gate {prefix!r}; restore it into the "
                             "model it was saved from (the same gates)")
        ids = state.get(f"{prefix}.unit_ids")
        if ids is None:
            if state[f"{prefix}.gate"].shape[0] != gate.width:
                raise UsageError(f"gate {gate.key!r} is of kind {gate.kind.name!r}, which does "
                                 "not record its units; a shrunk checkpoint of it cannot be "
                                 "restored (use a stochastic kind, or save the whole model)")
            wanted.append(None)
            continue
        ids = ids.to(gate.unit_ids.device)
        if not bool(torch.isin(ids, gate.unit_ids).all()):
            raise UsageError(f"the checkpoint's gate {gate.key!r} keeps units the model does "
                             "not have; restore into a freshly gated model")
        wanted.append(ids)
    modules = dict(model.named_modules())
    removed = {}
    for group, ids in zip(groups, wanted, strict=True):
        if ids is None:
            removed[group.gate.key] = 0
            continue
        keep = torch.isin(group.gate.unit_ids, ids)  # an earlier cut may have taken some
        removed[group.gate.key] = int((~keep).sum())
        if not bool(keep.all()):
            _apply(modules, group, keep.nonzero().flatten(), optimizer)
    return removed


__all__ = ["restore_layout_"]
