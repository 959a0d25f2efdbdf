"""Per-unit gates on a user's own ``nn.Linear`` / ``nn.Conv2d`` layers, attached in place.

A :class:`UnitGate` multiplies each unit (an output feature of a Linear, an output channel of a
Conv2d, or an input feature of either) by its gate, and :meth:`UnitGate.penalty` is the gate's
price. What the gate is comes from its *kind* (:mod:`~widthlab.nn.surgery.kinds`): ``"l1"``,
the journal's sparsifier gate ``relu(g)`` under an L1 price (``sum(relu(g))`` for
``"strict"``, ``sum(|g|)`` for ``"abs"``), or ``"hard_concrete"``, Louizos et al.'s stochastic
L0 gate (a seeded sample per minibatch in training, its deterministic clamp in evaluation,
the expected L0 norm as price). :func:`gate_layers` attaches gates to named layers of any
model with forward hooks (the model's code is not touched): an *output* gate after the layer,
or after the BatchNorm that follows a conv (so a dead channel is exactly 0 after the
normalisation too); an *input* gate before the layer (``inputs=True``): on the units of the
layer that feeds it when that layer can be followed (the 300 hidden units of LeNet-300-100's
second layer), otherwise on the raw input features, which the gate then *selects* (the 784
pixels: a removed pixel is no longer read).

Example::

    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))
    gates = gate_layers(model, ["0"], inputs=True, example=x[:2])  # pixels, 300 hidden units
    loss = F.cross_entropy(model(x), y) + 1e-4 * sum(g.penalty() for g in gates)
    ...
    shrink_(model, optimizer)                          # widthlab.nn.surgery.shrink_

    gate_layers(model, ["0"], kind="hard_concrete", seed=0, example=x[:2])  # L0 gates
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.surgery.kinds import L1_PENALTIES, GateKind, L1Kind, get_gate_kind

PENALTIES = L1_PENALTIES
OUT_ATTR, IN_ATTR = "widthlab_out_gate", "widthlab_in_gate"
NOISE_KEY = "noise_state"  # the state_dict entry of a stochastic gate's generator state


def save_noise(noise: torch.Generator | None, destination: dict, prefix: str) -> None:
    """Put a stochastic gate's generator state into its ``state_dict`` (``prefix`` +
    :data:`NOISE_KEY`), so that a resumed run draws the same noise."""
    if noise is not None:
        destination[prefix + NOISE_KEY] = noise.get_state()


def load_noise(noise: torch.Generator | None, state_dict, prefix: str, strict: bool,
               missing_keys: list, unexpected_keys: list) -> None:
    """Restore what :func:`save_noise` stored (inside ``_load_from_state_dict``)."""
    if noise is None:
        return
    key = prefix + NOISE_KEY
    if key in unexpected_keys:
        unexpected_keys.remove(key)
    if key in state_dict:
        noise.set_state(state_dict[key].cpu())
    elif strict:
        missing_keys.append(key)


def _kind(kind: str | GateKind, penalty: str) -> GateKind:
    if isinstance(kind, str) and kind == "l1":
        return L1Kind(penalty)
    if penalty not in PENALTIES:
        raise UsageError(f"unknown gate penalty {penalty!r}; choose one of "
                         f"{', '.join(PENALTIES)}")
    if penalty != "strict":  # not silently dropped: only the "l1" name takes it
        raise UsageError(f"penalty={penalty!r} is an option of kind='l1' only; the "
                         f"{getattr(kind, 'name', kind)!r} kind prices its own way (leave "
                         "penalty at 'strict', or build the kind object with its options)")
    return get_gate_kind(kind)


def draw_uniforms(gen: torch.Generator, n: int, ids: Tensor, like: Tensor) -> Tensor:
    """``n`` uniforms from the CPU generator ``gen``, on ``like``'s device and dtype, read at
    ``ids`` (on that device). On CUDA the copy goes through pinned memory without a sync."""
    u = torch.rand(n, generator=gen)
    if like.device.type == "cuda":
        u = u.pin_memory().to(like.device, non_blocking=True)
    return u.to(like.device, like.dtype).index_select(0, ids)


def noise_seed(seed: int, key: str) -> int:
    """The seed of the noise generator of gate ``key`` of a model gated with ``seed``."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())])
               .generate_state(1)[0])


