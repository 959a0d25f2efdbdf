"""Per-unit scores of a group: one small object per ranking, each formula written once.

A group's units are read by one or more *consumers*: a weight viewed as a matrix ``W``
``(C, N)`` whose columns ``cols[u]`` (a block: 1 column for a Linear's input, ``kh*kw`` for a
conv channel, ``head_dim`` for a head) read unit ``units[u]``. A :class:`Scorer` maps
``(group, data)`` to one float64 score per unit (higher: kept longer):

* ``group``: a :class:`ScoreGroup` ``(consumers, n_units)``, or anything with those two
  attributes; a consumer has ``weight``, ``cols``, ``units`` and optionally ``grad``
  (``dL/dW`` on the calibration data) and ``stats`` (the default ``data``);
* ``data``: one activation-statistics object per consumer (``mean``, ``var``, ``abs_mean``,
  the second moment as ``second`` or a ``gram`` whose diagonal holds it, and optionally
  ``act_grad``, the mean of ``x * dl/dx`` per column); :class:`Moments` builds one.

Scorers (formulas from the papers; no code of theirs is used):

* :class:`Magnitude` -- group L2, ``sum W^2`` over the unit's columns (Torch-Pruning);
* :class:`Taylor` -- ``|sum dL/dW * W|`` (LLM-Pruner), equal to ``|E[x dl/dx]|`` summed over
  the unit's columns (Molchanov et al. 2017's per-neuron form, from ``act_grad``);
* :class:`Activation` -- Minitron's mean ``|x|``; :class:`Variance` -- the journal's
  activation standard deviation (:func:`dead_units`: the journal's dead units, std 0);
* :class:`WandaSP` -- ``sum |W| * rms(x)``; :class:`Flap` -- ``Var(x) * ||W_{:,i}||^2``;
* :class:`Random` -- a seeded permutation;
* :class:`ExactCost` / :func:`removal_costs` -- the exact cross-entropy increase when a unit is
  zeroed, from one intact forward pass (the rank-one change of the consumer's output, then
  the rest of the network, then the loss). ``metrics.importance.exact_importance`` and
  ``nn.growth``'s benefit rule both call :func:`removal_costs`.

The compensated ranking (greedy structured OBS, the consumers refitted after every removal)
needs the elimination engine of :mod:`widthlab.frontier` and lives there as
``widthlab.frontier.group.OBS`` (same call).

Example::

    g = ScoreGroup([consumer], n_units=512)
    Magnitude()(g), Variance()(g, [Moments.of(acts)])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from widthlab.errors import UsageError

__all__ = ["SCORERS", "Activation", "Column", "ExactCost", "Flap", "Magnitude", "Moments",
           "Random", "ScoreGroup", "Scorer", "Taylor", "Variance", "WandaSP", "dead_units",
           "removal_costs", "scorer"]


@dataclass
class Column:
    """A consumer reading one column per unit: ``weight`` ``(C, N)``, unit ``i`` = column
    ``i`` (an MLP's next layer reading a hidden layer), optional ``grad``."""

    weight: Tensor
    grad: Tensor | None = None
    stats: Any = None

    @property
    def cols(self) -> Tensor:
        return torch.arange(self.weight.shape[1])[:, None]

    @property
    def units(self) -> Tensor:
        return torch.arange(self.weight.shape[1])


@dataclass
class ScoreGroup:
    """A group as its consumers read it: ``consumers`` and ``n_units`` (ids ``0..n-1``)."""

    consumers: Sequence[Any]
    n_units: int


#: relative size below which ``E[x^2] - E[x]^2`` is the formula's float64 rounding, not spread
VAR_ROUNDING = 1e-12


def population_var(mean: Tensor, second: Tensor) -> Tensor:
    """``E[x^2] - E[x]^2`` per column, with the difference's rounding removed: values at most
    :data:`VAR_ROUNDING` times ``E[x^2]`` (a unit stuck at a constant: std/rms <= 1e-6) are 0,
    so a constant unit is dead whatever the number of rows."""
    var = second - mean ** 2
    return var.masked_fill_(var <= VAR_ROUNDING * second, 0.0)


@dataclass
class Moments:
    """Activation statistics per column: ``mean``, ``second`` (mean square), ``abs_mean``
    (optional), ``act_grad`` (optional: mean of ``x * dl/dx``), ``n`` rows."""

    mean: Tensor
    second: Tensor
    abs_mean: Tensor | None = None
    act_grad: Tensor | None = None
    n: int = 0

    @property
    def var(self) -> Tensor:
        """Population variance of every column (see :func:`population_var`)."""
        return population_var(self.mean, self.second)

    @classmethod
    def of(cls, rows: Tensor) -> Moments:
        """The moments of ``rows`` (any rank; the last dimension is the columns), float64."""
        r = rows.reshape(-1, rows.shape[-1]).to(torch.float64)
        if not len(r):
            raise UsageError("no activation rows: give at least one sample")
        return cls(r.mean(0), (r * r).mean(0), r.abs().mean(0), None, len(r))


def _second(s) -> Tensor:
    sec = getattr(s, "second", None)
    return s.gram.diagonal()[:-1] if sec is None else sec


def _per_unit(cons: Sequence[Any], n_units: int, per_cols: Sequence[Tensor],
              reduce: str) -> Tensor:
    """``sum`` (or ``mean``) over consumers of ``per_col[cols].sum(block)`` per unit."""
    out = torch.zeros(n_units, dtype=torch.float64)
    cnt = torch.zeros(n_units, dtype=torch.float64)
    for c, per_col in zip(cons, per_cols, strict=True):
        per_col = per_col.to("cpu", torch.float64)
        out.index_add_(0, c.units.cpu(), per_col[c.cols.cpu()].sum(1))
        cnt.index_add_(0, c.units.cpu(), torch.ones(len(c.units), dtype=torch.float64))
    return out / cnt if reduce == "mean" else out


class Scorer:
    """One ranking: ``scorer(group, data=None)`` -> ``(n_units,)`` float64 scores (higher:
    kept longer). Subclasses give ``column(consumer, stats)``, the per-column values summed
    over a unit's block and over consumers (``reduce="mean"``: the block sums averaged over
    the consumers reading the unit)."""

    name = ""
    reduce = "sum"
    needs_stats = True

    def column(self, c, s) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self, scores: Tensor) -> Tensor:
        return scores

    def __call__(self, group, data: Sequence[Any] | None = None) -> Tensor:
        cons, n = list(group.consumers), int(group.n_units)
        if not cons:
            raise UsageError(f"{self.name}: the group has no consumer to score it by")
        stats = [getattr(c, "stats", None) for c in cons] if data is None else list(data)
        if len(stats) != len(cons):
            raise UsageError(f"{self.name}: data needs one statistics object per consumer "
                             f"({len(cons)}), got {len(stats)}")
        if self.needs_stats and any(s is None for s in stats):
            raise UsageError(f"{self.name} scores from activations: pass data= (one Moments "
                             "or RowStats per consumer) or consumers with .stats")
        per = [self.column(c, s) for c, s in zip(cons, stats, strict=True)]
        return self.finish(_per_unit(cons, n, per, self.reduce))


class Magnitude(Scorer):
    """Group L2 importance: ``sum W^2`` over every consumer column of the unit."""

    name, needs_stats = "magnitude", False

    def column(self, c, s) -> Tensor:
        return c.weight.square().sum(0)


class Taylor(Scorer):
    """First-order Taylor importance ``|sum_{c,i in unit} dL/dW_{c,i} W_{c,i}|``; from the
    consumers' ``grad`` or, without one, the data's ``act_grad`` (``E[x dl/dx]``: the same
    quantity, summed over the block before the absolute value)."""

    name, needs_stats = "taylor", False

    def column(self, c, s) -> Tensor:
        g = getattr(c, "grad", None)
        if g is not None:
            return (g * c.weight).sum(0)
        ag = getattr(s, "act_grad", None)
        if ag is None:
            raise UsageError("method 'taylor' needs every consumer's grad (dL/dW of its "
                             "weight on the calibration data); pass grad= to the consumer "
                             "builder (or data with act_grad)")
        return ag

    def finish(self, scores: Tensor) -> Tensor:
        return scores.abs()


class Activation(Scorer):
    """Minitron's activation importance: mean ``|x|`` over the calibration rows."""

    name, reduce = "activation", "mean"

    def column(self, c, s) -> Tensor:
        return s.abs_mean


