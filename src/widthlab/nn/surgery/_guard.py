"""What :func:`~widthlab.nn.surgery.shrink_` checks before it cuts, and how it undoes a cut
that fails half-way, so that a refused model is left exactly as it was.

- :func:`check_optimizer`: the optimizer's state can be sliced per unit. Element-wise
  optimizers (SGD, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad, ASGD, Rprop) hold
  state of their parameter's shape, which is sliced like it. LBFGS keeps one history over all
  parameters flattened together, and Adafactor factors its second moment into row and column
  means and scales its step by the whole parameter's RMS: removing units would change how
  every other unit trains, so both (and optimizers widthlab does not know) are refused.
- :func:`watch_unsliced`: after a shrink without an optimizer, an optimizer that still holds
  state of the old shapes raises a clear :class:`UsageError` at its next ``step()`` instead of
  torch's size mismatch.
- :class:`Undo`: a record of every tensor a shrink replaces, restored on failure.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from widthlab.errors import UsageError

__all__ = ["ELEMENTWISE", "Undo", "check_optimizer", "record", "undoing", "watch_unsliced"]

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
    for p, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.ndim and value.shape != p.shape:
                raise UsageError(f"{name} state {key!r} of shape {tuple(value.shape)} does "
                                 f"not match its parameter {tuple(p.shape)}; shrink_ slices "
                                 "only per-element state (the model was not changed)")


# id -> weak reference (a WeakSet would compare two references to one tensor with the
# tensor's elementwise ``==`` when the same parameter is shrunk twice)
_SHRUNK: dict[int, weakref.ref] = {}
_HOOK: list = []


def _forget(key: int, ref: weakref.ref) -> None:
    if _SHRUNK.get(key) is ref:
        del _SHRUNK[key]


def _stale_state(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    for p in [r() for r in list(_SHRUNK.values())]:
        if p is None:
            continue
        for key, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value) and value.ndim and value.shape != p.shape:
                raise UsageError(
                    f"{type(optimizer).__name__} state {key!r} has shape "
                    f"{tuple(value.shape)} but its parameter was shrunk to {tuple(p.shape)} "
                    "by shrink_ without this optimizer; pass it: shrink_(model, optimizer), "
                    "or create a new optimizer after shrinking")


def watch_unsliced(params: list[Tensor]) -> None:
    """Make every optimizer's ``step()`` check its state of ``params`` against their shapes."""
    for p in params:
        if id(p) not in _SHRUNK:
            _SHRUNK[id(p)] = weakref.ref(p, lambda r, k=id(p): _forget(k, r))
    if not _HOOK:
        _HOOK.append(register_optimizer_step_pre_hook(_stale_state))


class Undo:
    """Old values of everything a shrink of ``model`` replaces, to put back on failure.

    Plain ``int`` attributes of every module (``out_features``, ``n_in``...) are recorded at
    once; ``save(owner, attr)`` records a tensor before ``owner.attr`` is replaced (a Parameter
    keeps its identity: its ``data`` and ``grad`` are restored; ``clone=True`` also undoes an
    in-place change), ``save_state(optimizer, param)`` a parameter's optimizer state.
    ``restore()`` puts everything back, newest first.
    """

    def __init__(self, model: nn.Module) -> None:
        self._ints = [(m, {k: v for k, v in vars(m).items() if type(v) is int})
                      for m in model.modules()]
        self._log: list[Callable[[], None]] = []

    def save(self, owner: nn.Module, attr: str, *, clone: bool = False) -> None:
        value = getattr(owner, attr, None)
        if isinstance(value, nn.Parameter):
            data, grad = value.data, value.grad
            copy = data.clone() if clone else None

            def back() -> None:
                # via another dtype: set_data drops the cached gradient accumulator (and
                # its stale shape) only when the dtype changes
                value.data = torch.empty(0, dtype=torch.float64 if data.dtype != torch.float64
                                         else torch.float32, device=data.device)
                value.data = data
                if copy is not None:
                    data.copy_(copy)
                value.grad = grad
            self._log.append(back)
        else:
            self._log.append(lambda: setattr(owner, attr, value))

    def save_state(self, optimizer, param: Tensor) -> None:
        if optimizer is None or param not in optimizer.state:
            return
        old = dict(optimizer.state[param])
        self._log.append(lambda: optimizer.state.__setitem__(param, old))

    def restore(self) -> None:
        with torch.no_grad():
            for back in reversed(self._log):
                back()
            for module, ints in self._ints:
                for k, v in ints.items():
                    setattr(module, k, v)
        self._log.clear()


_ACTIVE: list[Undo] = []


def record(owner: nn.Module, attr: str, optimizer) -> None:
    """Save ``owner.attr`` (and its optimizer state) in the active :class:`Undo`, if any."""
    if _ACTIVE:
        _ACTIVE[-1].save(owner, attr)
        value = getattr(owner, attr, None)
        if isinstance(value, nn.Parameter):
            _ACTIVE[-1].save_state(optimizer, value)


class undoing:  # noqa: N801 - used as a context manager
    """``with undoing(model) as undo:`` every :func:`record` goes to ``undo``; an exception
    restores the model and the optimizer state, then propagates."""

    def __init__(self, model: nn.Module) -> None:
        self.undo = Undo(model)

    def __enter__(self) -> Undo:
        _ACTIVE.append(self.undo)
        return self.undo

    def __exit__(self, kind, exc, tb) -> None:
        _ACTIVE.pop()
        if exc is not None:
            self.undo.restore()
