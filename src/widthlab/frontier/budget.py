"""Widths of several groups under one budget: the cheapest next removal across groups.

Each group's ``obs`` frontier (:func:`widthlab.frontier.group.group_frontier`) gives the
increase of its consumers' mean squared output error at every removal. Errors of different
consumers are made comparable through their effect on the loss: to second order, a change
``dz`` of a consumer's outputs changes the loss by ``dz^T H_z dz / 2``; with the Gauss-Newton
Hessian replaced by its mean diagonal, estimated by the empirical Fisher ``h = mean E[g_z^2]``
(``g_z``: the per-sample gradient of the loss in the consumer's outputs), a removal that adds
``dE`` to the output error adds about ``h * dE / 2`` to the loss (:func:`loss_scale`).

:func:`allocate` then removes, one unit at a time, the unit of whichever group has the
cheapest next removal (predicted loss increase, divided by the parameters or multiply-adds it
saves when the target is one of those), until the target is met, and returns every group's
width and the curve of the predicted loss increase against the saving.

Example::

    plan = allocate({"ffn0": (fr0.costs, h0, 2 * 128), "ffn1": (fr1.costs, h1, 2 * 128)},
                    target="params", amount=0.5)
    plan.widths      # {"ffn0": 201, "ffn1": 311}
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from widthlab.errors import UsageError

__all__ = ["Allocation", "allocate", "fewest_removals", "loss_scale"]

TARGETS = ("loss", "params", "macs", "latency")


def loss_scale(grad_z: Tensor) -> float:
    """``h / 2`` for :func:`allocate`: half the mean over outputs of ``E[g^2]`` of per-sample
    loss gradients ``grad_z`` ``(rows, C)`` in a consumer's outputs (empirical Fisher)."""
    if grad_z.ndim < 2 or not grad_z.numel():
        raise UsageError("grad_z must be (rows, outputs) per-sample gradients")
    g = grad_z.reshape(-1, grad_z.shape[-1]).to(torch.float64)
    return float(g.square().mean()) / 2


@dataclass
class Allocation:
    """``widths``: kept units per group; ``removed``: (group, unit position in its removal
    order) in allocation order; ``curve``: ``(saving, predicted loss increase)`` after each
    removal (``saving``: units' savings summed, in the target's unit for params/macs);
    ``met``: whether a params/macs target was reached (``min_width`` may forbid it)."""

    widths: dict[str, int]
    met: bool = True
    removed: list[tuple[str, int]] = field(default_factory=list)
    curve: list[tuple[float, float]] = field(default_factory=list)


def _validate(groups, target: str, amount: float, min_width: int) -> None:
    if target not in TARGETS:
        raise UsageError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not groups:
        raise UsageError("allocate needs at least one group")
    if not (amount >= 0 and math.isfinite(amount)):
        raise UsageError(f"amount must be a finite number >= 0, got {amount!r}")
    if target != "loss" and amount > 1:
        raise UsageError(f"for target {target!r}, amount is the fraction to remove (0..1), "
                         f"got {amount}")
    if min_width < 1:
        raise UsageError(f"min_width must be >= 1, got {min_width}")
    for name, (costs, scale, saving) in groups.items():
        if not (scale >= 0 and saving > 0):
            raise UsageError(f"group {name!r}: scale must be >= 0 and the saving per unit > 0")
        if len(costs) < 1:
            raise UsageError(f"group {name!r} has no units")


def allocate(groups: Mapping[str, tuple[Sequence[float], float, float]], *, target: str = "loss",
             amount: float, min_width: int = 1) -> Allocation:
    """Choose every group's width by the cheapest next removal across groups.

    Parameters
    ----------
    groups : mapping name -> (costs, scale, saving)
        ``costs``: the group's ``obs`` removal costs in removal order (``GroupFrontier.costs``,
        the last, NaN, never used); ``scale``: loss per unit of output error
        (:func:`loss_scale`); ``saving``: parameters (or multiply-adds) one unit carries.
    target : {"loss", "params", "macs", "latency"}
        ``loss``: remove while the predicted loss increase stays within ``amount``;
        ``params``/``macs``/``latency``: remove until a fraction ``amount`` of the groups'
        total is gone, choosing by predicted loss increase per unit saved (``saving``: the
        parameters, multiply-adds or seconds one unit carries).
    amount : float
        The loss increase allowed, or the fraction of parameters / multiply-adds to remove.
    min_width : int
        No group goes below this many units.
    """
    _validate(groups, target, amount, min_width)
    sizes = {n: len(c) for n, (c, _, _) in groups.items()}
    total = sum(sizes[n] * s for n, (_, _, s) in groups.items())
    need = amount * total
    heap: list[tuple[float, str, int]] = []

    def push(name: str, i: int) -> None:
        costs, scale, saving = groups[name]
        if sizes[name] - i > min_width:
            delta = scale * float(costs[i])
            heapq.heappush(heap, (delta if target == "loss" else delta / saving, name, i))

    for name in groups:
        push(name, 0)
    plan = Allocation(dict(sizes))
    saved = lost = 0.0
    while heap and (target == "loss" or saved < need - 1e-12 * total):
        key, name, i = heap[0]
        costs, scale, saving = groups[name]
        delta = scale * float(costs[i])
        if target == "loss" and lost + delta > amount:
            break
        heapq.heappop(heap)
        lost += delta
        saved += saving
        plan.widths[name] -= 1
        plan.removed.append((name, i))
        plan.curve.append((saved, lost))
        push(name, i + 1)
    plan.met = target == "loss" or saved >= need - 1e-12 * total
    return plan


def fewest_removals(macs_after: Callable[[int], int], n: int, before: int, target: int,
                    unreachable: str) -> int:
    """The fewest ``k`` in ``[0, n]`` with ``macs_after(k) <= target`` (``macs_after`` not
    increasing in ``k``: the first ``k`` of a ranking removed), by bisection; 0 when
    ``before`` already meets the target. Raises :class:`UsageError` with ``unreachable``
    (formatted with ``floor``, the cost at ``n``) when even ``n`` removals do not."""
    lo, hi = 0, n
    if before <= target:
        return 0
    floor = macs_after(hi)
    if floor > target:
        raise UsageError(unreachable.format(floor=floor))
    while lo < hi:
        mid = (lo + hi) // 2
        if macs_after(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo
