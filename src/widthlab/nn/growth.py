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

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.bank import init_linear
from widthlab.nn.gated import SparsifierGate

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


@dataclass(frozen=True)
class BenefitRule:
    """The benefit rule's settings (see the module docstring): one test, ``benefit = lambda``,
    decides both growth and removal.

    Parameters
    ----------
    quantile : float
        The quantile of the mature units' removal costs taken as the model's benefit per unit
        (0.5: the median unit).
    band : float
        A model grows while its benefit exceeds ``band * lambda``.
    remove_at : float
        It removes units while its benefit is below ``remove_at * lambda``.
    alpha, alpha_remove : float
        Sizing of a step: the benefit is taken to scale as ``width ** -alpha``, so the width
        that prices it at lambda is ``mature * (benefit / lambda) ** (1 / alpha)``; growth
        steps use ``alpha``, removal steps ``alpha_remove`` (larger: removal approaches the
        price in smaller steps).
    max_remove : float
        At most this fraction of the mature units goes per event.
    warmup : int
        No decision before this step (the first costs of an untrained network say little).
    settle : int
        No removal in the run's last ``settle`` steps (the engine passes the run's end to
        :meth:`GrowingGate.propose`; growth stops at the gate's ``until``).
    linear : bool
        Keep the costs' first-order term (False: the exact cost minus ``-G_i . w_i``, what
        the removal would cost at a stationary point of the outgoing weights; the first-order
        term follows the optimiser's momentary direction and is noise during training).
    refit : bool
        Price each unit by the part of its cost the other units cannot take over: its cost
        times :func:`refit_fraction` of its activation against the other mature units' (see
        the module docstring). False: the plain removal cost.
    ridge : float
        The refit's ridge, times the mean activation variance (``refit`` only).
    dof : bool
        Correct the refit's residual for the in-sample fit (times ``N / (N - k)``, ``k`` the
        mature units, ``N`` the samples; ``refit`` only).
    """

    quantile: float = 0.5
    band: float = 1.25
    remove_at: float = 1.0
    alpha: float = 1.0
    alpha_remove: float = 3.0
    max_remove: float = 0.3
    warmup: int = 0
    settle: int = 0
    linear: bool = False
    refit: bool = False
    ridge: float = 1e-3
    dof: bool = True

    def __post_init__(self) -> None:
        checks = {"quantile": 0 <= self.quantile <= 1, "band": self.band >= 1,
                  "remove_at": 0 <= self.remove_at <= self.band,
                  "alpha": self.alpha > 0, "alpha_remove": self.alpha_remove > 0,
                  "max_remove": 0 <= self.max_remove < 1, "warmup": self.warmup >= 0,
                  "settle": self.settle >= 0, "ridge": self.ridge >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"BenefitRule: invalid {', '.join(bad)}; quantile in [0, 1], "
                             "band >= 1, remove_at in [0, band], alpha, alpha_remove > 0, "
                             "max_remove in [0, 1), warmup, settle, ridge >= 0")


@dataclass
class Benefit:
    """One model's measured benefit: ``value`` (None: no mature unit), the mature units'
    positions in its slice and their removal costs, its live width and young units."""

    value: float | None
    units: Tensor
    costs: Tensor
    width: int
    young: int


def _json_values(v):
    if v is None:
        return None
    return [float(x) for x in v] if isinstance(v, Sequence) else float(v)


