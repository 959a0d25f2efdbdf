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

That is the *candidate rule* (``rule=None``). Its two sides price different things (a
candidate's decrease per step; the gates' L1 dynamics), so each start stops at its own edge of
a band: on the quick MNIST profile the final widths from starts 8..2048 spread 71%, 33%, 17%
around their mean at lambda 1e-4, 1e-3, 1e-2.

The benefit rule (``rule=BenefitRule(...)``, what the growth study uses)
-------------------------------------------------------------------------
One test prices both directions. ``lambda`` is a loss per neuron: the L0 price that
``lambda * relu(g)`` stands for at ``g = 1``. Every ``every`` steps from ``warmup`` on, each
growing model measures, on the recent batches, the *removal cost* ``c_i`` of each of its mature
units (live and born at least ``grace`` steps ago): the exact increase of the mean cross-entropy
if the unit were removed (its term ``a_i w_i`` taken off the logits, :func:`removal_costs`,
``O(N w C)``), minus its first-order term ``-G_i . w_i`` (``linear=False``, the default). Its
*benefit per unit* ``b`` is the ``quantile`` (the median) of those costs; ``k`` is its live
width, ``k_m`` its mature units.

* ``b > band * lambda`` (up to step ``until``): it is narrower than the price sustains; it adds
  ``min(ceil(k_m * (b / lambda) ** (1 / alpha) - k), max_new, ceil(max_frac * k))`` units (the
  young ones count towards the target), the best candidates by the candidate rule's score;
* ``b < remove_at * lambda``, no young unit left, before the run's last ``settle`` steps: it
  removes its ``min(ceil(k - k_m * (b / lambda) ** (1 / alpha_remove)), floor(max_remove *
  k_m))`` mature units with the smallest costs (masked here, taken out by the engine's next
  shrink: run it with ``shrink_every = every``);
* otherwise nothing.

A start above the width where ``b = lambda`` and a start below both move towards it. Why the
settings (measured on the quick profile, MNIST, 316 steps):

* *young units are neither measured nor removed*: a new unit's outgoing weights start at zero;
* *growth early and generous, the width then set from above* (``until`` about a quarter of
  the run, ``alpha = 1``: a growth step overshoots): units added to a network that already fits
  stay lazy. At step 180 of a start at 8 (lambda 1e-3) the median cost of its first units was
  0.2, of those added at step 20 0.01, at 40 0.002, at 60 9e-5, at 80 4e-5; such units are
  only ever removed, so the width is reached by removing the lazy ones, as large starts reach
  it;
* *removal in small steps* (``alpha_remove = 3``, ``max_remove``): the cost of the median unit
  jumps as a network sheds its lazy units; larger steps overshoot into the units that carry it;
* *the first-order term is dropped*: during training it follows the optimiser's momentary
  direction; with it the benefit of a network of fixed width jumped up to fivefold between
  events, without it it moves by little more than its sampling noise (7-8% over 1024 samples
  for a trained network, 9-14% with the term);
* *the gates need no penalty*: the study runs growing models with ``l1 = 0`` (``price`` =
  lambda), the price acting through this test alone; the gates stay as learned scales.

Measured with the growth study's quick profile (gradmax, starts 8, 64, 512, 2048): spreads
15%, 14%, 16% on MNIST at lambda 1e-4, 1e-3, 1e-2, and 36%, 15%, 32% on FashionMNIST. What is
left: the cost of a unit depends on its history as well as on the width (a network pruned from
2048 prices its median unit at lambda with fewer units than one trained near its width from
the start; a grown one, after shedding its lazy units, keeps a core whose costs keep rising),
so the widths from different starts agree only to that extent.