class Variance(Scorer):
    """The journal's activation statistic: the standard deviation of ``x`` (ddof 0)."""

    name, reduce = "variance", "mean"

    def column(self, c, s) -> Tensor:
        return s.var.sqrt()


class WandaSP(Scorer):
    """Structured Wanda: ``sum |W_{c,i}| * sqrt(E[x_i^2])``."""

    name = "wanda_sp"

    def column(self, c, s) -> Tensor:
        return c.weight.abs().sum(0) * _second(s).sqrt()


class Flap(Scorer):
    """FLAP's fluctuation: ``Var(x_i) * ||W_{:,i}||^2`` (its bias shift is the cut's)."""

    name = "flap"

    def column(self, c, s) -> Tensor:
        return s.var * c.weight.square().sum(0)


class Random(Scorer):
    """A seeded random permutation of the units (as floats)."""

    name, needs_stats = "random", False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, group, data=None) -> Tensor:
        n = int(group.n_units)
        return torch.from_numpy(np.random.default_rng(self.seed).permutation(n).astype(float))


def dead_units(group, data: Sequence[Any] | None = None) -> Tensor:
    """The journal's dead units: zero activation standard deviation on the data, ``(U,)``
    bool."""
    return Variance()(group, data) == 0


# ------------------------------------------------------------------------------ exact cost
@torch.no_grad()
def removal_costs(logits: Tensor, act: Tensor, weight: Tensor, y: Tensor, *,
                  linear: bool = True, chunk: int = 2 ** 21,
                  rest: Callable[[Tensor], Tensor] | None = None,
                  dtype: torch.dtype = torch.float32, reduce: str = "mean",
                  classes_first: bool = False, ce0: Tensor | None = None) -> Tensor:
    """Exact increase of the cross-entropy when each unit is removed, ``(w,)``.

    Removing unit ``i`` takes ``act[:, i] * weight[:, i]`` off the consumer's output ``z``;
    the logits of every "one unit removed" network follow from the one intact forward pass:
    ``rest(z - act_i w_i)`` (``rest`` None: ``z`` are the logits, ``O(N w C)`` in all). A
    unit silent on a sample changes nothing there (exactly 0).

    Parameters
    ----------
    logits : Tensor of shape (N, D)
        The consumer's output (the logits when ``rest`` is None).
    act : Tensor of shape (N, w)
        The units' (gated) activations.
    weight : Tensor of shape (D, w)
        Their outgoing weights (the consumer's columns).
    y : Tensor of shape (N,)
    linear : bool
        False: minus the first-order term ``-G_i . w_i`` (``rest`` None only).
    chunk : int
        Elements of one temporary ``(N, k, D)`` block.
    rest : callable, optional
        The network after the consumer: ``(N, k, D)`` corrected outputs to ``(N, k, C)``
        logits, or to ``(C, N, k)`` with ``classes_first``.
    dtype : torch.dtype
        Compute precision of the activations and of the result.
    reduce : str
        ``"mean"`` over the samples, or ``"sum"`` (to accumulate sample blocks).
    classes_first : bool
        Lay the corrected logits out ``(C, N, k)`` (one reused buffer, class reductions over
        contiguous slabs: faster for many units); the values are the same formula's, the
        rounding of the class sums can differ in the last bit.
    ce0 : Tensor of shape (N,), optional
        The intact network's per-sample loss (default: from ``logits``, ``rest`` None).
    """
    n, c = logits.shape
    out = torch.empty(weight.shape[1], dtype=dtype, device=logits.device)
    step = max(1, chunk // max(n * c, 1))
    if ce0 is None:
        if rest is not None:
            raise UsageError("removal_costs with rest= needs ce0 (the intact per-sample loss)")
        zy = logits.gather(1, y[:, None])  # (N, 1)
        ce0 = torch.logsumexp(logits, -1, keepdim=True) - zy  # (N, 1)
    else:
        ce0 = ce0.reshape(n, 1)
    buf = torch.empty(c * n * min(step, weight.shape[1]) if classes_first and rest is None
                      else 0, dtype=dtype, device=logits.device)
    for j in range(0, weight.shape[1], step):
        h = act[:, j:j + step].to(dtype)  # (N, k)
        if classes_first:
            ce = _ce_classes_first(logits, h, weight[:, j:j + step], y, rest, buf)
        else:
            z = logits[:, None, :] - h[:, :, None] * weight[:, j:j + step].t()[None]  # (N,k,D)
            if rest is None:
                wy = weight[:, j:j + step][y]  # (N, k): each sample's target-class weights
                ce = torch.logsumexp(z, -1) - (zy - h * wy)
            else:
                z = rest(z)  # (N, k, C)
                ce = torch.logsumexp(z, -1) - z.gather(2, y[:, None, None].expand(
                    n, z.shape[1], 1))[:, :, 0]
        delta = ce.sub_(ce0).masked_fill_(h == 0, 0.0)
        out[j:j + step] = delta.mean(0) if reduce == "mean" else delta.sum(0)
    if not linear:  # minus the first-order term -G_i . w_i (G the outgoing weights' gradient)
        if rest is not None:
            raise UsageError("linear=False needs the logits themselves (rest=None)")
        delta = torch.softmax(logits, -1)
        delta[torch.arange(n, device=delta.device), y] -= 1.0
        first = ((delta.t() @ act.to(dtype)) * weight).sum(0)  # summed over the samples
        out += first / n if reduce == "mean" else first
    return out


def _ce_classes_first(logits: Tensor, h: Tensor, w: Tensor, y: Tensor, rest, buf: Tensor
                      ) -> Tensor:
    """Per-(sample, unit) cross-entropy of the corrected logits laid out ``(C, N, k)``:
    ``logits - h * w`` written into ``buf`` (``rest`` None) or ``rest`` of the corrected
    outputs; the class reductions run over contiguous ``(N, k)`` slabs."""
    if rest is None:
        z = buf[:logits.shape[1] * h.numel()].view(logits.shape[1], *h.shape)
        torch.addcmul(logits.t()[:, :, None], w[:, None, :], h, value=-1, out=z)  # (C, N, k)
    else:
        z = rest(logits[:, None, :] - h[:, :, None] * w.t()[None])
    picked = z.gather(0, y.view(1, -1, 1).expand(1, *z.shape[1:]))[0]  # (N, k)
    m = z.amax(0)
    return z.sub_(m).exp_().sum(0).log_().add_(m).sub_(picked)


class ExactCost(Scorer):
    """The exact loss increase of removing each unit (:func:`removal_costs`), as a score.

    ``data`` is ``(logits, act, y)`` (consumer output ``(N, D)``, the units' activations
    ``(N, U)``, labels); the group's single consumer gives the outgoing weights. ``rest``
    (optional) maps corrected consumer outputs to logits."""

    name, needs_stats = "exact", False

    def __init__(self, rest: Callable[[Tensor], Tensor] | None = None,
                 dtype: torch.dtype = torch.float64):
        self.rest, self.dtype = rest, dtype

    def __call__(self, group, data=None) -> Tensor:
        cons = list(group.consumers)
        if len(cons) != 1 or data is None or len(data) != 3:
            raise UsageError("exact: one consumer and data=(logits, act, y) are needed")
        logits, act, y = data
        w = cons[0].weight.to(self.dtype)
        z = logits.to(self.dtype)
        ce0 = None
        if self.rest is not None:
            z0 = self.rest(z[:, None, :])[:, 0]
            ce0 = torch.logsumexp(z0, -1) - z0.gather(1, y[:, None])[:, 0]
        return removal_costs(z, act, w, y, rest=self.rest, dtype=self.dtype,
                             ce0=ce0).double().cpu()


#: Uncompensated scorers by method name (``Random`` takes a seed).
SCORERS: dict[str, type[Scorer]] = {
    s.name: s for s in (Magnitude, Taylor, Activation, Variance, WandaSP, Flap, Random,
                        ExactCost)}


def scorer(name: str, **kw) -> Scorer:
    """The scorer of ``name`` (one of :data:`SCORERS`), built with ``kw``."""
    if name not in SCORERS:
        raise UsageError(f"unknown scorer {name!r}; choose one of {', '.join(SCORERS)}")
    return SCORERS[name](**kw)