class UnitGate(nn.Module):
    """``x * gate`` along one dimension of ``x``; optionally selects ``x``'s kept units first.

    Parameters
    ----------
    n : int
        Number of units.
    dim : int
        The dimension of ``x`` the units index (``-1`` for Linear features, ``1`` for channels).
    key : str
        The name :func:`shrink_` and :func:`gate_widths` report the gate under.
    penalty : {"strict", "abs"}
        The L1 kind's price (other kinds refuse anything but the default).
    init : float, optional
        Initial value of every parameter (``g``, or ``log_alpha``); default the kind's
        (``1.0`` for ``"l1"``, ``log 4`` for ``"hard_concrete"``).
    selects : bool
        The gate sits on a layer's raw inputs: it keeps ``index`` (the input positions still
        read) and forwards ``x.index_select(dim, index) * gate``.
    flip_momentum : float
        Momentum of the running mean / variance of ``sign(g)`` (Smallify's rule).
    price_scale : float
        Multiplier of this gate's :meth:`penalty` (a per-layer price: e.g. a pixel that feeds
        300 weights priced above a hidden unit); settable after :func:`gate_layers`.
    kind : {"l1", "hard_concrete", "relative_l1"} or a kind object
        See :mod:`~widthlab.nn.surgery.kinds`.
    seed : int
        Seed of a stochastic kind's noise generator (one ``torch.Generator`` per gate, on the
        CPU; its state is part of the ``state_dict``, so a checkpoint resumes the same noise).

    Attributes
    ----------
    gate : Parameter (n,)
        ``g`` of the L1 kind, ``log_alpha`` of the hard-concrete kind.
    index : LongTensor buffer (n,), only when ``selects``
    n_in : int
        Size of the input along ``dim`` that ``index`` points into (``selects`` only).
    flip_mean, flip_var : buffers (n,)
        Updated on every training-mode forward of the L1 kind.
    unit_ids : LongTensor buffer (n,), stochastic kinds only
        Each kept unit's position among the ``n`` units the gate started with: the noise is
        drawn for all ``n`` and read at ``unit_ids``, so a removed unit changes no other
        unit's noise (training after :func:`shrink_` equals training with the unit masked).
    unit_weights : float or None
        When set (``gate_layers(..., per_weight=True)``), :meth:`penalty` multiplies every
        unit's term by it: the weights one unit gated when the model was gated (fixed, as in
        Louizos et al.; so removing units changes no other unit's price).
    """

    def __init__(self, n: int, *, dim: int, key: str, penalty: str = "strict",
                 init: float | None = None, selects: bool = False, flip_momentum: float = 0.9,
                 price_scale: float = 1.0, kind: str | GateKind = "l1", seed: int = 0):
        super().__init__()
        self.kind = _kind(kind, penalty)
        if not 0.0 <= flip_momentum < 1.0:
            raise UsageError(f"flip_momentum must be in [0, 1), got {flip_momentum}")
        if not price_scale >= 0:
            raise UsageError(f"price_scale must be >= 0, got {price_scale}")
        init = self.kind.default_init if init is None else float(init)
        self.dim, self.key = int(dim), str(key)
        self.penalty_kind = getattr(self.kind, "penalty", "expected_l0")
        self.selects, self.n_in, self.flip_momentum = bool(selects), int(n), float(flip_momentum)
        self.price_scale, self.unit_weights = float(price_scale), None
        self.gate = nn.Parameter(torch.full((int(n),), float(init)))
        if self.selects:
            self.register_buffer("index", torch.arange(int(n)))
        sign = 1.0 if init > 0 else (-1.0 if init < 0 else 0.0)
        self.register_buffer("flip_mean", torch.full((int(n),), sign))
        self.register_buffer("flip_var", torch.zeros(int(n)))
        self.noise, self.n_units = None, int(n)
        if self.kind.stochastic:
            self.noise = torch.Generator().manual_seed(noise_seed(seed, self.key))
            self.register_buffer("unit_ids", torch.arange(int(n)))

    @property
    def width(self) -> int:
        """Current number of units."""
        return int(self.gate.shape[0])

    def extra_repr(self) -> str:
        kind = "" if self.kind.name == "l1" else f"kind={self.kind.name!r}, "
        return (f"key={self.key!r}, width={self.width}, {kind}penalty={self.penalty_kind!r}, "
                f"selects={self.selects}")

    def scale(self) -> Tensor:
        """The deterministic (evaluation) gate, shape ``(n,)``: ``relu(g)``, or the
        hard-concrete ``clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``."""
        return self.kind.scale(self.gate)

    def uniforms(self) -> Tensor:
        """The next minibatch's uniforms of a stochastic kind, ``(n,)`` on the gate's device:
        ``n_units`` drawn from the gate's generator, read at ``unit_ids``."""
        return draw_uniforms(self.noise, self.n_units, self.unit_ids, self.gate)

    def forward(self, x: Tensor) -> Tensor:
        if self.selects:
            x = x.index_select(self.dim, self.index)
        if not self.training:
            s = self.scale()
        elif self.kind.stochastic:
            s = self.kind.sample(self.gate, self.uniforms())
        else:
            self._observe()
            s = self.scale()
        if self.dim not in (-1, x.ndim - 1):
            s = s.view(-1, *([1] * (x.ndim - 1 - self.dim)))  # (n, 1, ..., 1)
        return x * s

    @torch.no_grad()
    def _observe(self) -> None:
        """One step of the running mean and variance of ``sign(g)``."""
        mu = self.flip_momentum
        sign = torch.sign(self.gate.detach())
        self.flip_mean.mul_(mu).add_(sign, alpha=1 - mu)
        self.flip_var.mul_(mu).add_((sign - self.flip_mean) ** 2, alpha=1 - mu)

    def penalty(self) -> Tensor:
        """The price, a scalar: ``price_scale * sum(terms)`` with the kind's per-unit terms
        (L1: ``relu(g)`` or ``|g|``, unweighted at the default ``price_scale = 1``, exactly;
        hard-concrete: the expected L0 ``sigmoid(log_alpha - beta * log(-gamma / zeta))``),
        each times ``unit_weights`` when that is set."""
        total = self.kind.penalty_terms(self.gate).sum()
        if self.unit_weights is not None:
            total = total * self.unit_weights
        return self.price_scale * total

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        save_noise(self.noise, destination, prefix)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        load_noise(self.noise, state_dict, prefix, strict, missing_keys, unexpected_keys)


