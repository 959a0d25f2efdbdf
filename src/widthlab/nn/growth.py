"""A layer that grows and shrinks under one price per neuron: sparsifier gates plus a growth rule.

:class:`GrowingGate` is a :class:`~widthlab.nn.gated.SparsifierGate` (every first-layer unit
multiplied by ``relu(g)``, the loss charged ``lambda * sum(relu(g))``, dead units removed by the
engine) that also *adds* units: every ``every`` training steps it measures the error at the
logits on the recent batches, draws candidate units (``init``: ``"random"``, ``"gradmax"``,
``"split"`` or ``"none"``) and adds those whose first-order benefit exceeds the price (or, with
:class:`BenefitRule`, by measured benefit). New units have zero outgoing weights, gate 1 and zero
optimizer state; the randomness is seeded per (seed, step, model), so a resumed run grows
exactly as an uninterrupted one. The whole rule, its options and the measurements behind its
defaults: ``docs/growth-rule.md``.

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
from widthlab.units.state import take


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
            out = take(t.detach(), 0, index)  # new units: filled below
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