class GrowingGate(SparsifierGate):
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

    def _gain(self, x: Tensor, delta: Tensor, w: Tensor, b: Tensor) -> Tensor:
        """``|G|_1`` of each candidate's outgoing-weight gradient ``(M', K)``, minus the
        expected value of a candidate with no real gradient when ``debias``."""
        grad, noise = outgoing_gradient(x, delta, w, b, noise=True)  # (M', K, C)
        gain = grad.abs().sum(-1)
        if self.debias:
            gain = gain - NOISE_L1 * noise.sqrt().sum(-1)
        return gain

    def _plan(self, bank, models: list[int], w: Tensor, b: Tensor,
              takes: list[Tensor]) -> GrowthPlan | None:
        """The :class:`GrowthPlan` adding candidates ``takes[j]`` of ``w[j], b[j]`` to model
        ``models[j]`` (new unit ids continue the model's numbering); None when empty."""
        plan = GrowthPlan([], [], [], [])
        for j, (m, take) in enumerate(zip(models, takes, strict=True)):
            if len(take):
                start = self._specs[m][0] + int(self.grown[m])
                plan.models.append(m)
                plan.counts.append(len(take))
                plan.init.append((w[j, take].cpu(), b[j, take].cpu()))
                plan.ids.append(torch.arange(start, start + len(take)))
        return plan if plan.models else None

    def _benefit_plan(self, bank, x: Tensor, y: Tensor, grow: list[int], step: int,
                      end: int | None) -> GrowthPlan | None:
        """The benefit rule (:class:`BenefitRule`): every model measures its benefit per unit
        and removes (masks) or plans units towards the width at which it equals the price;
        returns the units to add."""
        if step < self.rule.warmup:
            return None
        _, act = bank.hidden(x, track=False)  # (N, H), gated
        logits = bank.head(act).float()  # (N, M, C)
        removing = end is None or step <= end - self.rule.settle
        up = {}
        for m in grow:
            n = self._decide(bank, m, act, logits[:, m], y, step, removing)
            if n > 0:
                up[m] = n
        if not up:
            return None
        models = sorted(up)
        delta = F.softmax(logits, -1)
        delta[torch.arange(len(y), device=delta.device), :, y] -= 1.0
        w, b = self._candidates(bank, x, delta, models, step)  # (M', K, in), (M', K)
        gain = self._gain(x, delta[:, models], w, b)  # the candidates' rank, as above
        return self._plan(bank, models, w, b, [self._select(bank, m, w[j], gain[j], 0.0,
                                                            bound=up[m])
                                               for j, m in enumerate(models)])

    @torch.no_grad()
    def benefit(self, bank, m: int, act: Tensor, logits: Tensor, y: Tensor, step: int
                ) -> Benefit:
        """Model ``m``'s benefit per unit under the benefit rule: the ``quantile`` of the
        removal costs (:func:`removal_costs`) of its mature units (live, born at least
        ``grace`` steps ago) on the samples ``y`` with activations ``act`` ``(N, H)`` and
        logits ``(N, C)``."""
        a, b = self.slices[m]
        live = ~self.kind.dead(self.gate.detach()[a:b]) & (self.mask[a:b] > 0)
        mature = live & (self.born[a:b] <= step - self.grace)
        idx = mature.nonzero().flatten()
        k, young = int(live.sum()), int((live & ~mature).sum())
        if len(idx) == 0:
            return Benefit(None, idx, idx.to(torch.float32), k, young)
        v = output_weight(bank, m)  # (C, w)
        h = act[:, a:b].index_select(1, idx)
        cost = removal_costs(logits, h, v.index_select(1, idx), y, linear=self.rule.linear)
        if self.rule.refit:
            cost = cost * refit_fraction(h, self.rule.ridge, self.rule.dof)
        return Benefit(float(torch.quantile(cost, self.rule.quantile)), idx, cost, k, young)

    @torch.no_grad()
    def _decide(self, bank, m: int, act: Tensor, logits: Tensor, y: Tensor, step: int,
                removing: bool = True) -> int:
        """Units model ``m`` adds now (> 0) or removes (< 0, masked here) under the benefit
        rule; 0: inside the band, waiting for its young units, or past the schedule
        (``removing``: removal still allowed)."""
        r, got = self.rule, self.benefit(bank, m, act, logits, y, step)
        if got.value is None:  # only young units: wait for them; none at all: grow one
            return 0 if got.width else 1
        lam = float(self.price[m])
        ratio = got.value / lam if lam > 0 else math.inf
        mature = len(got.units)  # the measured units carry the model's function
        if ratio > r.band:
            if self.until is not None and step > self.until:
                return 0
            target = mature * ratio ** (1.0 / r.alpha) if math.isfinite(ratio) else math.inf
            n = min(math.ceil(target - got.width), self.max_new,
                    max(1, math.ceil(self.max_frac * got.width)))
            return max(n, 0)  # 0: the young units already make up the difference
        if ratio >= r.remove_at or got.young or not removing:
            return 0
        target = mature * max(ratio, 0.0) ** (1.0 / r.alpha_remove)
        n = min(math.ceil(got.width - target), math.floor(r.max_remove * mature))
        if n <= 0:
            return 0
        drop = got.units[torch.argsort(got.costs)[:n]] + self.slices[m][0]
        self.mask[drop] = 0.0
        self._has_mask = True
        self.removed[m] += n
        return -n

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

    def _select(self, bank, m: int, w: Tensor, gain: Tensor, price: float,
                bound: int | None = None) -> Tensor:
        """Best candidates above the price, not too close to a unit, at most the bound."""
        a, b = bank.slices[m]
        if bound is None:  # the per-candidate rule: its own bound and gate check
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


