"""The one slicing primitive of unit removal, and the optimizer-state checks and slicing that
every remover shares.

- :func:`take`: ``value`` along ``dim`` at ``index``, zeros where ``index`` is -1 (a new unit):
  what a removal (a subset of the old positions) and a growth (old positions then -1s) do to
  a weight, a bias, a buffer or an optimizer state tensor;
- :func:`slice_param_`: :func:`take` applied in place to a parameter, its gradient and its
  optimizer state (the parameter keeps its identity, so the optimizer keeps working);
- :func:`taken_state`: a parameter's optimizer state with every tensor shaped like the
  parameter taken alike (``step`` and other scalars kept);
- :func:`check_state` / :func:`check_optimizer`: the state can be sliced per unit (one
  message, raised before anything is cut).

Element-wise optimizers (SGD, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad, ASGD,
Rprop) hold state of their parameter's shape, which is sliced like it. LBFGS keeps one history
over all parameters flattened together, and Adafactor factors its second moment into row and
column means and scales its step by the whole parameter's RMS: removing units would change
how every other unit trains, so both (and optimizers widthlab does not know) are refused.

Example::

    check_optimizer(model, opt)                      # before any cut
    slice_param_(layer.weight, 0, keep, opt)         # rows ``keep``; Adam moments alike
    take(w, 1, torch.tensor([0, 2, -1]))             # columns 0 and 2, then a zero column
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from widthlab.errors import UsageError

__all__ = ["ELEMENTWISE", "check_optimizer", "check_state", "slice_param_", "take",
           "taken_state"]

ELEMENTWISE: tuple[type, ...] = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax,
    torch.optim.NAdam, torch.optim.RAdam, torch.optim.RMSprop, torch.optim.Adagrad,
    torch.optim.ASGD, torch.optim.Rprop,
)
_NAMES = "SGD, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad, ASGD, Rprop"
_WHY = {
    "LBFGS": "keeps one curvature history over all parameters flattened together",
    "Adafactor": "factors its second moment into row and column means and scales each step "
                 "by the whole parameter's RMS, so removing units changes how the others train",
}


def take(value: Tensor, dim: int, index: Tensor) -> Tensor:
    """``value.index_select(dim, index)``, with zeros where ``index`` is -1 (new units).

    The -1 test runs where ``index`` lives: a CPU index costs an accelerator no sync."""
    new = index < 0
    if not bool(new.any()):
        return value.index_select(dim, index.to(value.device))
    shape = list(value.shape)
    shape[dim] = len(index)
    out = torch.zeros(shape, dtype=value.dtype, device=value.device)
    old = (~new).nonzero().flatten()
    return out.index_copy_(dim, old.to(value.device),
                           value.index_select(dim, index[old].to(value.device)))


def taken_state(state: dict, shape: torch.Size, dim: int | None, index: Tensor, *,
                copy: bool = False) -> dict:
    """``state`` (one parameter's optimizer state) with every tensor of ``shape`` taken at
    ``index`` along ``dim`` (:func:`take`; ``dim`` None: none is); other entries kept (cloned
    when ``copy``)."""
    out = {}
    for key, value in state.items():
        if dim is not None and torch.is_tensor(value) and value.ndim and value.shape == shape:
            value = take(value, dim, index)
        elif copy and torch.is_tensor(value):
            value = value.clone()
        out[key] = value
    return out


def check_state(t: Tensor, optimizer, *, fix: str = "") -> None:
    """Raise :class:`UsageError` unless every state tensor of ``t`` in ``optimizer`` (of more
    than 0 dimensions) has ``t``'s shape; ``fix`` ends the message (default: use an
    element-wise optimizer, or none and a new one afterwards)."""
    state = optimizer.state.get(t) if optimizer is not None else None
    for key, value in (state or {}).items():
        if torch.is_tensor(value) and value.ndim > 0 and value.shape != t.shape:
            raise UsageError(
                f"{type(optimizer).__name__} state {key!r} of shape {tuple(value.shape)} does "
                f"not match its parameter {tuple(t.shape)}; units are removed from per-element "
                f"state only ({_NAMES}): " + (fix or "pass optimizer=None and build a new "
                                              "optimizer after removing units"))


def check_optimizer(model: nn.Module, optimizer) -> None:
    """Raise :class:`UsageError` unless ``optimizer`` is None or an element-wise optimizer of
    ``model``'s parameters whose every state tensor has its parameter's shape."""
    if optimizer is None:
        return
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise UsageError(f"optimizer must be a torch.optim.Optimizer, got "
                         f"{type(optimizer).__name__}")
    name = type(optimizer).__name__
    bad = next((k for k in _WHY if any(c.__name__ == k for c in type(optimizer).__mro__)), None)
    if bad is not None or not isinstance(optimizer, ELEMENTWISE):
        why = _WHY.get(bad or "", "is not an optimizer whose state shrink_ knows how to slice")
        raise UsageError(f"shrink_ cannot carry {name}'s state: it {why}; train with one of "
                         f"{_NAMES}, or call shrink_(model, optimizer=None) and create a new "
                         "optimizer afterwards (the model was not changed)")
    mine = {id(p) for p in model.parameters()}
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if mine and not mine & held:
        raise UsageError(f"the {name} optimizer holds none of the model's parameters; pass "
                         "the optimizer that trains this model (the model was not changed)")
    for p in optimizer.state:
        check_state(p, optimizer, fix="the model was not changed")


@torch.no_grad()
def slice_param_(t: nn.Parameter, dim: int, keep: Tensor, optimizer=None) -> None:
    """Keep ``keep`` along ``dim`` of parameter ``t`` in place: its data (the same Parameter
    object, so optimizers keep pointing at it), its gradient and every optimizer state tensor
    shaped like it (``step`` kept). The caller has checked the state (:func:`check_state`)."""
    state = optimizer.state.get(t) if optimizer is not None else None
    if state:
        state.update(taken_state(state, t.shape, dim, keep))
    grad, t.grad = t.grad, None
    new = take(t.data, dim, keep)
    # set_data drops autograd's cached accumulator only on a dtype change; a graph still
    # alive (the last loss) would otherwise keep the old shape in it
    t.data = torch.empty(0, dtype=torch.float64 if new.dtype != torch.float64 else torch.float32,
                         device=new.device)
    t.data = new
    if grad is not None:
        t.grad = take(grad, dim, keep)
