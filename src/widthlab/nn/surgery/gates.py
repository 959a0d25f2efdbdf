"""Per-unit gates on a user's own ``nn.Linear`` / ``nn.Conv2d`` layers, attached in place.

A :class:`UnitGate` multiplies each unit (an output feature of a Linear, an output channel of a
Conv2d, or an input feature of either) by ``relu(g)``, the journal's sparsifier gate, and
:meth:`UnitGate.penalty` is its L1 price (``sum(relu(g))`` for ``"strict"``, ``sum(|g|)`` for
``"abs"``). :func:`gate_layers` attaches gates to named layers of any model with forward hooks
(the model's code is not touched): an *output* gate after the layer, or after the BatchNorm
that follows a conv (so a dead channel is exactly 0 after the normalisation too); an *input*
gate before the layer (``inputs=True``): on the units of the layer that feeds it when that
layer can be followed (the 300 hidden units of LeNet-300-100's second layer), otherwise on the
raw input features, which the gate then *selects* (the 784 pixels: a removed pixel is no
longer read).

Example::

    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))
    gates = gate_layers(model, ["0"], inputs=True)     # pixels and the 300 hidden units
    loss = F.cross_entropy(model(x), y) + 1e-4 * sum(g.penalty() for g in gates)
    ...
    shrink_(model, optimizer)                          # widthlab.nn.surgery.shrink_
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError

PENALTIES = ("strict", "abs")
OUT_ATTR, IN_ATTR = "widthlab_out_gate", "widthlab_in_gate"


class UnitGate(nn.Module):
    """``x * relu(g)`` along one dimension of ``x``; optionally selects ``x``'s kept units first.

    Parameters
    ----------
    n : int
        Number of units.
    dim : int
        The dimension of ``x`` the units index (``-1`` for Linear features, ``1`` for channels).
    key : str
        The name :func:`shrink_` and :func:`gate_widths` report the gate under.
    penalty : {"strict", "abs"}
    init : float
        Initial value of every ``g``.
    selects : bool
        The gate sits on a layer's raw inputs: it keeps ``index`` (the input positions still
        read) and forwards ``x.index_select(dim, index) * relu(g)``.
    flip_momentum : float
        Momentum of the running mean / variance of ``sign(g)`` (Smallify's rule).
    price_scale : float
        Multiplier of this gate's :meth:`penalty` (a per-layer price: e.g. a pixel that feeds
        300 weights priced above a hidden unit); settable after :func:`gate_layers`.

    Attributes
    ----------
    gate : Parameter (n,)
    index : LongTensor buffer (n,), only when ``selects``
    n_in : int
        Size of the input along ``dim`` that ``index`` points into (``selects`` only).
    flip_mean, flip_var : buffers (n,)
        Updated on every training-mode forward.
    """

    def __init__(self, n: int, *, dim: int, key: str, penalty: str = "strict", init: float = 1.0,
                 selects: bool = False, flip_momentum: float = 0.9, price_scale: float = 1.0):
        super().__init__()
        if penalty not in PENALTIES:
            raise UsageError(f"unknown gate penalty {penalty!r}; choose one of "
                             f"{', '.join(PENALTIES)}")
        if not 0.0 <= flip_momentum < 1.0:
            raise UsageError(f"flip_momentum must be in [0, 1), got {flip_momentum}")
        if not price_scale >= 0:
            raise UsageError(f"price_scale must be >= 0, got {price_scale}")
        self.dim, self.key, self.penalty_kind = int(dim), str(key), penalty
        self.selects, self.n_in, self.flip_momentum = bool(selects), int(n), float(flip_momentum)
        self.price_scale = float(price_scale)
        self.gate = nn.Parameter(torch.full((int(n),), float(init)))
        if self.selects:
            self.register_buffer("index", torch.arange(int(n)))
        sign = 1.0 if init > 0 else (-1.0 if init < 0 else 0.0)
        self.register_buffer("flip_mean", torch.full((int(n),), sign))
        self.register_buffer("flip_var", torch.zeros(int(n)))

    @property
    def width(self) -> int:
        """Current number of units."""
        return int(self.gate.shape[0])

    def extra_repr(self) -> str:
        return (f"key={self.key!r}, width={self.width}, penalty={self.penalty_kind!r}, "
                f"selects={self.selects}")

    def scale(self) -> Tensor:
        """``relu(g)``, shape ``(n,)``."""
        return F.relu(self.gate)

    def forward(self, x: Tensor) -> Tensor:
        if self.selects:
            x = x.index_select(self.dim, self.index)
        if self.training:
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
        """L1 price, a scalar: ``price_scale * sum(relu(g))`` ("strict") or
        ``price_scale * sum(|g|)`` (unweighted at the default ``price_scale = 1``, exactly)."""
        l1 = F.relu(self.gate).sum() if self.penalty_kind == "strict" else self.gate.abs().sum()
        return self.price_scale * l1


def _gate_output(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
    return getattr(module, OUT_ATTR)(output)


def _gate_input(module: nn.Module, args: tuple) -> tuple:
    return (getattr(module, IN_ATTR)(args[0]), *args[1:])


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


def gate_layers(model: nn.Module, names: Sequence[str], penalty: str = "strict",
                init: float = 1.0, inputs: bool | str = False) -> list[UnitGate]:
    """Put a sparsifier gate on the units of each named layer of ``model``, in place.

    Parameters
    ----------
    model : nn.Module
        Any model torch.fx can trace; it keeps working as before (the gates start at
        ``relu(init)``, so ``init=1.0`` changes no output).
    names : sequence of str
        Names of ``nn.Linear`` / ``nn.Conv2d`` submodules (as in ``model.named_modules()``).
    penalty : {"strict", "abs"}
        What each gate's :meth:`UnitGate.penalty` sums: ``relu(g)`` (a dead unit stays dead)
        or ``|g|``.
    init : float
        Initial gate value.
    inputs : bool or "only"
        ``False``: gate the layers' output units (a Conv2d's channels, after the BatchNorm
        that follows it). ``True``: also gate their input features. ``"only"``: gate the
        input features only. An input gate sits on the units of the layer that feeds it when
        the units flow only into this layer (then shrinking removes them from that layer
        too); otherwise it selects the raw input features. An input gate on units that
        already have a gate is skipped.

    Returns
    -------
    list of UnitGate
        The new gates; key ``name`` for an output gate, ``name + ":in"`` for an input gate.

    Raises
    ------
    UsageError
        Unknown name, a layer that is not Linear/Conv2d, a layer already gated, or output
        units that cannot be followed (a residual add, a concat, the model's output).
    """
    from widthlab.nn.surgery.graph import plan_gates  # graph imports this module

    if inputs not in (False, True, "only"):
        raise UsageError(f"inputs must be False, True or 'only', got {inputs!r}")
    if penalty not in PENALTIES:
        raise UsageError(f"unknown gate penalty {penalty!r}; choose one of "
                         f"{', '.join(PENALTIES)}")
    outs = [] if inputs == "only" else list(names)
    ins = list(names) if inputs else []
    specs = plan_gates(model, outs, ins)  # validates everything before any change
    gates = []
    for spec in specs:
        gate = UnitGate(spec.n, dim=spec.dim, key=spec.key, penalty=penalty, init=init,
                        selects=spec.selects)
        _attach(spec.module, spec.attr, gate, spec.like)
        gates.append(gate)
    return gates