def output_weight(bank, m: int) -> Tensor:
    """Model ``m``'s output weights ``(C, w)`` (one-hidden-layer models), a view."""
    return next(v for name, v, _ in bank.model_params(m) if name == "layers.1.weight")


@torch.no_grad()
def removal_costs(logits: Tensor, act: Tensor, weight: Tensor, y: Tensor, *,
                  linear: bool = True, chunk: int = 2 ** 21) -> Tensor:
    """Exact increase of the mean cross-entropy when each unit is removed, ``(w,)``.

    Removing unit ``i`` of a one-hidden-layer network takes ``act[:, i] * weight[:, i]`` off
    the logits, so every cost follows from the intact forward pass in ``O(N w C)``
    (:func:`widthlab.metrics.importance.exact_importance` for one model).

    Parameters
    ----------
    logits : Tensor of shape (N, C)
    act : Tensor of shape (N, w)
        The units' (gated) activations.
    weight : Tensor of shape (C, w)
        Their outgoing weights.
    y : Tensor of shape (N,)
    chunk : int
        Elements of one temporary ``(N, k, C)`` block.
    """
    n, c = logits.shape
    zy = logits.gather(1, y[:, None])  # (N, 1)
    ce0 = torch.logsumexp(logits, -1, keepdim=True) - zy  # (N, 1)
    wy = weight[y]  # (N, w): each sample's target-class outgoing weights
    out = torch.empty(weight.shape[1], dtype=torch.float32, device=logits.device)
    step = max(1, chunk // max(n * c, 1))
    for j in range(0, weight.shape[1], step):
        h = act[:, j:j + step].float()  # (N, k)
        z = logits[:, None, :] - h[:, :, None] * weight[:, j:j + step].t()[None]  # (N, k, C)
        ce = torch.logsumexp(z, -1) - (zy - h * wy[:, j:j + step])
        out[j:j + step] = (ce - ce0).masked_fill_(h == 0, 0.0).mean(0)
    if not linear:  # minus the first-order term -G_i . w_i (G the outgoing weights' gradient)
        delta = F.softmax(logits, -1)
        delta[torch.arange(n, device=delta.device), y] -= 1.0
        out += ((delta.t() @ act.float()) * weight).sum(0) / n
    return out


@torch.no_grad()
def refit_fraction(act: Tensor, ridge: float = 1e-3, dof: bool = True) -> Tensor:
    """Per unit, the fraction of its activation the other units cannot take over ``(w,)``.

    ``mean((a_i - fit_i)^2) / mean(a_i^2)``, ``fit_i`` the least-squares fit of ``a_i`` ``(N,)``
    by the other units' activations and a constant (the output bias), with a ridge of
    ``ridge`` times the mean variance: ``1 / [C^-1]_ii`` of the ridged covariance ``C`` of
    ``act`` ``(N, w)``, over ``mean(a_i^2)``, clipped to ``[0, 1]``. Removing unit ``i`` and
    moving its logit contribution ``fit_i * w_i`` onto the others' outgoing weights leaves
    ``(a_i - fit_i) w_i``, whose cost is this fraction of the unit's to second order. With
    ``dof`` the residual is multiplied by ``N / (N - w)`` (an in-sample fit by ``w``
    regressors takes about ``w / N`` of any variance); with ``w >= N`` nothing is fitted
    reliably and every fraction is clipped to 1. One ``w x w`` Cholesky factorisation (float64).
    """
    h = act.double()
    n, k = h.shape
    second = h.square().mean(0)
    hc = h - h.mean(0)
    cov = hc.t() @ hc / n
    cov.diagonal().add_(ridge * cov.diagonal().mean() + 1e-12)  # a 0-dim tensor: no sync
    resid = 1.0 / torch.cholesky_inverse(torch.linalg.cholesky(cov)).diagonal()
    if dof:  # the in-sample fit by k regressors takes about k / n of any variance
        resid = resid * n / max(n - k, 1)
    return (resid / second.clamp(min=1e-12)).clamp(0.0, 1.0).to(torch.float32)


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
