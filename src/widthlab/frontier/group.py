"""The frontier of one group of units by every ranking people use, from one pass of activations.

:func:`group_frontier` takes the group's consumers (:mod:`widthlab.frontier.blocks`) and a
method, and returns the removal order, the cut consumers' weights at the requested widths and
their output error on separate evaluation rows. Methods (``U_M``: the unit's columns ``M`` in
every consumer; ``x``: the consumer's input rows; sums run over consumers and ``M``):

* ``obs``: greedy structured optimal brain surgeon with least-squares refit of every consumer
  (:mod:`widthlab.frontier.block_obs`; ZipLM, Kurtic et al. 2023). The only compensated one.
* ``magnitude``: Torch-Pruning's group L2 importance, ``sum W_{c,i}^2`` (Fang et al. 2023).
* ``taylor``: LLM-Pruner's first-order (vector-wise) importance ``|sum g_{c,i} W_{c,i}|`` with
  ``g = dL/dW`` on the calibration data (Ma et al. 2023); needs every consumer's ``grad``.
* ``activation``: Minitron's activation importance, the mean ``|x_i|`` over calibration rows,
  summed over the block (Muralidharan et al. 2024).
* ``wanda_sp``: structured Wanda, ``sum |W_{c,i}| * ||x_i||`` (``||x_i||``: root mean square
  over rows; An et al. 2024 after Sun et al. 2024).
* ``flap``: FLAP's fluctuation metric ``Var(x_i) * ||W_{:,i}||^2`` with its bias compensation:
  the removed columns' mean contribution ``W_R E[x_R]`` is added to the consumer's bias (An et
  al. 2024). A consumer without a bias gets one.
* ``variance``: the activation standard deviation ``sum std(x_i)`` (the journal's ``act_std``).
* ``random``: a seeded random order.

These formulas are implemented here from the papers (no code of theirs is used). The scores
are applied per group; the non-OBS methods leave the kept weights as they are.

Example::

    cons = [linear_consumer(mlp.down_proj, acts_calib)]
    ev = [linear_consumer(mlp.down_proj, acts_eval).stats]
    fr = group_frontier(cons, 512, "obs", ks=[384, 256, 128], eval=ev)
    fr.losses[256], fr.cuts[256].kept
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from widthlab.errors import UsageError
from widthlab.frontier.block_obs import BlockProblem, eliminate_blocks
from widthlab.frontier.blocks import BlockConsumer, RowStats
from widthlab.frontier.obs import damped_inverse
from widthlab.units.scores import ScoreGroup, Scorer, scorer

__all__ = ["GROUP_METHODS", "OBS", "GroupCut", "GroupFrontier", "group_frontier", "output_error",
           "unit_scores"]

#: The methods :func:`group_frontier` accepts.
GROUP_METHODS = ("obs", "magnitude", "taylor", "activation", "wanda_sp", "flap", "variance",
                 "random")


@dataclass
class GroupCut:
    """The group at ``k`` units: ``kept`` unit ids (ascending) and, per consumer, its weights
    ``(C, N)`` (removed columns zero) and bias (None when it has none and needs none)."""

    kept: Tensor
    weights: list[tuple[Tensor, Tensor | None]]


@dataclass
class GroupFrontier:
    """``order``: unit ids in removal order; ``costs``: for ``obs`` the calibration error
    increase of each removal, else the removed unit's score; ``cuts``: :class:`GroupCut` per
    requested width; ``losses`` / ``calib_losses``: the summed mean squared output error of the
    consumers against the uncut ones on the evaluation / calibration rows, per width."""

    method: str
    order: list[int]
    costs: list[float]
    cuts: dict[int, GroupCut] = field(default_factory=dict)
    losses: dict[int, float] = field(default_factory=dict)
    calib_losses: dict[int, float] = field(default_factory=dict)


class OBS(Scorer):
    """The compensated ranking: greedy structured OBS over the group's consumers
    (:func:`~widthlab.frontier.block_obs.eliminate_blocks`, every consumer refitted after each
    removal). ``scorer(group)`` scores a unit by when it goes (the first removed scores 0, the
    last ``n_units - 1``); :meth:`eliminate` gives the order, costs and refitted weights."""

    name, needs_stats = "obs", True

    def __init__(self, damp: float = 1e-6, cap: int = 128):
        self.damp, self.cap = damp, cap

    def eliminate(self, group, ks: Sequence[int] = ()):
        """The elimination of ``group`` (consumers with calibration ``stats``), snapshots at
        ``ks``."""
        probs = []
        for c in group.consumers:
            n = c.weight.shape[1]
            if c.bias is None:  # no intercept to refit: the Gram matrix of x alone
                g, w = c.stats.gram[:n, :n].clone(), c.weight
            else:
                g, w = c.stats.gram.clone(), torch.cat([c.weight, c.bias[:, None]], 1)
            probs.append(BlockProblem(damped_inverse(g, self.damp), w, c.cols, c.units))
        return eliminate_blocks(probs, int(group.n_units), cap=self.cap, keep_at=list(ks))

    def __call__(self, group, data=None) -> Tensor:
        order = self.eliminate(group).order
        out = torch.empty(int(group.n_units), dtype=torch.float64)
        out[torch.as_tensor(order)] = torch.arange(len(order), dtype=torch.float64)
        return out


def unit_scores(cons: Sequence[BlockConsumer], n_units: int, method: str, *, seed: int = 0
                ) -> Tensor:
    """Importance of every unit by a non-OBS ``method`` (higher: kept longer), ``(U,)``: the
    scorer of that name from :mod:`widthlab.units.scores` on the consumers' statistics."""
    if method not in GROUP_METHODS or method == "obs":
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(GROUP_METHODS)}")
    kw = {"seed": seed} if method == "random" else {}
    return scorer(method, **kw)(ScoreGroup(cons, n_units))