*Refitted costs* (``refit=True``, issue 18; the growth study's default, the rule's own default
stays ``False``). Much of that history is redundancy: a network trained near its width from the
start has many units whose activations the others nearly reproduce, so each looks as costly to
remove as the network's outputs say, although the others' outgoing weights would take its part
over; survivors of a pruned network (and the core of a grown one) are few and distinct.
``refit`` prices each unit by what the others cannot take over: its cost times
:func:`refit_fraction`, the share of its activation (over the same ``N`` samples) left after a
least-squares fit by the other mature units' activations and a constant (the output bias), i.e.
its removal cost in the quadratic approximation after the best refit of the others' outgoing
weights. The fit is ridged (``ridge`` times the mean activation variance: how far the others'
weights may move) and, with ``dof``, corrected for the ``k / N`` of any variance an in-sample
fit by ``k`` regressors takes (so use ``N`` well above the width: a ``window`` of 16 batches).
Costs so priced are well below the plain ones (most of a unit's activation is shared), so the
same price sustains a network 3-5 times narrower; their spread over the starts is smaller.
Measured (``scripts/growth_probe.py``, quick profile, gradmax, seed 0; ``BenefitRule(refit=True,
ridge=0.03, alpha_remove=6, max_remove=0.4)`` with ``window=16``): final widths 99/127/100/103,
36/31/35/41, 14/13/15/17 on MNIST (spread 18%, 15%, 15%) and 83/104/92/91, 32/32/30/29,
13/12/12/12 on FashionMNIST (12%, 6%, 6%) at lambda 1e-4, 1e-3, 1e-2 (seeds 0 and 1 together:
17%, 14%, 15% and 18%, 13%, 6%), test accuracy above static networks of the mean final width;
the run is no slower (narrower networks, twice the samples). At lambda 1e-2 the widths are 12-17
units, so one unit is 6-8% of the spread: the margin there is small, and neighbouring settings
(ridge 0.01-0.03, max_remove 0.3-0.5, window 8) land between 6% and 33% at some price.

New units have zero outgoing weights (the outputs do not change at insertion), gate 1, and zero
optimizer state (:meth:`MLPBank.grow_`, :meth:`BankOptimizer.grown`). Growth needs
one-hidden-layer models (the error is taken at the logits). Randomness is drawn from a generator
seeded by ``(seed, step, the model's spec seed)``, so a resumed run grows exactly as the
uninterrupted one, and a model draws the same candidates whatever else the bank holds.

Each epoch it records, per model, what :class:`SparsifierGate` records plus ``grown`` (units
added so far), ``removed`` (units the benefit rule removed so far; with it only) and
``unit_steps`` (the sum over training steps of the computed width, from which
the training FLOPs follow: ``batch * (4 * in + 6 * out) * unit_steps`` for the hidden units,
whose first layer forms no input gradient).

Example::

    from widthlab.engine import TrainConfig, train
    from widthlab.nn import ModelSpec
    from widthlab.nn.growth import BenefitRule, GrowingGate

    specs = [ModelSpec((w,), seed=0) for w in (8, 64, 512, 2048)]
    make = lambda: GrowingGate(1e-3, lr=1e-2, every=10, max_frac=1.0, max_new=128, grace=40,
                               min_gate=0.65, until=276, init="gradmax")
    run_id = train(specs, TrainConfig(dataset="mnist", epochs=4), modifiers=[make])

    # the benefit rule (the growth study's quick profile): unpenalised gates, one price
    make = lambda: GrowingGate(0.0, price=1e-3, lr=1e-2, every=10, window=8, max_frac=3.0,
                               max_new=512, grace=100, until=80,
                               rule=BenefitRule(warmup=30, settle=20))
    run_id = train(specs, TrainConfig(dataset="mnist", epochs=4, shrink_every=10),
                   modifiers=[make])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn._growth_measures import outgoing_gradient as outgoing_gradient
from widthlab.nn._growth_measures import output_error
from widthlab.nn._growth_measures import output_weight as output_weight
from widthlab.nn._growth_measures import refit_fraction as refit_fraction
from widthlab.nn._growth_measures import removal_costs as removal_costs
from widthlab.nn._growth_plan import INITS as INITS
from widthlab.nn._growth_plan import NOISE_L1 as NOISE_L1
from widthlab.nn._growth_plan import ROW_NORM as ROW_NORM
from widthlab.nn._growth_plan import Benefit as Benefit
from widthlab.nn._growth_plan import BenefitRule as BenefitRule
from widthlab.nn._growth_plan import GrowthPlan as GrowthPlan
from widthlab.nn._growth_plan import _json_values
from widthlab.nn._growth_proposals import _GrowthProposals
from widthlab.nn.gated import SparsifierGate


class GrowingGate(_GrowthProposals, SparsifierGate):
    """Sparsifier gates under ``lambda * sum(relu(g))`` that also add units that pay for
    themselves (see the module docstring for the rule).

    Parameters
    ----------
    l1 : float or sequence of float
        The gates' penalty weight, one for all models or one per model (and the growth
        rule's price lambda unless ``price`` is given).
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
    rule : BenefitRule, dict or None
        None: the candidate rule (a candidate is added when its predicted decrease per step
        exceeds ``price / horizon``; units are removed by the gates alone). A
        :class:`BenefitRule`: the benefit rule (growth and removal by one test, see the
        module docstring); ``min_gate`` and ``horizon`` then play no part.
    price : float, sequence of float or None
        The price lambda per neuron of the growth rule, one or one per model; None: ``l1``
        (with the benefit rule the gates' ``l1`` may be 0, the price acting through the rule).
    seed : int
        Seed of the candidates' randomness (combined with the step), and of the
        hard-concrete noise.
    gate_kind : {"l1", "hard_concrete"}
        The gates (:class:`~widthlab.nn.gated.SparsifierGate`): a new unit starts at the
        kind's initial gate parameter (``g = 1``; ``log_alpha = log 4``) with its own place in
        the noise; "live" means an evaluation gate above 0.
    """

    grows = True
    unit_tensors = ("gate", "mask", "born")

    def __init__(self, l1: float | Sequence[float] = 0.0, *, penalty: str = "strict",
                 lr: float | None = None, every: int = 20, window: int = 4,
                 init: str | Sequence[str] = "gradmax", candidates: int = 64,
                 max_new: int = 64, max_frac: float = 0.5, horizon: float | None = None,
                 out_lr: float = 1e-3, max_cos: float = 0.95, grace: int = 0,
                 debias: bool = True, min_gate: float | None = None,
                 until: int | None = None, rule: BenefitRule | dict | None = None,
                 price: float | Sequence[float] | None = None, seed: int = 0,
                 gate_kind: str = "l1"):
        super().__init__(l1, penalty=penalty, lr=lr, gate_kind=gate_kind, seed=seed)
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
        self.min_gate, self.until, self.price_init = min_gate, until, price
        self.rule = BenefitRule(**rule) if isinstance(rule, dict) else rule
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
        self.register_buffer("removed", torch.zeros(bank.n_models, dtype=torch.long))
        price = self.l1 if self.price_init is None else torch.as_tensor(
            self.price_init, dtype=torch.float32).flatten()
        if price.numel() == 1:
            price = price.expand(bank.n_models)
        if price.numel() != bank.n_models or not bool((price >= 0).all()):
            raise UsageError(f"price needs one value >= 0 or one per model ({bank.n_models}), "
                             f"got {self.price_init!r}")
        self.register_buffer("price", price.clone().to(self.l1.device), persistent=False)
        self._in, self._specs = bank.in_features, [s.hidden for s in bank.specs]

    def describe(self) -> dict:
        kinds = self.init_kind
        return {**super().describe(), "every": self.every, "window": self.window,
                "init": kinds[0] if len(set(kinds)) == 1 else list(kinds),
                "candidates": self.candidates, "max_new": self.max_new,
                "max_frac": self.max_frac, "horizon": self.horizon, "out_lr": self.out_lr,
                "max_cos": self.max_cos, "grace": self.grace,
                "debias": self.debias, "min_gate": self.min_gate, "until": self.until,
                "rule": None if self.rule is None else asdict(self.rule),
                "price": _json_values(self.price_init), "seed": self.seed}

    @property
    def price_per_step(self) -> Tensor:
        """``lambda / horizon`` per model ``(M,)``: the loss decrease per step a unit must buy."""
        horizon = self.horizon if self.horizon is not None else 1.0 / (self.lr or self.out_lr)
        return self.price / horizon

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
        new = {"born": self._step, "gate": self.kind.default_init}
        if "noise_ids" in self.unit_tensors:
            new["noise_ids"] = self.add_noise_places(int(fresh.sum())).to(index.device)
        for name in self.unit_tensors:
            t = getattr(self, name)
            out = t.detach()[index.clamp(min=0)]
            out[fresh] = new.get(name, 1.0)
            setattr(self, name, nn.Parameter(out, requires_grad=t.requires_grad)
                    if isinstance(t, nn.Parameter) else out)
        self._has_mask = bool((self.mask == 0).any())
        self._young = None

    def penalty(self) -> Tensor:
        """``lambda * sum(relu(g))`` over the live units past their grace period."""
        if not self.grace or self._young_until() <= self._step:
            return super().penalty()
        terms = self.kind.penalty_terms(self.gate)  # (H,)
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
        removed = self.removed.tolist()
        for m in range(self.n_models):
            out += [(m, "grown", grown[m]), (m, "unit_steps", steps[m])]
            if self.rule is not None:
                out.append((m, "removed", removed[m]))
        return out

    # ---------------------------------------------------------------- the rule
    @torch.no_grad()
    def propose(self, bank, x: Tensor, y: Tensor, step: int,
                alive: Sequence[bool] | None = None, end: int | None = None
                ) -> GrowthPlan | None:
        """The units to add now, from the recent batches ``x`` ``(N, in)``, ``y`` ``(N,)``.

        Returns None when no model grows. ``alive``: models still training (failed ones never
        grow). ``end``: the run's last step (the benefit rule's ``settle``; None: no end).
        The plan's ids continue each model's count (``grown``); pass the plan to
        ``bank.grow_(*plan.args(), ids=plan.ids)`` and then :meth:`committed`. The benefit
        rule also masks the units it removes here (the engine's next shrink removes them).
        """
        self._step = int(step)  # new units are born now (grow_ follows)
        grow = [m for m in range(bank.n_models) if self.init_kind[m] != "none"
                and (alive is None or alive[m])]
        deep = [m for m in grow if len(self._specs[m]) > 1]
        if deep:
            raise UsageError(f"growth needs one-hidden-layer models; models {deep} are deeper "
                             "(use init='none' for them)")
        if not grow or len(x) == 0:
            return None
        if self.rule is not None:
            return self._benefit_plan(bank, x, y, grow, int(step), end)
        if self.until is not None and step > self.until:
            return None
        delta = output_error(bank, x, y)  # (N, M, C)
        w, b = self._candidates(bank, x, delta, grow, int(step))  # (M', K, in), (M', K)
        gain = self.out_lr * self._gain(x, delta[:, grow], w, b)  # loss decrease per step
        price = self.price_per_step[grow]
        return self._plan(bank, grow, w, b, [self._select(bank, m, w[j], gain[j],
                                                          float(price[j]))
                                             for j, m in enumerate(grow)])

    def committed(self, plan: GrowthPlan) -> None:
        """Count the units of ``plan`` as grown (after ``bank.grow_`` applied it)."""
        for m, c in zip(plan.models, plan.counts, strict=True):
            self.grown[m] += c

    def median_gate(self, m: int) -> float:
        """Median gate ``relu(g)`` of model ``m``'s live units past their grace period (1 with
        none). Every gate starts at 1 and is pushed down by the price; a low median says most
        of the units barely pay, so the model is not below the width the price sustains."""
        a, b = self.slices[m]
        gate = self.kind.scale(self.gate.detach()[a:b])  # relu(g): g on the live units
        ok = (self.born[a:b] <= self._step - self.grace) & (gate > 0) & (self.mask[a:b] > 0)
        return float(torch.quantile(gate[ok], 0.5)) if bool(ok.any()) else 1.0


