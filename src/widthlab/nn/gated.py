"""Sparsifier layers: per-neuron gates under an L1 penalty, dead neurons removed for real.

The journal's *Sparsifier Network* ("Implement the first version of a Sparsifier Network"): every
hidden neuron ``i`` is multiplied by a learned gate ``relu(g_i)`` (``g`` starts at 1) and the
loss gets ``lambda * penalty(g)``, with penalty

* ``"strict"``: ``sum(relu(g))``. A gate that reaches 0 gets no gradient from either term
  again, so a dead neuron stays dead;
* ``"abs"``: ``sum(|g|)``. Below 0 the penalty pushes the gate back towards 0, so a neuron is
  only dead at the moment it is looked at.

A neuron whose gate ``relu(g_i)`` is 0 contributes exact zeros, so removing it changes no
output (beyond the summation order). ``shrink_`` does that in place: the layer's weight, bias
and gate rows, the next layer's input columns and the optimizer's per-parameter state (Adam
moments) lose the dead neurons; the parameter objects stay the same, so the optimizer keeps
working. ``mask_`` is the alternative that keeps the width and switches dead neurons off for
good (what shrinking is compared against).

Three pieces:

* :class:`GatedLinear`, a standalone ``nn.Module`` (``linear(x) * relu(g)``);
* :class:`GatedMLP`, a stack of gated hidden layers (ReLU) and a plain output layer, any depth;
* :class:`SparsifierGate`, the same gate as a :class:`~widthlab.nn.modifiers.Modifier` of an
  :class:`~widthlab.nn.bank.MLPBank`, so the engine trains many sparsifiers (one lambda each) in
  one run and removes their dead neurons (``TrainConfig.shrink_every``). The bank path gates the
  *first* hidden layer only; use :class:`GatedMLP` to gate every layer of a deeper network.

Example::

    net = GatedMLP([784, 500, 10], penalty="strict", seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = F.cross_entropy(net(x), y) + 1e-3 * net.penalty()
    ...
    removed = net.shrink_(opt)          # [indices removed from each hidden layer]
    net.widths                          # e.g. [137]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.bank import init_mlp
from widthlab.nn.modifiers import NeuronGate
from widthlab.nn.surgery.gates import draw_uniforms, load_noise, noise_seed, save_noise
from widthlab.nn.surgery.kinds import L1_PENALTIES, L1Kind, get_gate_kind
from widthlab.units.state import slice_param_

PENALTIES = L1_PENALTIES


def gate_penalty(gate: Tensor, kind: str) -> Tensor:
    """Per-neuron penalty terms of the gates ``(..., n)`` (not summed): ``relu(g)`` for
    ``"strict"``, ``|g|`` for ``"abs"`` (the L1 kind's
    :meth:`~widthlab.nn.surgery.kinds.L1Kind.penalty_terms`)."""
    return L1Kind(kind).penalty_terms(gate)


class GatedLinear(nn.Module):
    """``y = (x @ W.T + b) * relu(g)``: a linear layer whose output neurons have learned gates.

    Parameters
    ----------
    in_features, out_features : int
    penalty : {"strict", "abs"}
        What :meth:`penalty` sums: ``relu(g)`` or ``|g|``.
    bias : bool
    device, dtype
        Passed to the parameters.

    Attributes
    ----------
    weight : Parameter of shape (out_features, in_features)
    bias : Parameter of shape (out_features,) or None
    gate : Parameter of shape (out_features,), initialised to 1
    mask : buffer of shape (out_features,)
        1 for a live neuron, 0 for one switched off by :meth:`mask_`.
    """

    def __init__(self, in_features: int, out_features: int, penalty: str = "strict", *,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        if in_features < 0 or out_features < 0:
            raise UsageError(f"GatedLinear needs sizes >= 0, got {in_features}, {out_features}")
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.kind = L1Kind(penalty)  # the gate family's L1 member: relu(g), its price, death
        self.penalty_kind = self.kind.penalty
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        self.gate = nn.Parameter(torch.ones(out_features, **kw))
        self.register_buffer("mask", torch.ones(out_features, **kw))
        self._masked = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation for weight and bias; gates to 1, mask cleared."""
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        with torch.no_grad():
            nn.init.uniform_(self.weight, -bound, bound)
            if self.bias is not None:
                nn.init.uniform_(self.bias, -bound, bound)
            self.gate.fill_(1.0)
            self.mask.fill_(1.0)
        self._masked = False

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._masked = bool((self.mask == 0).any())  # the flag follows the loaded mask

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"penalty={self.penalty_kind!r}, alive={self.n_alive}")

    def scale(self) -> Tensor:
        """Each neuron's multiplier ``relu(g) * mask``, ``(out_features,)``."""
        s = self.kind.scale(self.gate)
        return s * self.mask if self._masked else s

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) * self.scale()  # (B, out)

    def penalty(self) -> Tensor:
        """Unweighted penalty, a scalar: ``sum(relu(g))`` or ``sum(|g|)`` over live neurons."""
        terms = self.kind.penalty_terms(self.gate)  # (out,)
        return (terms * self.mask).sum() if self._masked else terms.sum()

    @property
    def alive(self) -> Tensor:
        """Bool ``(out_features,)``: the neuron's gate ``relu(g) * mask`` is above 0."""
        return ~self.kind.dead(self.gate.detach()) & (self.mask > 0)

    @property
    def n_alive(self) -> int:
        return int(self.alive.sum())

    @torch.no_grad()
    def mask_(self) -> Tensor:
        """Switch dead neurons off for good without removing them; returns their indices.

        The mask also removes them from the penalty, so an ``"abs"`` gate cannot come back.
        """
        dead = (~self.alive).nonzero().flatten()
        if len(dead):
            self.mask[dead] = 0.0
            self._masked = True
        return dead

    @torch.no_grad()
    def shrink_(self, next_layer: nn.Module | None = None,
                optimizer: torch.optim.Optimizer | None = None) -> Tensor:
        """Remove dead neurons in place; returns their indices (before the removal).

        Parameters
        ----------
        next_layer : nn.Linear or GatedLinear, optional
            The layer reading this one's outputs: its input columns of the dead neurons go too.
        optimizer : torch.optim.Optimizer, optional
            Its per-parameter state tensors (Adam's ``exp_avg``, ``exp_avg_sq``, ...) of every
            parameter touched are sliced the same way; step counts stay.
        """
        alive = self.alive
        removed = (~alive).nonzero().flatten()
        if len(removed) == 0:
            return removed
        if next_layer is not None and next_layer.weight.shape[1] != self.out_features:
            raise UsageError(f"next_layer takes {next_layer.weight.shape[1]} inputs but this "
                             f"layer has {self.out_features} outputs; pass the layer that "
                             "reads this one")
        keep = alive.nonzero().flatten()
        for p in (self.weight, self.bias, self.gate):
            if p is not None:
                slice_param_(p, 0, keep, optimizer)
        self.mask = self.mask[keep]
        self._masked = bool((self.mask == 0).any())
        self.out_features = len(keep)
        if next_layer is not None:
            slice_param_(next_layer.weight, 1, keep, optimizer)
            next_layer.in_features = len(keep)
        return removed


