"""What both trainer callbacks share: :class:`WidthSizer` (trainer-free, plain torch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.surgery import (
    gate_layers,
    gate_widths,
    get_rule,
    model_gates,
    shrink_,
    size_penalty,
)
from widthlab.units import resize_to_state_, size_attrs


def _interval(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive int or None, got {value!r}")
    return value


class WidthSizer:
    """Gate, price and shrink one model during training; the trainer-free part of the callbacks.

    Parameters
    ----------
    names : sequence of str, optional
        Layers to gate, passed to :func:`~widthlab.nn.surgery.gate_layers` (``nn.Linear`` /
        ``nn.Conv2d`` names of ``model.named_modules()``).
    groups : optional
        Units-core groups, passed through unchanged as ``gate_layers(..., groups=groups)``
        (for the gate family's group gating: residual streams, attention heads). Given
        together with ``names`` or alone.
    price : float
        The loss the trainer optimises gets ``price * size_penalty(model)`` added.
    kind, inputs, seed, init : see :func:`~widthlab.nn.surgery.gate_layers`.
    example : Tensor or tuple, optional
        A small input batch to trace the model on (``gate_layers(..., example=)``); default:
        the model's ``example_input_array`` (Lightning's attribute), if it has one.
    rule : {"dead", "smallify"} or a rule object
        When a unit goes (:func:`~widthlab.nn.surgery.shrink_`).
    every_n_steps, every_n_epochs : int, optional
        Shrink after every ``n``-th optimizer step / epoch (both may be given; neither: shrink
        only when :meth:`shrink` is called).

    Raises
    ------
    UsageError
        No layers given, a negative price, a non-positive interval, or an unknown rule.
    """

    def __init__(self, names: Sequence[str] | None = None, *, groups=None, price: float = 1e-4,
                 kind: str = "l1", inputs: bool | str = False, seed: int = 0,
                 init: float | None = None, rule: str = "dead", every_n_steps: int | None = None,
                 every_n_epochs: int | None = None, allow_empty: bool = False,
                 example=None) -> None:
        if isinstance(names, str):
            names = [names]
        if not names and groups is None and not allow_empty:
            raise UsageError("give the layers to size: names=[...] (layer names) or groups=...")
        if not (isinstance(price, (int, float)) and price >= 0):
            raise UsageError(f"price must be a number >= 0, got {price!r}")
        self.names, self.groups = list(names or []), groups
        self.price, self.kind, self.inputs, self.seed = float(price), kind, inputs, int(seed)
        self.init, self.example = init, example
        self.rule = get_rule(rule)
        self.every_n_steps = _interval("every_n_steps", every_n_steps)
        self.every_n_epochs = _interval("every_n_epochs", every_n_epochs)
        self.history: list[dict] = []  # one entry per shrink: step, removed, widths

    def gate(self, model: nn.Module) -> bool:
        """Gate ``model`` in place unless it already has gates; True when it gated now."""
        if model_gates(model) or not (self.names or self.groups is not None):
            return False
        extra = {} if self.groups is None else {"groups": self.groups}
        example = self.example if self.example is not None else getattr(
            model, "example_input_array", None)
        if example is None and self.names:
            raise UsageError("the width callback gates layers by name and needs a small input "
                             "batch to trace the model: pass example=x[:2] to the callback, "
                             "or set the module's example_input_array")
        gate_layers(model, self.names, inputs=self.inputs, kind=self.kind, seed=self.seed,
                    init=self.init, example=example, **extra)
        return True

    def penalty(self, model: nn.Module) -> Tensor:
        """``price * size_penalty(model)``, a scalar on the model's device."""
        pen = size_penalty(model)
        p = next(model.parameters(), None)
        return self.price * (pen.to(p.device) if p is not None else pen)

    def add_penalty(self, loss: Tensor, model: nn.Module) -> Tensor:
        """``loss + price * size_penalty(model)`` (``loss`` unchanged at price 0)."""
        return loss + self.penalty(model) if self.price else loss

    def due(self, step: int | None = None, epoch: int | None = None) -> bool:
        """Whether a shrink is due after optimizer step ``step`` (counted from 1) or after
        epoch ``epoch`` (counted from 1)."""
        if step is not None:
            return bool(self.every_n_steps) and step > 0 and step % self.every_n_steps == 0
        return bool(self.every_n_epochs) and epoch is not None and epoch % self.every_n_epochs == 0

    def shrink(self, model: nn.Module, optimizer: torch.optim.Optimizer | None,
               step: int = -1) -> dict[str, int]:
        """Remove dead units from ``model`` and ``optimizer``'s state, in place."""
        removed = shrink_(model, optimizer, rule=self.rule)
        self.history.append({"step": int(step), "removed": removed,
                             "widths": gate_widths(model)})
        return removed

    @staticmethod
    def widths(model: nn.Module) -> dict[str, int]:
        """``{gate key: units}``."""
        return gate_widths(model)

    @staticmethod
    def sizes(model: nn.Module) -> dict[str, dict[str, int]]:
        """What a checkpoint needs beside the ``state_dict`` to rebuild the shrunk shapes."""
        return size_attrs(model)

    @staticmethod
    def resize(model: nn.Module, state_dict: Mapping[str, Tensor],
               sizes: Mapping[str, Mapping[str, int]] | None) -> list[str]:
        """Give a freshly built, gated ``model`` the shapes of the saved ``state_dict``."""
        return resize_to_state_(model, state_dict, sizes or {})