BYPASS: list[bool] = []  # while non-empty every gate hook is the identity (remove_units' check)


def _gate_output(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
    return output if BYPASS else getattr(module, OUT_ATTR)(output)


def _gate_input(module: nn.Module, args: tuple) -> tuple | None:
    gate = getattr(module, IN_ATTR)
    if BYPASS:  # a selecting gate still selects: its layer reads only the kept inputs
        return (args[0].index_select(gate.dim, gate.index), *args[1:]) if gate.selects else None
    return (gate(args[0]), *args[1:])


def model_gates(model: nn.Module) -> list[UnitGate]:
    """Every :class:`UnitGate` inside ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, UnitGate)]


def gate_widths(model: nn.Module) -> dict[str, int]:
    """``{gate key: current number of units}`` of every gate of ``model``."""
    return {g.key: g.width for g in model_gates(model)}


def size_penalty(model: nn.Module) -> Tensor:
    """``sum(g.penalty())`` over every gate of ``model`` (0 when it has none)."""
    terms = [g.penalty() for g in model_gates(model)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def _attach(module: nn.Module, attr: str, gate: UnitGate, like: Tensor) -> None:
    gate.to(device=like.device, dtype=like.dtype if like.is_floating_point() else None)
    module.add_module(attr, gate)
    if attr == OUT_ATTR:
        module.register_forward_hook(_gate_output)
    else:
        module.register_forward_pre_hook(_gate_input)


def gate_layers(model: nn.Module, names: Sequence[str] = (), penalty: str = "strict",
                init: float | None = None, inputs: bool | str = False,
                kind: str | GateKind = "l1", seed: int = 0,
                per_weight: bool = False, *, groups=None, example=None) -> list[UnitGate]:
    """Put a sparsifier gate on the units of each named layer of ``model``, in place.

    Parameters
    ----------
    model : nn.Module
        Any model whose forward runs eagerly on ``example``; it keeps working as before (the
        L1 gates start at ``relu(init)``, so the default ``init=1.0`` changes no output).
    names : sequence of str
        Names of ``nn.Linear`` / ``nn.Conv2d`` submodules (as in ``model.named_modules()``).
    penalty : {"strict", "abs"}
        What each L1 gate's :meth:`UnitGate.penalty` sums: ``relu(g)`` (a dead unit stays
        dead) or ``|g|``.
    init : float, optional
        Initial gate parameter (default: the kind's, see :class:`UnitGate`).
    inputs : bool or "only"
        ``False``: gate the layers' output units (a Conv2d's channels, after the BatchNorm
        that follows it). ``True``: also gate their input features. ``"only"``: gate the
        input features only. An input gate sits on the units of the layer that feeds it when
        the units flow only into this layer (then shrinking removes them from that layer
        too); otherwise it selects the raw input features. An input gate on units that
        already have a gate is skipped.
    kind : {"l1", "hard_concrete", "relative_l1"} or a kind object
        The gate kind (:func:`~widthlab.nn.surgery.kinds.get_gate_kind`).
    seed : int
        Seed of the stochastic kinds' noise (each gate draws from its own generator, seeded
        from ``seed`` and its key).
    per_weight : bool
        Price each unit per weight it gates (:attr:`UnitGate.unit_weights`, counted now): an
        output gate its producer's weights (a row, a filter), an input gate its consumers'.
    groups : sequence of Group or str, optional
        Instead of ``names`` (no ``inputs``, ``per_weight``): groups of
        :func:`widthlab.units.build_graph` (handles or names: streams, heads, FFN, channels),
        one gate each, at one point where a gate of 0 equals removing the unit
        (:mod:`~widthlab.nn.surgery.unit_gates`).
    example : Tensor or tuple
        Required: a small input batch (``x[:2]``, or a tuple of the model's positional
        inputs). The model is traced on it (:func:`widthlab.units.build_graph`) to find which
        layers read the gated units; with ``names`` it is kept on the model (not in its
        ``state_dict``) and :func:`shrink_` traces the model on it again.

    Returns
    -------
    list of UnitGate
        The new gates; key ``name`` for an output gate, ``name + ":in"`` for an input gate,
        the group's name for a group gate.

    Raises
    ------
    UsageError
        No ``example``, an unknown name or kind, a layer that is not Linear/Conv2d, a layer
        already gated or not called exactly once, or output units where a gate of 0 is not
        their removal (a residual stream or heads: gate those with ``groups=``; the model's
        output; a BatchNorm or a sigmoid after the gate); see
        :mod:`~widthlab.nn.surgery.layer_gates`.
    """
    from widthlab.nn.surgery.layer_gates import plan_gates  # imports this module

    if groups is not None:
        return _by_groups(model, names, inputs or per_weight, groups, example,
                          _kind(kind, penalty), init, seed)
    if inputs not in (False, True, "only"):
        raise UsageError(f"inputs must be False, True or 'only', got {inputs!r}")
    gate_kind = _kind(kind, penalty)
    outs = [] if inputs == "only" else list(names)
    ins = list(names) if inputs else []
    specs = plan_gates(model, outs, ins, example)  # validates before any change
    modules = dict(model.named_modules())
    gates = []
    for spec in specs:
        gate = UnitGate(spec.n, dim=spec.dim, key=spec.key, init=init, selects=spec.selects,
                        kind=gate_kind, seed=seed)
        _attach(spec.module, spec.attr, gate, spec.like)
        if per_weight:  # the weights one unit gates: a row / filter, or an input column
            gate.unit_weights = float(modules[spec.layer].weight.numel()) / max(spec.n, 1)
        gates.append(gate)
    return gates


def _by_groups(model, names, layer_options, groups, example, kind, init, seed):
    from widthlab.nn.surgery.unit_gates import gate_groups  # imports this module

    if list(names) or layer_options:
        raise UsageError("gate_layers: pass either names (layers) or groups (units-core "
                         "groups), and no inputs/per_weight with groups")
    return gate_groups(model, groups, example, kind=kind, init=init, seed=seed)
