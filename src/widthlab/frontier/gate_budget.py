"""Learned widths to a multiply-add budget: the gates choose which units go, a schedule how many.

A price alone sets the widths only indirectly: too low and no gate reaches 0 in the epochs
there are, too high and a whole group empties (seen on ResNet-20: CHANGELOG, issue 32). Here
the price shapes the gates and a schedule sets the number of multiply-adds:

- :func:`relative_gate_scores`: every unit's evaluation gate over its group's largest
  (``scale(g) / max scale(g)``, in ``[0, 1]``): scale-free, so a group that a BatchNorm lets
  shrink as a whole is not ranked below one that did not;
- :func:`prune_gates_to_macs_`: the units of lowest score, ranked over the whole network,
  are closed (their gate set exactly to 0) and removed with
  :func:`~widthlab.nn.surgery.shrink_` (optimizer state sliced) until the model costs at
  most ``target_macs`` multiply-adds per sample (the fewest removals, by bisection on trial
  copies; :func:`widthlab.metrics.cost.count_macs`); every group keeps at least its floor;
- :class:`MacBudget` and :class:`MacBudgetRun`: a :class:`~widthlab.engine.module_run.ModuleRun`
  that after each priced epoch ``k`` of ``n`` (the epochs between the warm-up and the free
  epochs of its :class:`~widthlab.engine.modules.ModuleConfig`) prunes to
  ``macs0 / ratio ** (k / n)``: geometric steps to ``ratio`` times fewer multiply-adds than
  the model started with, reached at the last priced epoch; the free epochs then train the
  final widths. Which groups lose units is what the gates learned under the price. With
  ``MacBudget(per_epoch=m)`` the same schedule is cut into ``m`` smaller prunes per priced
  epoch (after evenly spaced optimizer steps, the last at the epoch's end).

Example::

    budget = MacBudget(ratio=2.7, min_frac=0.125)
    run = MacBudgetRun(build_gated_model, splits, ModuleConfig(epochs=8, warmup_epochs=1,
                       free_epochs=3, price=0.05, ...), budget=budget, describe={...})
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from widthlab.engine.module_run import ModuleRun
from widthlab.engine.spec import without_defaults
from widthlab.errors import UsageError
from widthlab.frontier.budget import fewest_removals
from widthlab.metrics.cost import count_macs
from widthlab.nn.surgery import shrink_
from widthlab.nn.surgery.unit_gates import unit_gates

SCORES = ("max", "median", "robust_z")
__all__ = ["SCORES", "MacBudget", "MacBudgetRun", "prune_gates_to_macs_",
           "relative_gate_scores"]


@dataclass(frozen=True)
class MacBudget:
    """A multiply-add schedule for :class:`MacBudgetRun`.

    Parameters
    ----------
    ratio : float
        The model ends with at most its starting multiply-adds over ``ratio`` (> 1).
    min_frac : float
        Every gated group keeps at least ``ceil(min_frac * its starting width)`` units (at
        least 1), in ``(0, 1]``.
    multiple : int
        A group the budget cuts keeps a multiple of this many units (the units leave in
        blocks of ``multiple``, a block ranked by its best unit; the floor rounded up to a
        multiple): widths that CPU convolution kernels run efficiently (oneDNN blocks
        channels by 8 or 16). 1: any width.
    score : {"max", "median", "robust_z"}
        How a unit's gate is ranked against other groups (:func:`relative_gate_scores`):
        over its group's largest gate, over its group's median (robust to one runaway gate:
        a relative gate's price is lowered by growing the group's largest gate, which scales
        every other unit of the group down alike), or as a robust z-score within its group
        (every group then loses the units unusually low for that group).
    per_epoch : int
        Prunes per priced epoch: the schedule's geometric steps are spread over ``per_epoch``
        evenly spaced points of every priced epoch (the last at its end), so that each prune
        removes less; 1: one prune at the end of each priced epoch.
    """

    ratio: float
    min_frac: float = 0.125
    multiple: int = 1
    per_epoch: int = 1
    score: str = "max"

    def __post_init__(self) -> None:
        if not (self.ratio > 1 and math.isfinite(self.ratio)):
            raise UsageError(f"the MAC budget's ratio must be a finite number > 1, got "
                             f"{self.ratio}")
        if not 0 < self.min_frac <= 1:
            raise UsageError(f"min_frac must be in (0, 1], got {self.min_frac}")
        if isinstance(self.multiple, bool) or not isinstance(self.multiple, int) \
                or self.multiple < 1:
            raise UsageError(f"multiple must be a positive int (1: any width), got "
                             f"{self.multiple!r}")
        if isinstance(self.per_epoch, bool) or not isinstance(self.per_epoch, int) \
                or self.per_epoch < 1:
            raise UsageError(f"per_epoch must be a positive int (prunes per priced epoch), "
                             f"got {self.per_epoch!r}")
        if self.score not in SCORES:
            raise UsageError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")

    def identity(self) -> dict:
        """The fields that identify the schedule: every field, less the later ones
        (``per_epoch``, ``score``) at their defaults, so that a run's id does not change when
        they are not set."""
        return without_defaults(asdict(self), _LATER)

    def target(self, macs0: int, step: int, steps: int) -> int:
        """Multiply-adds allowed after priced epoch ``step`` of ``steps``:
        ``macs0 / ratio ** (step / steps)`` (rounded down)."""
        return int(macs0 / self.ratio ** (step / steps))


# fields added after runs were stored: in the identity only when set
_LATER = {"per_epoch": 1, "score": "max"}


def relative_gate_scores(model: nn.Module, by: str = "max") -> dict[str, Tensor]:
    """Per units-core gate (its key): every unit's evaluation gate ``s`` over the group's
    largest (``by="max"``: float64 in ``[0, 1]``) or over the group's median
    (``by="median"``, the lower median of an even count), all 0 when that divisor is 0; or
    ``(s - median(s)) / median(|s - median(s)|)`` (``by="robust_z"``; all 0 when that
    deviation is 0)."""
    if by not in SCORES:
        raise UsageError(f"by must be one of {', '.join(SCORES)}, got {by!r}")
    out = {}
    for gate in unit_gates(model):
        s = gate.kind.scale(gate.gate.detach()).to(torch.float64).cpu()
        if s.numel() and by == "robust_z":
            s = s - s.median()
            top = float(s.abs().median())
        elif s.numel():
            top = float(s.max() if by == "max" else s.median())
        else:
            top = 0.0
        out[gate.key] = s / top if top > 0 else torch.zeros_like(s)
    return out


def _ranking(scores: dict[str, Tensor], keep: dict[str, int],
             multiple: int = 1) -> list[tuple[float, str, tuple[int, ...]]]:
    """Every group's removable units in blocks, lowest score first (ties: key, units): a
    block is ``multiple`` units of the group's lowest (the first one the group's width
    modulo ``multiple``, so that its width becomes a multiple), scored by its best unit;
    a group keeps at least its ``keep`` best units, rounded up to a multiple."""
    rows = []
    for key, s in scores.items():
        order = torch.argsort(s, descending=True, stable=True).tolist()[::-1]  # lowest first
        width = len(order)
        floor = -(-max(1, keep.get(key, 1)) // multiple) * multiple
        start = 0
        while width - start > floor:
            size = (width - start) % multiple or multiple
            if width - start - size < floor:
                break
            block = tuple(order[start:start + size])
            rows.append((max(float(s[u]) for u in block), key, block))
            start += size
    rows.sort()
    return rows


def _close(model: nn.Module, rows, k: int) -> None:
    gates = {g.key: g for g in unit_gates(model)}
    with torch.no_grad():
        for _, key, units in rows[:k]:
            g = gates[key].gate
            for u in units:
                g[u] = gates[key].kind.closed(g[u])


def _macs_after(model: nn.Module, example, rows, k: int) -> int:
    trial = copy.deepcopy(model)
    _close(trial, rows, k)
    shrink_(trial)
    return count_macs(trial, example)


def prune_gates_to_macs_(model: nn.Module, example, *, target_macs: int,
                         optimizer: torch.optim.Optimizer | None = None,
                         keep: dict[str, int] | None = None, multiple: int = 1,
                         score: str = "max") -> dict:
    """Remove the units of lowest :func:`relative_gate_scores`, ranked over the whole
    network, until ``count_macs(model, example) <= target_macs``; in place.

    Parameters
    ----------
    model : nn.Module
        Gated with ``gate_layers(model, groups=..., example=...)``.
    example : Tensor
        A small input batch (multiply-adds per sample).
    target_macs : int
    optimizer : torch.optim.Optimizer, optional
        Its state is sliced with the parameters (:func:`~widthlab.nn.surgery.shrink_`).
    keep : dict, optional
        Gate key -> the fewest units the group keeps (default and at least 1).
    multiple : int
        Units leave in blocks (:class:`MacBudget`'s ``multiple``): a group that loses units
        keeps a multiple of this many; 1: unit by unit.
    score : {"max", "median", "robust_z"}
        The ranking of :func:`relative_gate_scores` (:class:`MacBudget`'s ``score``).

    Returns
    -------
    dict
        ``macs_before``, ``macs``, ``removed`` (gate key -> units removed) and
        ``threshold`` (the largest score removed; None when nothing was).

    Raises
    ------
    UsageError
        No units-core gates; ``target_macs`` not a positive int or below what the floors
        cost (checked before the model is changed).
    """
    if isinstance(target_macs, bool) or not isinstance(target_macs, int) or target_macs < 1:
        raise UsageError(f"target_macs must be a positive int (multiply-adds per sample), "
                         f"got {target_macs!r}")
    if not unit_gates(model):
        raise UsageError("prune_gates_to_macs_ ranks units-core gates: call gate_layers(model, "
                         "groups=..., example=...) first")
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise UsageError(f"multiple must be a positive int (1: unit by unit), got {multiple!r}")
    keep = {k: max(1, int(v)) for k, v in (keep or {}).items()}
    rows = _ranking(relative_gate_scores(model, score), keep, multiple)
    before = count_macs(model, example)
    lo = fewest_removals(
        lambda k: _macs_after(model, example, rows, k), len(rows), before, target_macs,
        f"target_macs={target_macs:,} cannot be reached: with every group at its floor the "
        "model still costs {floor:,} multiply-adds; lower the floor (min_frac) or the ratio")
    removed: dict[str, int] = {}
    if lo:
        gates = {g.key: g.gate for g in unit_gates(model)}
        saved = {k: g.detach().clone() for k, g in gates.items()}
        _close(model, rows, lo)
        try:
            removed = shrink_(model, optimizer)  # validates before it cuts
        except BaseException:
            with torch.no_grad():  # the closed gates opened again: nothing changed
                for k, g in gates.items():
                    g.copy_(saved[k])
            raise
    return {"macs_before": before, "macs": count_macs(model, example),
            "removed": {k: v for k, v in removed.items() if v},
            "threshold": rows[lo - 1][0] if lo else None}


class MacBudgetRun(ModuleRun):
    """A :class:`~widthlab.engine.module_run.ModuleRun` whose shrink after each priced epoch
    also prunes to its :class:`MacBudget`'s schedule (:func:`prune_gates_to_macs_`; see the
    module docstring). ``budget`` is part of the run's identity (``describe["mac_budget"]``);
    the other arguments are :class:`ModuleRun`'s.
    """

    def __init__(self, model: nn.Module | Callable[[], nn.Module], data, cfg, *,
                 budget: MacBudget, describe: dict | None = None, **kwargs):
        steps = cfg.epochs - cfg.free_epochs - cfg.warmup_epochs
        if steps < 1 or not cfg.shrink:
            raise UsageError("a MAC budget prunes after the priced epochs: the config needs "
                             "shrink=True and at least one epoch between warmup_epochs and "
                             f"free_epochs (got {cfg.epochs} epochs, {cfg.warmup_epochs} "
                             f"warm-up, {cfg.free_epochs} free, shrink={cfg.shrink})")
        self.budget, self.steps = budget, steps
        super().__init__(model, data, cfg, describe=describe, **kwargs)
        # the budget joins the model's identity (a factory stays a factory: it is built once,
        # on the run's device, and its code is in the hash)
        self.describe = {**self.describe, "mac_budget": budget.identity()}
        self.spec = self._spec(self.spec.code)
        self.run_id = self.spec.run_id()
        if not unit_gates(self.model):
            raise UsageError("a MAC budget ranks units-core gates: gate the model with "
                             "gate_layers(model, groups=..., example=...)")
        self.example = self.data.train.x[:2]
        self.macs0 = count_macs(self.model, self.example)
        self.keep = {g.key: max(1, math.ceil(budget.min_frac * g.width))
                     for g in unit_gates(self.model)}
        self.pruned: dict = {}
        self._mid: dict[str, int] = {}  # units removed by the prunes within this epoch

    def target_at(self, epoch: int, point: int | None = None) -> int | None:
        """The multiply-adds allowed at prune ``point`` (1..``per_epoch``; default the last,
        the epoch's end) of ``epoch`` (None: not a priced epoch)."""
        k = epoch - self.cfg.warmup_epochs
        if not 1 <= k <= self.steps:
            return None
        m = self.budget.per_epoch
        j = m if point is None else point
        return self.budget.target(self.macs0, (k - 1) * m + j, self.steps * m)

    def prune_points(self) -> dict[int, int]:
        """Optimizer step within a priced epoch -> the prune point after it (the points but
        the last, which :meth:`shrink` takes at the epoch's end)."""
        m, n = self.budget.per_epoch, self.steps_per_epoch()
        return {max(1, round(j * n / m)): j for j in range(1, m)}

    def train_epoch(self, epoch: int, advance):
        self._mid = {}
        points = self.prune_points() if self.target_at(epoch) is not None else {}
        if not points:
            return super().train_epoch(epoch, advance)
        done = [0]

        def step(n: int) -> None:  # after each optimizer step of the epoch
            done[0] += n
            j = points.get(done[0]) if n == 1 else None
            if j is not None:
                self._prune(self.target_at(epoch, j))
            advance(n)

        return super().train_epoch(epoch, step)

    def _prune(self, target: int) -> None:
        """Prune to ``target`` multiply-adds; the units removed add to this epoch's count."""
        self.pruned = prune_gates_to_macs_(self.model, self.example, target_macs=target,
                                           optimizer=self.opt, keep=self.keep,
                                           multiple=self.budget.multiple,
                                           score=self.budget.score)
        for key, n in self.pruned["removed"].items():
            self._mid[key] = self._mid.get(key, 0) + n

    def shrink(self, epoch: int) -> dict[str, int]:
        removed = super().shrink(epoch)
        target = self.target_at(epoch)
        if target is not None:
            self._prune(target)
        for key, n in self._mid.items():  # this epoch's prunes, the one just made included
            removed[key] = removed.get(key, 0) + n
        self._mid = {}
        return removed