class GatedMLP(nn.Module):
    """``in -> h1 -> ... -> hk -> out``: every hidden layer a :class:`GatedLinear` with ReLU,
    a plain ``nn.Linear`` output.

    Parameters
    ----------
    sizes : sequence of int
        ``[in, h1, ..., hk, out]``, ``k >= 1``.
    penalty : {"strict", "abs"}
    seed : int
        Weights and biases equal those of ``widthlab.nn.MLP(sizes, seed)`` (and of a bank
        member with that seed); gates start at 1.
    """

    def __init__(self, sizes: Sequence[int], penalty: str = "strict", *, seed: int = 0):
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 3 or any(s < 1 for s in sizes):
            raise UsageError(f"GatedMLP needs sizes [in, h1, ..., out] (>= 1 hidden layer, "
                             f"positive sizes), got {sizes}")
        self.hidden = nn.ModuleList(GatedLinear(i, o, penalty)
                                    for i, o in zip(sizes[:-2], sizes[1:-1], strict=True))
        self.out = nn.Linear(sizes[-2], sizes[-1])
        with torch.no_grad():
            layers = [*self.hidden, self.out]
            for layer, (w, b) in zip(layers, init_mlp(sizes, seed), strict=True):
                layer.weight.copy_(w)
                layer.bias.copy_(b)

    @property
    def widths(self) -> list[int]:
        """Current hidden widths (alive or not)."""
        return [layer.out_features for layer in self.hidden]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = F.relu(layer(x))  # (B, h): relu(z) * relu(g) = relu(z * relu(g))
        return self.out(x)  # (B, out)

    def penalty(self) -> Tensor:
        """Sum of the hidden layers' unweighted penalties (a scalar)."""
        return torch.stack([layer.penalty() for layer in self.hidden]).sum()

    def mask_(self) -> list[Tensor]:
        """:meth:`GatedLinear.mask_` on every hidden layer."""
        return [layer.mask_() for layer in self.hidden]

    def shrink_(self, optimizer: torch.optim.Optimizer | None = None) -> list[Tensor]:
        """Remove every hidden layer's dead neurons (and the next layer's columns, and the
        optimizer state); returns the removed indices per hidden layer."""
        nxt = [*self.hidden[1:], self.out]
        return [layer.shrink_(n, optimizer) for layer, n in zip(self.hidden, nxt, strict=True)]


