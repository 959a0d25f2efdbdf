"""Modifiers: per-hidden-unit rescaling of a bank's first layer, with a per-model penalty.

A modifier is how a layer kind that learns its width plugs into :class:`~widthlab.nn.bank.MLPBank`
without a second training loop. It owns parameters for *all* models of the bank (stacked along
the hidden units), multiplies the ReLU activations ``(B, H)`` by a scale ``(H,)`` and adds one
penalty per model ``(M,)`` to the loss. The optimizer steps each model's share as its own tensors,
with the modifier's learning rate when it sets one.

Subclasses implement :meth:`Modifier.scale`, :meth:`Modifier.penalty` and
:meth:`Modifier.model_params`; :class:`NeuronGate` is the simplest example.

A modifier whose tensors are all per-unit (indexed by the hidden units along dimension 0) lists
them in ``unit_tensors``; the bank can then remove units for real (:meth:`MLPBank.shrink_`),
and a modifier that says which units are dead (:meth:`Modifier.alive_units`) drives the
engine's shrinking (see :class:`widthlab.nn.gated.SparsifierGate`).
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.units.state import take


class Modifier(nn.Module):
    """Base class. ``lr`` (None = the model's learning rate) applies to this modifier's tensors."""

    lr: float | None = None
    #: names of the parameters/buffers indexed by hidden unit along dim 0 (shrinkable ones)
    unit_tensors: tuple[str, ...] = ()

    def attach(self, bank) -> None:
        """Called once by ``MLPBank.add_modifier``: learn the bank's layout."""
        self._learn_layout(bank)
        self.build(bank)

    def _learn_layout(self, bank) -> None:
        self.slices = list(bank.slices)
        self.n_models = bank.n_models
        unit_model = torch.empty(bank.n_hidden, dtype=torch.long)
        for m, (a, b) in enumerate(self.slices):
            unit_model[a:b] = m
        device = self.unit_model.device if hasattr(self, "unit_model") else "cpu"
        self.register_buffer("unit_model", unit_model.to(device),
                             persistent=False)  # (H,) unit -> model

    def model_lr(self, m: int) -> float | None:
        """Learning rate of model ``m``'s share of this modifier's tensors (None: the model's
        own). Default: :attr:`lr` for every model."""
        return self.lr

    def alive_units(self) -> Tensor | None:
        """Bool ``(H,)``: units this modifier keeps alive; False marks a unit the engine may
        remove (or mask). None (the default): this modifier never kills units."""
        return None

    def mask_(self, keep: Tensor) -> None:
        """Switch off the units where ``keep`` is False for good, without removing them (the
        'masking only' alternative to shrinking). Only modifiers that kill units support it."""
        raise UsageError(f"{type(self).__name__} cannot mask units")

    @torch.no_grad()
    def shrink_(self, bank, index: Tensor) -> None:
        """Follow ``bank.shrink_``: keep the units ``index`` ``(H_new,)`` (positions in the old
        layout, in the new order) of every tensor in ``unit_tensors`` and learn the new layout.
        Gradients are dropped (the bank reallocates them)."""
        if not self.unit_tensors:
            raise UsageError(f"{type(self).__name__} has no per-unit tensors to shrink")
        self._learn_layout(bank)
        for name in self.unit_tensors:
            t = getattr(self, name)
            kept = take(t.detach(), 0, index)  # the units core's one slicing primitive
            setattr(self, name, nn.Parameter(kept, requires_grad=t.requires_grad)
                    if isinstance(t, nn.Parameter) else kept)

    def build(self, bank) -> None:
        """Create the parameters (shapes follow ``bank.n_hidden``)."""

    def describe(self) -> dict:
        """Everything that changes this modifier's numbers, JSON-ready; it enters the run's
        fingerprint, so two runs differing only here get different ids. Subclasses with
        settings must extend it."""
        return {"kind": type(self).__name__, "lr": self.lr}

    #: describe() keys whose constructor argument has another name
    describe_aliases: dict[str, str] = {}

    @classmethod
    def from_dict(cls, d: dict) -> Modifier:
        """A fresh modifier from its :meth:`describe` dict (the inverse, for every constructor
        argument that ``describe`` records; keys it does not take are ignored)."""
        params = _init_params(cls)
        kw = {}
        for key, value in d.items():
            name = cls.describe_aliases.get(key, key)
            if name in params and value is not None:
                kw[name] = tuple(value) if name == "gray_zone" else value
        return cls(**kw)

    def scale(self) -> Tensor:
        """Multiplier of each hidden unit, ``(H,)``."""
        raise NotImplementedError

    def penalty(self) -> Tensor | None:
        """Per-model penalty ``(M,)`` added to the loss, or None."""
        return None

    def model_params(self, m: int) -> list[tuple[str, Tensor, Tensor]]:
        """``(name, view, gradient view)`` of model ``m``'s share of the parameters."""
        return []

    # ---- engine hooks (no-ops by default)
    def before_step(self, step: int) -> None:
        """Called before each training step's forward pass; ``step`` counts from 0 over the
        whole run (resumes continue the count), so per-step randomness can be seeded by it."""

    def after_backward(self) -> None:
        """Called after each backward pass, before the optimizer step (gradients are set)."""

    def epoch_records(self) -> list[tuple[int, str, object]]:
        """``(model, name, value)`` to store after each epoch: a scalar becomes a metric of
        split ``train``, an array an array row. Called once per epoch."""
        return []

    def n_params(self, m: int) -> int:
        return sum(v.numel() for _, v, _ in self.model_params(m))

    def per_model_sum(self, values: Tensor) -> Tensor:
        """Sum a per-unit tensor ``(H,)`` within each model: ``(M,)``."""
        out = torch.zeros(self.n_models, dtype=values.dtype, device=values.device)
        return out.index_add(0, self.unit_model, values)

    def forward(self, a: Tensor) -> Tensor:
        return a * self.scale()


class NeuronGate(Modifier):
    """A learnable gate per hidden unit (initialised to 1) under an L1 penalty ``l1 * sum|g|``.

    Parameters
    ----------
    l1 : float or sequence of float
        Penalty strength, one value for all models or one per model.
    lr : float or None
        Learning rate of the gates (None = the model's).
    """

    unit_tensors = ("gate",)

    def __init__(self, l1: float | list[float] = 0.0, *, lr: float | None = None):
        super().__init__()
        self.l1_init, self.lr = l1, lr

    def build(self, bank) -> None:
        l1 = torch.as_tensor(self.l1_init, dtype=torch.float32).flatten()
        if l1.numel() == 1:
            l1 = l1.expand(bank.n_models).clone()
        if l1.numel() != bank.n_models or not bool((l1 >= 0).all()):
            raise UsageError(f"l1 needs one value >= 0 or one per model ({bank.n_models}), "
                             f"got {self.l1_init!r}")
        self.register_buffer("l1", l1)
        self.gate = nn.Parameter(torch.ones(bank.n_hidden))

    def describe(self) -> dict:
        l1 = self.l1_init
        return {**super().describe(), "l1": [float(v) for v in l1] if isinstance(l1, (list, tuple))
                else float(l1)}

    def scale(self) -> Tensor:
        return self.gate

    def penalty(self) -> Tensor:
        return self.l1 * self.per_model_sum(self.gate.abs())

    def model_params(self, m: int) -> list[tuple[str, Tensor, Tensor]]:
        a, b = self.slices[m]
        return [("gate", self.gate.detach()[a:b], self.gate.grad[a:b])]


def _init_params(cls: type) -> set[str]:
    """Constructor argument names of ``cls``, following ``**kwargs`` to its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass in (nn.Module, object):
            continue
        sig = inspect.signature(vars(klass)["__init__"])
        names |= {p.name for p in sig.parameters.values()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return names


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def create_modifier(desc: dict) -> Modifier:
    """A modifier from a stored description (``Store.get_run(id)["config"]["modifiers"]``
    entries), by its ``kind``: the factory that replaces positional reads of stored configs.

    Raises
    ------
    UsageError
        If no modifier class of that kind is loaded (import the module defining it).
    """
    import widthlab.nn  # noqa: F401 - registers every built-in modifier class
    import widthlab.nn.sorted_flexible  # noqa: F401

    kind = desc.get("kind")
    for cls in _subclasses(Modifier):
        if cls.__name__ == kind:
            return cls.from_dict(desc)
    raise UsageError(f"unknown modifier kind {kind!r}; import the module that defines it "
                     "before loading the run")