def output_error(c: BlockConsumer, w: Tensor, b: Tensor | None, stats: RowStats) -> float:
    """Mean over ``stats``' rows of ``||x (W' - W)^T + (b' - b)||^2`` (summed outputs)."""
    zero = torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    db = (zero if b is None else b) - (zero if c.bias is None else c.bias.to(w))
    d = torch.cat([w - c.weight.to(w), db[:, None]], 1)
    return float((d @ stats.gram.to(d) * d).sum())


def _removed_mask(c: BlockConsumer, kept: Tensor) -> Tensor:
    alive = torch.isin(c.units, kept.to(c.units.device))
    mask = torch.zeros(c.weight.shape[1], dtype=torch.bool)
    mask[c.cols[~alive].reshape(-1).cpu()] = True
    return mask


def _plain_cut(c: BlockConsumer, kept: Tensor, flap: bool) -> tuple[Tensor, Tensor | None]:
    rem = _removed_mask(c, kept).to(c.weight.device)
    w = c.weight.clone()
    b = None if c.bias is None else c.bias.clone()
    if flap:  # FLAP: the removed inputs' mean contribution moves into the bias
        shift = c.weight[:, rem] @ c.stats.mean.to(c.weight)[rem]
        b = shift if b is None else b + shift
    w[:, rem] = 0
    return w, b


def _obs(cons: Sequence[BlockConsumer], n_units: int, ks: list[int], damp: float, cap: int
         ) -> tuple[list[int], list[float], dict[int, GroupCut]]:
    res = OBS(damp, cap).eliminate(ScoreGroup(cons, n_units), ks)
    cuts = {}
    for k, (kept, ws) in res.snapshots.items():
        pairs = [(w, None) if c.bias is None else (w[:, :-1], w[:, -1])
                 for c, w in zip(cons, ws, strict=True)]
        cuts[k] = GroupCut(kept.cpu(), pairs)
    return res.order, res.costs, cuts


def _check(cons: Sequence[BlockConsumer], n_units: int, ks: list[int], eval_stats,
           allow_same: bool) -> None:
    if not cons:
        raise UsageError("group_frontier needs at least one consumer")
    if any(k < 1 or k > n_units for k in ks):
        raise UsageError(f"ks must lie in [1, {n_units}] (the group's units), got {ks}")
    if eval_stats is None:
        return
    if len(eval_stats) != len(cons):
        raise UsageError(f"eval needs one RowStats per consumer ({len(cons)}), got "
                         f"{len(eval_stats)}")
    for c, s in zip(cons, eval_stats, strict=True):
        if s.gram.shape != c.stats.gram.shape:
            raise UsageError(f"eval statistics of {c.module or 'a consumer'} have "
                             f"{s.gram.shape[0] - 1} columns, the calibration ones "
                             f"{c.stats.gram.shape[0] - 1}")
        if s.digest == c.stats.digest and not allow_same:
            raise UsageError("the calibration and evaluation activations are the same data: "
                             "a frontier calibrated on its evaluation set overstates every "
                             "method (FLAP issue #13); pass held-out evaluation data, or "
                             "allow_same=True to do it knowingly")


def group_frontier(consumers: Sequence[BlockConsumer], n_units: int, method: str = "obs", *,
                   ks: Sequence[int] | None = None, eval: Sequence[RowStats] | None = None,
                   allow_same: bool = False, damp: float = 1e-6, seed: int = 0,
                   cap: int = 128) -> GroupFrontier:
    """The removal order of a group's units by ``method`` and its cut consumers at ``ks``.

    Parameters
    ----------
    consumers : sequence of BlockConsumer
        Every consumer reading the group's units, with calibration statistics.
    n_units : int
        The number of units of the group (ids ``0..n_units-1``).
    method : str
        One of :data:`GROUP_METHODS` (see the module docstring).
    ks : sequence of int, optional
        Widths to cut at (default: 100/75/50/25% of the units and 1).
    eval : sequence of RowStats, optional
        Evaluation statistics, one per consumer (same columns): fills ``losses``.
    allow_same : bool
        Allow evaluation data identical to the calibration data (refused by default).
    damp, seed, cap
        Relative damping of the Gram matrices (``obs``), the seed of ``random``, the pending
        downdate rows of the elimination (speed only).
    """
    if method not in GROUP_METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(GROUP_METHODS)}")
    ks = sorted({n_units, *(max(1, round(n_units * f)) for f in (0.75, 0.5, 0.25)), 1}
                if ks is None else {int(k) for k in ks})
    _check(consumers, n_units, ks, eval, allow_same)
    if method == "obs":
        order, costs, cuts = _obs(consumers, n_units, ks, damp, cap)
    else:
        score = unit_scores(consumers, n_units, method, seed=seed)
        order = [int(i) for i in np.argsort(score.numpy(), kind="stable")]
        costs = [float(score[i]) for i in order]
        cuts = {}
        for k in ks:
            kept = torch.tensor(sorted(order[n_units - k:]), dtype=torch.long)
            cuts[k] = GroupCut(kept, [_plain_cut(c, kept, method == "flap") for c in consumers])
    fr = GroupFrontier(method, order, costs, cuts)
    for k, cut in cuts.items():
        pairs = list(zip(consumers, cut.weights, strict=True))
        fr.calib_losses[k] = sum(output_error(c, w, b, c.stats) for c, (w, b) in pairs)
        if eval is not None:
            fr.losses[k] = sum(output_error(c, w, b, s)
                               for (c, (w, b)), s in zip(pairs, eval, strict=True))
    return fr
