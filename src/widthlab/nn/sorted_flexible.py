"""A sorted flexible layer: the cut-off drops the least important neurons first.

The journal's first remedy for the width plateau ("Try to break the plateau", *sorting the
neurons according to a specific metric*): every ``every`` steps, reorder the layer's neurons by
an importance score so that the flexible cut-off ``sigmoid(k (x0 - i))`` puts the least useful
neurons in its gray zone and beyond.

No neuron has to move. Permuting neuron ``i`` to position ``pi(i)`` *together with* its incoming
weights and bias, its outgoing weights and their optimizer state changes nothing about what the
network computes or how it trains, except the position the cut-off sees. So the sorted layer is
the flexible layer evaluated at each neuron's **rank** in the chosen ordering:

    s_i = sigmoid(k (x0 - rank_i)),        rank_i in 0 .. N-1 (0 = most important)

with the ranks recomputed every ``every`` steps. The ranks are a permutation of ``0 .. N-1``, so
the size penalty (the integral of the scaler) is the flexible layer's, unchanged.
``tests/nn/test_sorted_flexible.py`` checks this against a model whose neurons, weights and Adam
moments are explicitly permuted at every re-sort.

Scores are measured on the training batches since the last re-sort (no extra pass over data),
on the ReLU outputs *before* the cut-off, so a neuron in the gray zone is still measured:

- ``"act_std"``: standard deviation of the neuron's activation over the window;
- ``"taylor"``: ``|E[a dL/da]|`` over the window, the first-order Taylor estimate of the loss
  change when the neuron is removed (a neuron far beyond ``x0`` gets almost no gradient and
  scores near 0, so it is not pulled back in: the journal's "new neurons" concern).

and smoothed across windows by an exponential moving average (``decay``), which trades
faithfulness for the stability the ordering-stability study asks for. Ties keep the current
order (the minimal move).

Example::

    from widthlab.engine import TrainConfig, train
    from widthlab.nn import ModelSpec
    from widthlab.nn.sorted_flexible import SortedFlexibleCutoff

    specs = [ModelSpec((256,), seed=s, variant="sorted-flexible") for s in range(3)]
    run_id = train(specs, TrainConfig(dataset="mnist", epochs=5),
                   modifiers=[lambda: SortedFlexibleCutoff(penalty=1e-3, every=50)])
"""

from __future__ import annotations

import torch
from torch import Tensor

from widthlab.errors import UsageError
from widthlab.nn.flexible import FlexibleCutoff, cutoff_scale

__all__ = ["SCORES", "SortedFlexibleCutoff", "ranks_within"]

SCORES = ("act_std", "taylor")


def ranks_within(score: Tensor, previous: Tensor, unit_model: Tensor, starts: Tensor) -> Tensor:
    """Rank of every unit within its model by decreasing ``score``, ties by ``previous`` rank.

    Parameters
    ----------
    score, previous : Tensor of shape (H,)
    unit_model : LongTensor of shape (H,)
        The model each unit belongs to (units of a model contiguous).
    starts : LongTensor of shape (M,)
        First unit of each model.

    Returns
    -------
    Tensor of shape (H,), float
        0 for the best unit of each model, up to its width - 1.
    """
    # stable sorts from the least to the most significant key: previous rank, score, model
    order = torch.argsort(previous, stable=True)
    order = order[torch.argsort(-score[order], stable=True)]
    order = order[torch.argsort(unit_model[order], stable=True)]
    rank = torch.empty_like(score)
    pos = torch.arange(len(order), device=score.device)
    rank[order] = (pos - starts[unit_model[order]]).to(score.dtype)
    return rank


