"""A layer that grows and shrinks under one price per neuron: sparsifier gates plus a growth rule.

:class:`GrowingGate` is a :class:`~widthlab.nn.gated.SparsifierGate` (every first-layer unit
multiplied by ``relu(g)``, the loss charged ``lambda * sum(relu(g))``, dead units removed by the
engine) that also *adds* units. Every ``every`` training steps the engine hands it the recent
batches (the last ``window`` minibatches) and it proposes new units for each model:

1. the back-propagated error at the logits, ``delta = softmax(logits) - onehot(y)`` ``(N, C)``,
   is measured with the current weights on those ``N`` samples;
2. ``candidates`` incoming weights ``(w, b)`` are drawn per model (``init``):

   * ``"random"``: ``nn.Linear``'s initialisation;
   * ``"gradmax"`` (GradMax-style): the top right singular vectors of ``delta.T @ x / N``
     ``(C, in)`` (both signs), the directions whose zero-initialised unit gets the largest
     outgoing gradient to first order, and random mixtures of them weighted by their singular
     values; norm that of ``nn.Linear``'s rows (``1/sqrt(3)``), bias 0;
   * ``"split"``: copies of live units' incoming weights with 10% noise (a unit split in two,
     the copy's outgoing weights starting at zero);
   * ``"none"``: this model never grows (a plain sparsifier, for comparisons);

3. each candidate ``c`` is scored by the gradient of the loss with respect to its zero
   outgoing weights, exactly (ReLU included): ``G_c = delta.T @ relu(x @ w_c + b_c) / N``
   ``(C,)``. Adam's first steps move each outgoing weight by about ``out_lr`` against the
   sign of its gradient, so the *predicted decrease of the loss per step* is
   ``out_lr * ||G_c||_1``; with ``debias`` the part a candidate with no real gradient would
   show on ``N`` samples, ``sqrt(2 / pi) * sum_c sd_c`` (``sd_c`` the standard error of
   ``G_c`` over the samples), is subtracted first (else any unit looks useful on a finite
   sample);
4. a candidate is added when that decrease exceeds its *price per step* ``lambda / horizon``,
   where ``horizon`` defaults to ``1 / gate_lr``, the number of steps a new unit's gate
   (starting at 1, pushed down by the penalty at Adam's speed ``gate_lr``) survives before its
   outgoing weights have bought anything; equivalently, the loss its outgoing weights buy over
   the gate's lifetime exceeds the penalty ``lambda`` the gate charges. Candidates are taken
   best first, skipping any whose incoming weights point within ``max_cos`` (cosine) of an
   existing unit (splits excepted) or of one already taken, at most
   ``min(max_new, ceil(max_frac * width))`` per model and event (at least 1);
5. a model adds nothing while the median gate of its charged units is below ``min_gate``
   (optional): its units already barely pay the price, so it is not below the width the price
   sustains (the first-order score alone cannot tell: on MNIST the best GradMax candidate
   scores about the same in a network of 130 units as in one of 1000), and nothing after step
   ``until`` (optional: the final width then holds only charged units);
6. a new unit's gate is not charged for ``grace`` steps (its outgoing weights start at zero,
   so its gate would only be pushed down), after which it stays only if it pays like every
   other unit, by the gates' own dynamics.

Why a gate check: with Adam and unpenalised outgoing weights the sparsifier has no static
equilibrium (a gate can shrink while its outgoing weights grow, at no loss), so the width the
gates sustain is set by their dynamics; the growth rule fills up to it rather than predicting it.

New units have zero outgoing weights (the outputs do not change at insertion), gate 1, and zero
optimizer state (:meth:`MLPBank.grow_`, :meth:`BankOptimizer.grown`). Growth needs
one-hidden-layer models (the error is taken at the logits). Randomness is drawn from a generator
seeded by ``(seed, step, the model's spec seed)``, so a resumed run grows exactly as the
uninterrupted one, and a model draws the same candidates whatever else the bank holds.

Each epoch it records, per model, what :class:`SparsifierGate` records plus ``grown`` (units
added so far) and ``unit_steps`` (the sum over training steps of the computed width, from which
the training FLOPs follow: ``batch * (4 * in + 6 * out) * unit_steps`` for the hidden units,
whose first layer forms no input gradient).

Example::

    from widthlab.engine import TrainConfig, train
    from widthlab.nn import ModelSpec
    from widthlab.nn.growth import GrowingGate

    specs = [ModelSpec((w,), seed=0) for w in (8, 64, 512, 2048)]
    make = lambda: GrowingGate(1e-3, lr=1e-2, every=10, max_frac=1.0, max_new=128, grace=40,
                               min_gate=0.65, until=276, init="gradmax")
    run_id = train(specs, TrainConfig(dataset="mnist", epochs=4), modifiers=[make])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.bank import init_linear
from widthlab.nn.gated import SparsifierGate, gate_penalty

INITS = ("gradmax", "random", "split", "none")
ROW_NORM = 1.0 / math.sqrt(3.0)  # expected norm of an nn.Linear weight row, any fan-in
NOISE_L1 = math.sqrt(2.0 / math.pi)  # E|z| of a standard normal z


@dataclass
class GrowthPlan:
    """Units to add: arguments of :meth:`MLPBank.grow_` (``models``, ``counts``, ``init``,
    ``ids``)."""

    models: list[int]
    counts: list[int]
    init: list[tuple[Tensor, Tensor]]
    ids: list[Tensor]

    def args(self) -> tuple:
        return self.models, self.counts, self.init

    @property
    def n_units(self) -> int:
        return sum(self.counts)


class GrowingGate(SparsifierGate):
    """Sparsifier gates under ``lambda * sum(relu(g))`` that also add units that pay for
    themselves (see the module docstring for the rule).

    Parameters
    ----------
    l1 : float or sequence of float
        The price lambda per neuron, one for all models or one per model: the gates' penalty
        weight and the growth rule's price.
    penalty : {"strict", "abs"}
    lr : float or None
        Learning rate of the gates (None: the model's, taken as ``out_lr``).
    every : int
        Steps between growth events (counted over the whole run).
    window : int
        Recent minibatches the error and the candidates' scores are measured on.
    init : str or sequence of str
        ``"gradmax"``, ``"random"``, ``"split"`` or ``"none"``, for all models or per model.
    candidates : int
        Candidates scored per model and event.
    max_new, max_frac : int, float
        At most ``min(max_new, ceil(max_frac * width))`` (and at least 1) units per event.
    horizon : float or None
        Steps over which a unit must pay its price; None: ``1 / gate lr``.
    out_lr : float
        The outgoing weights' learning rate assumed by the prediction (the model's lr).
    max_cos : float
        Skip candidates whose incoming weights are closer than this cosine to a unit's.
    min_gate : float or None
        A model adds no unit while the median gate of its charged units is below this
        (:meth:`median_gate`): most of its units barely pay the price. None: no check.
    until : int or None
        Last step at which units are added (e.g. the run's steps minus ``grace``, so that the
        final width holds only units that were charged); None: to the end.
    debias : bool
        Subtract the score's sampling noise over the ``N`` samples (a candidate with no real
        gradient then scores 0 on average, not ``sqrt(2 / pi) * sum_c sd_c``).
    grace : int
        Steps during which a new unit's gate is not charged (its outgoing weights start at
        zero, so its gate would otherwise only be pushed down); 0: charged at once.
    seed : int
        Seed of the candidates' randomness (combined with the step).
    """

    grows = True
    unit_tensors = ("gate", "mask", "born")

    def __init__(self, l1: float | Sequence[float] = 0.0, *, penalty: str = "strict",
                 lr: float | None = None, every: int = 20, window: int = 4,
                 init: str | Sequence[str] = "gradmax", candidates: int = 64,
                 max_new: int = 64, max_frac: float = 0.5, horizon: float | None = None,
                 out_lr: float = 1e-3, max_cos: float = 0.95, grace: int = 0,
                 debias: bool = True, min_gate: float | None = None,
                 until: int | None = None,
                 seed: int = 0):
        super().__init__(l1, penalty=penalty, lr=lr)
        inits = [init] if isinstance(init, str) else list(init)
        if any(i not in INITS for i in inits):
            raise UsageError(f"unknown growth init {init!r}; choose from {', '.join(INITS)}")
        checks = {"every": every >= 1, "window": window >= 1, "candidates": candidates >= 1,
                  "max_new": max_new >= 1, "max_frac": max_frac > 0, "out_lr": out_lr > 0,
                  "horizon": horizon is None or horizon > 0, "max_cos": 0 < max_cos <= 1,
                  "grace": grace >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"GrowingGate: invalid {', '.join(bad)}; every, window, "
                             "candidates, max_new >= 1, max_frac, out_lr, horizon > 0, "
                             "max_cos in (0, 1], grace >= 0")
        self.every, self.window, self.candidates = int(every), int(window), int(candidates)
        self.max_new, self.max_frac, self.horizon = int(max_new), float(max_frac), horizon
        self.out_lr, self.max_cos, self.seed = float(out_lr), float(max_cos), int(seed)
        self.init_kind, self.grace, self.debias = inits, int(grace), bool(debias)
        self.min_gate, self.until = min_gate, until
        self._step = 0  # the current training step (before_step), for the grace period
        self._young: int | None = None  # cache of _young_until

    def build(self, bank) -> None:
        super().build(bank)
        if len(self.init_kind) not in (1, bank.n_models):
            raise UsageError(f"init needs one value or one per model ({bank.n_models}), got "
                             f"{len(self.init_kind)}")
        if len(self.init_kind) == 1:
            self.init_kind = self.init_kind * bank.n_models
        self.register_buffer("born", torch.full((bank.n_hidden,), -2 ** 40, dtype=torch.long))
        self.register_buffer("grown", torch.zeros(bank.n_models, dtype=torch.long))
        self.register_buffer("unit_steps", torch.zeros(bank.n_models, dtype=torch.float64))
        self._in, self._specs = bank.in_features, [s.hidden for s in bank.specs]

    def describe(self) -> dict:
        kinds = self.init_kind
        return {**super().describe(), "every": self.every, "window": self.window,
                "init": kinds[0] if len(set(kinds)) == 1 else list(kinds),
                "candidates": self.candidates, "max_new": self.max_new,
                "max_frac": self.max_frac, "horizon": self.horizon, "out_lr": self.out_lr,
                "max_cos": self.max_cos, "grace": self.grace,
                "debias": self.debias, "min_gate": self.min_gate, "until": self.until,
                "seed": self.seed}

    @property
    def price_per_step(self) -> Tensor:
        """``lambda / horizon`` per model ``(M,)``: the loss decrease per step a unit must buy."""
        horizon = self.horizon if self.horizon is not None else 1.0 / (self.lr or self.out_lr)
        return self.l1 / horizon

    # ---------------------------------------------------------------- engine hooks
    def before_step(self, step: int) -> None:
        self._step = int(step)
        widths = torch.tensor([b - a for a, b in self.slices], dtype=torch.float64)
        self.unit_steps += widths.to(self.unit_steps.device)

    @torch.no_grad()
    def grow_(self, bank, index: Tensor) -> None:
        """Follow ``bank.grow_``: old units keep their gate and mask, new ones (``index`` -1)
        get gate 1, mask 1 and the current step as their birth."""
        self._learn_layout(bank)
        fresh = index < 0
        for name in self.unit_tensors:
            t = getattr(self, name)
            out = t.detach()[index.clamp(min=0)]
            out[fresh] = self._step if name == "born" else 1.0
            setattr(self, name, nn.Parameter(out, requires_grad=t.requires_grad)
                    if isinstance(t, nn.Parameter) else out)
        self._has_mask = bool((self.mask == 0).any())
        self._young = None

    def penalty(self) -> Tensor:
        """``lambda * sum(relu(g))`` over the live units past their grace period."""
        if not self.grace or self._young_until() <= self._step:
            return super().penalty()
        terms = gate_penalty(self.gate, self.penalty_kind)  # (H,)
        if self._masked():
            terms = terms * self.mask
        charged = (self._step - self.born >= self.grace).to(terms.dtype)
        return self.l1 * self.per_model_sum(terms * charged)  # (M,)

    def _young_until(self) -> int:
        """First step at which every unit is charged (cached: one device sync per change)."""
        if self._young is None:
            self._young = int(self.born.max()) + self.grace if self.born.numel() else 0
        return self._young

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._young = None

    def epoch_records(self) -> list[tuple[int, str, object]]:
        out = super().epoch_records()
        grown, steps = self.grown.tolist(), self.unit_steps.tolist()
        for m in range(self.n_models):
            out += [(m, "grown", grown[m]), (m, "unit_steps", steps[m])]
        return out

    # ---------------------------------------------------------------- the rule
    @torch.no_grad()
    def propose(self, bank, x: Tensor, y: Tensor, step: int,
                alive: Sequence[bool] | None = None) -> GrowthPlan | None:
        """The units to add now, from the recent batches ``x`` ``(N, in)``, ``y`` ``(N,)``.

        Returns None when no model grows. ``alive``: models still training (failed ones never
        grow). The plan's ids continue each model's count (``grown``); pass the plan to
        ``bank.grow_(*plan.args(), ids=plan.ids)`` and then :meth:`committed`.
        """
        self._step = int(step)  # new units are born now (grow_ follows)
        grow = [m for m in range(bank.n_models) if self.init_kind[m] != "none"
                and (alive is None or alive[m])]
        deep = [m for m in grow if len(self._specs[m]) > 1]
        if deep:
            raise UsageError(f"growth needs one-hidden-layer models; models {deep} are deeper "
                             "(use init='none' for them)")
        if not grow or len(x) == 0 or (self.until is not None and step > self.until):
            return None
        delta = output_error(bank, x, y)  # (N, M, C)
        w, b = self._candidates(bank, x, delta, grow, int(step))  # (M', K, in), (M', K)
        grad, noise = outgoing_gradient(x, delta[:, grow], w, b, noise=True)  # (M', K, C)
        gain = grad.abs().sum(-1)  # (M', K)
        if self.debias:  # minus the expected |G|_1 of a candidate with no real gradient
            gain = gain - NOISE_L1 * noise.sqrt().sum(-1)
        gain = self.out_lr * gain  # predicted decrease of the loss per step
        price = self.price_per_step[grow]
        plan = GrowthPlan([], [], [], [])
        for j, m in enumerate(grow):
            take = self._select(bank, m, w[j], gain[j], float(price[j]))
            if len(take):
                start = self._specs[m][0] + int(self.grown[m])
                plan.models.append(m)
                plan.counts.append(len(take))
                plan.init.append((w[j, take].cpu(), b[j, take].cpu()))
                plan.ids.append(torch.arange(start, start + len(take)))
        return plan if plan.models else None

    def committed(self, plan: GrowthPlan) -> None:
        """Count the units of ``plan`` as grown (after ``bank.grow_`` applied it)."""
        for m, c in zip(plan.models, plan.counts, strict=True):
            self.grown[m] += c

    def median_gate(self, m: int) -> float:
        """Median gate ``relu(g)`` of model ``m``'s live units past their grace period (1 with
        none). Every gate starts at 1 and is pushed down by the price; a low median says most
        of the units barely pay, so the model is not below the width the price sustains."""
        a, b = self.slices[m]
        gate = self.gate.detach()[a:b]
        ok = (self.born[a:b] <= self._step - self.grace) & (gate > 0) & (self.mask[a:b] > 0)
        return float(torch.quantile(gate[ok], 0.5)) if bool(ok.any()) else 1.0

    def _select(self, bank, m: int, w: Tensor, gain: Tensor, price: float) -> Tensor:
        """Best candidates above the price, not too close to a unit, at most the bound."""
        a, b = bank.slices[m]
        if self.min_gate is not None and self.median_gate(m) < self.min_gate:
            return torch.zeros(0, dtype=torch.long, device=w.device)
        bound = max(1, min(self.max_new, math.ceil(self.max_frac * (b - a))))
        order = torch.argsort(gain, descending=True)
        order = order[gain[order] > price]
        if len(order) == 0:
            return order
        unit = F.normalize(w[order], dim=1)  # (K', in)
        existing = F.normalize(bank.w0.detach()[a:b], dim=1)  # (w, in)
        near = torch.zeros(len(order), dtype=torch.bool, device=w.device)
        if b > a and self.init_kind[m] != "split":  # a split is a near copy by design
            near = (unit @ existing.t()).amax(1) > self.max_cos
        taken: list[int] = []
        for i in range(len(order)):
            if near[i] or (taken and bool((unit[taken] @ unit[i] > self.max_cos).any())):
                continue
            taken.append(i)
            if len(taken) == bound:
                break
        return order[torch.tensor(taken, dtype=torch.long, device=w.device)]

    def _candidates(self, bank, x: Tensor, delta: Tensor, grow: list[int],
                    step: int) -> tuple[Tensor, Tensor]:
        """Candidate incoming weights ``(len(grow), K, in)`` and biases ``(len(grow), K)``."""
        k, d, dev = self.candidates, self._in, x.device
        ws = torch.empty(len(grow), k, d)
        bs = torch.zeros(len(grow), k)
        kinds = [self.init_kind[m] for m in grow]
        gm = [j for j, kind in enumerate(kinds) if kind == "gradmax"]
        if gm:  # top right singular vectors of the error-input correlation, per model
            corr = torch.einsum("nmc,nd->mcd", delta[:, [grow[j] for j in gm]], x) / len(x)
            _, s, vh = torch.linalg.svd(corr.double().cpu(), full_matrices=False)
            s, vh = s.float(), vh.float()  # (G, C), (G, C, in)
        for j, (m, kind) in enumerate(zip(grow, kinds, strict=True)):
            # one generator per model, keyed like its initialisation (by its spec's seed), so
            # a model grows the same whatever else the bank holds
            key = ((self.seed * 1_000_003 + step) * 1_000_033 + bank.specs[m].seed) % 2 ** 63
            g = torch.Generator().manual_seed(key)
            if kind == "gradmax":
                i = gm.index(j)
                ws[j] = _gradmax_rows(s[i], vh[i], k, g)
            elif kind == "split" and bank.slices[m][1] > bank.slices[m][0]:
                a, b = bank.slices[m]
                pick = torch.randint(a, b, (k,), generator=g)
                src = bank.w0.detach()[pick.to(bank.device)].cpu()
                noise = torch.randn(k, d, generator=g) * src.norm(dim=1, keepdim=True)
                ws[j] = src + 0.1 * noise / math.sqrt(d)
                bs[j] = bank.b0.detach()[pick.to(bank.device)].cpu()
            else:  # random (and split with no unit to split)
                ws[j], bs[j] = init_linear(k, d, g)
        return ws.to(dev), bs.to(dev)


@torch.no_grad()
def output_error(bank, x: Tensor, y: Tensor) -> Tensor:
    """``d CE_i / d logits_i`` per sample and model, ``softmax - onehot``, ``(N, M, C)``."""
    delta = F.softmax(bank(x).float(), -1)  # (N, M, C)
    delta[torch.arange(len(y), device=delta.device), :, y] -= 1.0
    return delta


def outgoing_gradient(x: Tensor, delta: Tensor, w: Tensor, b: Tensor, *, noise: bool = False
                      ) -> Tensor | tuple[Tensor, Tensor]:
    """Gradient of the mean loss over ``x`` with respect to the zero outgoing weights of
    candidate units ``relu(x @ w.T + b)``: ``delta.T @ act / N``.

    With ``noise``, also the variance of that mean over the samples (per entry,
    ``(mean(g_n^2) - G^2) / (N - 1)``, ``g_n`` one sample's gradient): ``G^2`` minus it is
    an unbiased estimate of the squared true gradient.

    Parameters
    ----------
    x : Tensor of shape (N, in)
    delta : Tensor of shape (N, M, C)
        The output error of each model (:func:`output_error`).
    w, b : Tensor of shape (M, K, in) and (M, K)
        K candidates per model.

    Returns
    -------
    Tensor of shape (M, K, C), and its noise variance (same shape) with ``noise``
    """
    n = len(x)
    act = F.relu(torch.einsum("nd,mkd->nmk", x, w) + b)  # (N, M, K)
    grad = torch.einsum("nmc,nmk->mkc", delta, act) / n
    if not noise:
        return grad
    second = torch.einsum("nmc,nmk->mkc", delta.square(), act.square()) / n
    return grad, (second - grad.square()).clamp(min=0) / max(n - 1, 1)


def _gradmax_rows(s: Tensor, vh: Tensor, k: int, g: torch.Generator) -> Tensor:
    """``k`` rows of norm :data:`ROW_NORM`: the top singular directions ``vh`` ``(C, in)``
    with both signs, then mixtures ``sum_j s_j z_j vh_j`` with ``z`` standard normal."""
    rank = int((s > s[0] * 1e-6).sum()) if s.numel() and s[0] > 0 else 0
    if rank == 0:  # no error left: random directions
        return F.normalize(torch.randn(k, vh.shape[1], generator=g), dim=1) * ROW_NORM
    top = vh[:rank]
    pure = torch.cat([top, -top])[:k]
    mix = torch.randn(k - len(pure), rank, generator=g) * s[:rank]
    rows = torch.cat([pure, mix @ top])
    return F.normalize(rows, dim=1) * ROW_NORM
