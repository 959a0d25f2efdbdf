"""Resizing an :class:`~widthlab.nn.bank.MLPBank` for real: what a shrink or a growth did
(:class:`BankShrink`, :class:`BankGrowth`) and the bank's ``shrink_``, ``grow_`` and
``layout_state`` (a mixin of :class:`~widthlab.nn.bank.MLPBank`; the dataclasses are
re-exported by :mod:`widthlab.nn.bank`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn._bank_kernels import init_linear
from widthlab.units.state import take


@dataclass
class BankShrink:
    """What :meth:`MLPBank.shrink_` did, per model.

    Attributes
    ----------
    kept : list of LongTensor
        Positions, within the model's slice *before* the shrink, of the units that stayed.
    removed : list of LongTensor
        Original indices (``unit_ids``) of the units removed.
    """

    kept: list[Tensor]
    removed: list[Tensor]

    @property
    def n_removed(self) -> int:
        return sum(len(r) for r in self.removed)


@dataclass
class BankGrowth:
    """What :meth:`MLPBank.grow_` did, per model.

    Attributes
    ----------
    sources : list of LongTensor
        For each unit of the model's new slice, its position in the old slice; -1 for a new
        unit (new units come last).
    added : list of LongTensor
        Original indices (``unit_ids``) given to the new units (empty: the model did not grow).
    """

    sources: list[Tensor]
    added: list[Tensor]

    @property
    def n_added(self) -> int:
        return sum(len(a) for a in self.added)



class _BankResize:
    """The resizing methods of :class:`~widthlab.nn.bank.MLPBank`."""

    @torch.no_grad()
    def shrink_(self, keep: Tensor) -> BankShrink:
        """Remove the first-layer units where ``keep`` is False, for real.

        Drops them from ``w0``, ``b0``, the second layer's input columns and every modifier's
        per-unit tensors, then regroups the models by their new widths (layout as a bank built
        with ``widths=`` would have it). The outputs of every model are unchanged when the
        removed units contribute exact zeros (a dead gate), up to the summation order.
        Gradients are reset; optimizer state is carried by
        :meth:`widthlab.engine.optim.BankOptimizer.shrunk`.

        Parameters
        ----------
        keep : Tensor of shape (H,), bool
            Which current units stay.

        Returns
        -------
        BankShrink
            Per model: kept positions within its old slice, removed original unit indices.
        """
        keep = torch.as_tensor(keep).to("cpu", torch.bool).flatten()
        if keep.numel() != self.n_hidden:
            raise UsageError(f"keep must have one entry per hidden unit ({self.n_hidden}), "
                             f"got {keep.numel()}")
        bad = [name for name in (type(mod).__name__ for mod in self.modifiers
                                 if not getattr(mod, "unit_tensors", ()))]
        if bad:
            raise UsageError(f"modifier(s) {', '.join(bad)} cannot lose units (they declare no "
                             "per-unit tensors); train without shrinking (shrink_every=None)")
        kept = [keep[a:b].nonzero().flatten() for a, b in self.slices]  # local positions
        removed = [self.unit_ids[a:b][~keep[a:b]] for a, b in self.slices]
        index = self._relayout(kept, [None] * self.n_models)
        for mod in self.modifiers:
            mod.shrink_(self, index)
        self.init_grads()
        return BankShrink(kept, removed)

    @torch.no_grad()
    def grow_(self, m: int | Sequence[int], n: int | Sequence[int],
              init: str | tuple[Tensor, Tensor] | Sequence[tuple[Tensor, Tensor]] = "linear", *,
              ids: Sequence[Tensor] | None = None,
              generator: torch.Generator | None = None) -> BankGrowth:
        """Append ``n`` first-layer units to model ``m`` (or to several models at once).

        The inverse of :meth:`shrink_`: the new units' incoming weights and biases come from
        ``init``, their outgoing weights (the second layer's new input columns) are zero, so
        every model's outputs are unchanged at insertion (bitwise: the new terms are exact
        zeros). Models are regrouped by their new widths; every modifier extends its per-unit
        tensors (it must define ``grow_(bank, index)``). Gradients are reset; optimizer state
        is carried by :meth:`widthlab.engine.optim.BankOptimizer.grown` (zero for new units).

        Parameters
        ----------
        m : int or sequence of int
            The model(s) that grow.
        n : int or sequence of int
            Units to add, one count for all or one per model in ``m``.
        init : "linear", (weight, bias) or a sequence of them
            ``"linear"``: ``nn.Linear``'s initialisation drawn from ``generator``; otherwise
            the incoming weights ``(n, in)`` and biases ``(n,)`` of each model's new units.
        ids : sequence of LongTensor, optional
            Original indices (``unit_ids``) of the new units, per model; default: numbers after
            the largest of the model's spec width and its current ids.
        generator : torch.Generator, optional
            For ``init="linear"`` (default: seeded with 0).

        Returns
        -------
        BankGrowth
            Per model: where each unit of the new slice came from, and the new ids.
        """
        models = [int(m)] if isinstance(m, int) else [int(v) for v in m]
        counts = [int(n)] * len(models) if isinstance(n, int) else [int(v) for v in n]
        if len(counts) != len(models) or len(set(models)) != len(models) or any(
                not 0 <= v < self.n_models for v in models) or any(c < 0 for c in counts):
            raise UsageError(f"grow_ needs distinct model indices in [0, {self.n_models}) and "
                             f"one count >= 0 for all or per model; got m={m!r}, n={n!r}")
        if isinstance(init, str):
            if init != "linear":
                raise UsageError(f"unknown init {init!r}; pass 'linear' or (weight, bias)")
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            init = [init_linear(c, self.in_features, g) for c in counts]
        elif isinstance(init, tuple) and len(init) == 2 and torch.is_tensor(init[0]):
            init = [init]
        init = list(init)
        for (w, b), c in zip(init, counts, strict=True):
            if tuple(w.shape) != (c, self.in_features) or tuple(b.shape) != (c,):
                raise UsageError(f"init for {c} units needs a weight ({c}, {self.in_features}) "
                                 f"and a bias ({c},); got {tuple(w.shape)}, {tuple(b.shape)}")
        bad = [type(mod).__name__ for mod in self.modifiers if not hasattr(mod, "grow_")]
        if bad:
            raise UsageError(f"modifier(s) {', '.join(bad)} cannot gain units (no grow_); use "
                             "widthlab.nn.growth.GrowingGate")
        new: list[tuple[Tensor, Tensor] | None] = [None] * self.n_models
        new_ids = [torch.zeros(0, dtype=torch.long) for _ in range(self.n_models)]
        for k, (v, c, rows) in enumerate(zip(models, counts, init, strict=True)):
            new[v] = rows
            a, b = self.slices[v]
            first = max(self.specs[v].width, int(self.unit_ids[a:b].max()) + 1 if b > a else 0)
            new_ids[v] = (torch.arange(first, first + c) if ids is None
                          else torch.as_tensor(ids[k], dtype=torch.long).flatten())
        sources = [torch.cat([torch.arange(b - a), torch.full((len(new_ids[v]),), -1)])
                   for v, (a, b) in enumerate(self.slices)]
        kept = [torch.arange(b - a) for a, b in self.slices]
        index = self._relayout(kept, new, new_ids)
        for mod in self.modifiers:
            mod.grow_(self, index)
        self.init_grads()
        return BankGrowth(sources, new_ids)

    def _relayout(self, kept: list[Tensor], new: list[tuple[Tensor, Tensor] | None],
                  new_ids: list[Tensor] | None = None) -> Tensor:
        """Rebuild the tensors with model ``m``'s units ``kept[m]`` (local positions) followed
        by the units ``new[m]`` (incoming weight, bias; outgoing weights zero), regrouped.
        Returns, per unit of the new layout, its position in the old one (-1: new unit)."""
        old_slices, old_where = list(self.slices), list(self._where)
        old_layer_index = list(self._layer_index)
        old_weights, old_biases = list(self.weights), list(self.biases)
        added = [0 if r is None else r[0].shape[0] for r in new]
        self.archs = [(len(k) + c, *arch[1:])
                      for k, c, arch in zip(kept, added, self.archs, strict=True)]
        self._layout()
        dev, w0, b0 = self.device, self.w0.detach(), self.b0.detach()
        index, ids, w0s, b0s = [], [], [], []
        for m in self._order():
            old = old_slices[m][0] + kept[m].cpu()  # on the CPU: take() costs no sync
            index.append(torch.cat([old, torch.full((added[m],), -1)]).to(dev))
            w0s.append(take(w0, 0, old))
            b0s.append(take(b0, 0, old))
            ids.append(take(self.unit_ids, 0, old))
            if added[m]:
                w0s.append(new[m][0].to(dev, w0.dtype))
                b0s.append(new[m][1].to(dev, b0.dtype))
                ids.append(new_ids[m])
        self.unit_ids = torch.cat(ids)
        self.w0 = nn.Parameter(torch.cat(w0s), requires_grad=False)
        self.b0 = nn.Parameter(torch.cat(b0s))
        weights, biases = nn.ParameterList(), nn.ParameterList()
        for arch, members in self.groups:
            for layer in range(len(arch)):
                ws, bs = [], []
                for m in members:
                    g, k = old_where[m]
                    w = old_weights[old_layer_index[g] + layer].detach()[k]  # (out, in)
                    if layer == 0:  # the second layer's inputs are the first layer's units
                        cols = torch.cat([kept[m].cpu(), torch.full((added[m],), -1)])
                        w = take(w, 1, cols)  # new units' outgoing weights: zero
                    ws.append(w)
                    bs.append(old_biases[old_layer_index[g] + layer].detach()[k])
                weights.append(nn.Parameter(torch.stack(ws)))
                biases.append(nn.Parameter(torch.stack(bs)))
        self.weights, self.biases = weights, biases
        self.w0_grad = torch.zeros_like(self.w0)
        return torch.cat(index) if index else torch.zeros(0, dtype=torch.long, device=dev)

    def layout_state(self) -> dict | None:
        """Current widths and original unit indices, for a checkpoint; None while the bank
        still has the layout it was built with from its specs (never shrunk nor grown)."""
        widths = [arch[0] for arch in self.archs]
        initial = torch.cat([torch.arange(widths[m]) for m in self._order()])
        if widths == [s.width for s in self.specs] and torch.equal(self.unit_ids, initial):
            return None
        return {"widths": widths, "unit_ids": self.unit_ids.clone()}
