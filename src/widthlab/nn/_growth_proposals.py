"""How a :class:`~widthlab.nn.growth.GrowingGate` chooses the units to add and remove: the
candidates' rows and gains, the selection above the price, and the benefit rule's decision
(a mixin of :class:`~widthlab.nn.growth.GrowingGate`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from widthlab.nn._growth_measures import (
    _gradmax_rows,
    outgoing_gradient,
    output_weight,
    refit_fraction,
    removal_costs,
)
from widthlab.nn._growth_plan import NOISE_L1, Benefit, GrowthPlan
from widthlab.nn.bank import init_linear


class _GrowthProposals:
    """Proposal methods of :class:`~widthlab.nn.growth.GrowingGate`."""

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