class SparsifierGate(NeuronGate):
    """The sparsifier's gates on a bank's first hidden layer: scale ``relu(g) * mask``,
    penalty ``l1 * sum(relu(g))`` ("strict") or ``l1 * sum(|g|)`` ("abs") per model; or, with
    ``gate_kind="hard_concrete"``, Louizos et al.'s L0 gates (:mod:`widthlab.nn.surgery.kinds`):
    a seeded sample per training step, the deterministic gate under ``torch.no_grad`` (the
    engine's evaluation and statistics), penalty ``l1 * sum(expected L0)``.

    Dead units (gate exactly 0, or masked) are what the engine removes (``shrink_every``) or
    masks. Each epoch it records, per model, ``alive_width`` (units with a live gate),
    ``kept_width`` (units still computed) and ``gate_l1`` (the sum of the live units'
    deterministic gates: ``sum(relu(g))`` for the L1 kind).

    Parameters
    ----------
    l1 : float or sequence of float
        Penalty weight lambda, one for all models or one per model.
    penalty : {"strict", "abs"}
        The L1 kind's price.
    lr : float or None
        Learning rate of the gates (None: the model's).
    gate_kind : {"l1", "hard_concrete"}
    seed : int
        Seed of the hard-concrete noise (its generator's state is in the ``state_dict``, so a
        checkpoint resumes the same noise).
    """

    unit_tensors = ("gate", "mask")

    def __init__(self, l1: float | Sequence[float] = 0.0, *, penalty: str = "strict",
                 lr: float | None = None, gate_kind: str = "l1", seed: int = 0):
        super().__init__(list(l1) if isinstance(l1, Sequence) else l1, lr=lr)
        self.penalty_kind = L1Kind(penalty).penalty
        self.gate_kind, self.seed = str(gate_kind), int(seed)
        self.kind = get_gate_kind(L1Kind(penalty) if gate_kind == "l1" else gate_kind)
        self.noise = None
        if self.kind.stochastic:
            self.unit_tensors = (*type(self).unit_tensors, "noise_ids")
            self.noise = torch.Generator().manual_seed(noise_seed(seed, "bank"))
        self._has_mask = False  # whether some unit is masked (skip the multiply otherwise)

    def build(self, bank) -> None:
        super().build(bank)
        self.register_buffer("mask", torch.ones(bank.n_hidden))
        if self.kind.stochastic:
            with torch.no_grad():
                self.gate.fill_(self.kind.default_init)
            # each unit's place in the noise drawn per step (for the units every model started
            # with), kept when units are removed and restored from a checkpoint
            self.register_buffer("noise_ids", torch.arange(bank.n_hidden))
            self.n_noise = sum(spec.width for spec in bank.specs)  # places drawn per step
            self.register_buffer("noise_count", torch.tensor(self.n_noise))

    def describe(self) -> dict:
        out = {**super().describe(), "penalty": self.penalty_kind}
        if self.gate_kind != "l1":  # an L1 gate's description (its runs' ids) as before
            out.update(gate_kind=self.gate_kind, seed=self.seed)
        return out

    def _masked(self) -> bool:
        return self._has_mask

    def scale(self) -> Tensor:
        if self.kind.stochastic and torch.is_grad_enabled():
            u = draw_uniforms(self.noise, self.n_noise, self.noise_ids, self.gate)
            s = self.kind.sample(self.gate, u)
        else:
            s = self.kind.scale(self.gate)  # (H,)
        return s * self.mask if self._masked() else s

    def penalty(self) -> Tensor:
        terms = self.kind.penalty_terms(self.gate)  # (H,)
        if self._masked():
            terms = terms * self.mask
        return self.l1 * self.per_model_sum(terms)  # (M,)

    def alive_units(self) -> Tensor:
        return ~self.kind.dead(self.gate.detach()) & (self.mask > 0)

    @torch.no_grad()
    def mask_(self, keep: Tensor) -> None:
        off = ~keep.to(self.mask.device)
        if bool(off.any()):
            self.mask[off] = 0.0
        self._has_mask = bool((self.mask == 0).any())

    def shrink_(self, bank, index: Tensor) -> None:
        super().shrink_(bank, index)
        self._has_mask = bool((self.mask == 0).any())

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        save_noise(self.noise, destination, prefix)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        self._has_mask = bool((self.mask == 0).any())
        if self.noise is not None:
            load_noise(self.noise, state_dict, prefix, strict, missing_keys, unexpected_keys)
            self.n_noise = int(self.noise_count)

    def add_noise_places(self, n: int) -> Tensor:
        """Places in the per-step noise for ``n`` new units (a growing gate), ``(n,)``."""
        ids = torch.arange(self.n_noise, self.n_noise + n)
        self.n_noise += n
        self.noise_count.fill_(self.n_noise)
        return ids

    def epoch_records(self) -> list[tuple[int, str, object]]:
        alive = self.alive_units().float()
        n_alive = self.per_model_sum(alive).tolist()
        gate_l1 = self.per_model_sum(self.kind.scale(self.gate.detach()) * alive).tolist()
        out = []
        for m, (a, b) in enumerate(self.slices):
            out += [(m, "alive_width", n_alive[m]), (m, "kept_width", b - a),
                    (m, "gate_l1", gate_l1[m])]
        return out