class SortedFlexibleCutoff(FlexibleCutoff):
    """:class:`~widthlab.nn.flexible.FlexibleCutoff` whose cut-off runs over each neuron's rank
    in an importance ordering, re-sorted every ``every`` training steps.

    Parameters
    ----------
    score : {"act_std", "taylor"}
        The importance score the ordering follows (see the module docstring).
    every : int
        Re-sort every ``every`` steps (from the statistics of those steps).
    decay : float in [0, 1)
        Weight of the previous smoothed score in the moving average (0: the last window only).
    **kwargs
        The flexible cut-off's settings (``x0``, ``penalty``, ``k``, ``lr``, ...).

    Records per model and epoch, besides the flexible layer's: ``rank`` (the neurons' ranks,
    an array), ``resorts`` and ``rank_moves`` (mean ``|rank change|`` per neuron, summed over
    the epoch's re-sorts).
    """

    describe_aliases = {"sorted_by": "score"}

    def __init__(self, x0=None, *, score: str = "act_std", every: int = 50, decay: float = 0.5,
                 **kwargs):
        if kwargs.get("random_slope"):
            raise UsageError("the sorted flexible layer supports a fixed or learned slope only; "
                             "pass random_slope=False")
        super().__init__(x0, **kwargs)
        if score not in SCORES:
            raise UsageError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UsageError(f"every must be a positive number of steps, got {every!r}")
        if not 0.0 <= decay < 1.0:
            raise UsageError(f"decay must be in [0, 1), got {decay!r}")
        self.score, self.every, self.decay = score, every, float(decay)

    def build(self, bank) -> None:
        super().build(bank)
        h = bank.n_hidden
        self.register_buffer("rank", self.index.clone())  # (H,) starts as the identity
        self.register_buffer("smoothed", torch.zeros(h, dtype=torch.float64))  # (H,)
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))  # windows so far
        # window sums: a, a^2 (act_std) or a * dL/da (taylor), and the sample count
        self.register_buffer("s1", torch.zeros(h, dtype=torch.float64))
        self.register_buffer("s2", torch.zeros(h, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("window_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("starts", torch.tensor([a for a, _ in self.slices],
                                                    dtype=torch.long), persistent=False)
        self._moves = torch.zeros(self.n_models, dtype=torch.float64)
        self._resorts = 0

    def describe(self) -> dict:
        return {**super().describe(), "sorted_by": self.score, "every": self.every,
                "decay": self.decay, "scaler": "sigmoid(k (x0 - rank_i))"}

    # -------------------------------------------------------------- the cut-off over ranks
    def scale(self) -> Tensor:
        um = self.unit_model
        return cutoff_scale(self.rank, self.x0[um], self.current_slope()[um])  # (H,)

    def forward(self, a: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled():
            self._observe(a)
        return a * self.scale()

    @torch.no_grad()
    def _observe(self, a: Tensor) -> None:
        """Accumulate the window statistics of one training batch ``a`` (B, H)."""
        self.count += a.shape[0]
        if self.score == "act_std":
            self.s1 += a.sum(0, dtype=torch.float64)
            self.s2 += (a * a).sum(0, dtype=torch.float64)
        elif a.requires_grad:
            held = a.detach()

            def hook(grad: Tensor) -> None:  # grad: dL/da, (B, H)
                self.s1 += (held * grad).sum(0, dtype=torch.float64)

            a.register_hook(hook)

    def window_score(self) -> Tensor:
        """The score of the current window, ``(H,)`` float64 (before smoothing)."""
        n = self.count.clamp(min=1)
        if self.score == "act_std":
            mean = self.s1 / n
            return (self.s2 / n - mean * mean).clamp(min=0).sqrt()
        # the engine's loss is the batch mean: s1 sums E_batch[a dl/da] over the window's steps
        return (self.s1 / self.window_steps.clamp(min=1)).abs()

    @torch.no_grad()
    def resort(self) -> None:
        """Fold the window into the smoothed score and recompute every model's ranks."""
        if float(self.count) == 0:
            return
        w = self.window_score()
        first = int(self.seen) == 0
        self.smoothed.copy_(w if first else self.decay * self.smoothed + (1 - self.decay) * w)
        self.seen += 1
        new = ranks_within(self.smoothed, self.rank.double(), self.unit_model, self.starts)
        moved = (new - self.rank.double()).abs()
        self._moves += torch.zeros_like(self._moves).index_add_(
            0, self.unit_model.cpu(), moved.cpu()) / torch.tensor(
            [b - a for a, b in self.slices], dtype=torch.float64)
        self._resorts += 1
        self.rank.copy_(new.to(self.rank.dtype))
        self.s1.zero_()
        self.s2.zero_()
        self.count.zero_()
        self.window_steps.zero_()

    # -------------------------------------------------------------- engine hooks
    def before_step(self, step: int) -> None:
        super().before_step(step)
        if step > 0 and step % self.every == 0:
            self.resort()
        self.window_steps += 1

    def epoch_records(self) -> list[tuple[int, str, object]]:
        rows = super().epoch_records()
        rank = self.rank.detach().cpu().numpy()
        for m, (a, b) in enumerate(self.slices):
            rows += [(m, "rank", rank[a:b].astype("int64")), (m, "resorts", self._resorts),
                     (m, "rank_moves", float(self._moves[m]))]
        self._moves.zero_()
        self._resorts = 0
        return rows
