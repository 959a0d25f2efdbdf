"""What :func:`~widthlab.nn.surgery.shrink_` checks before it cuts, and how it undoes a cut
that fails half-way, so that a refused model is left exactly as it was.

- :func:`~widthlab.units.state.check_optimizer` (re-exported): the optimizer's state can be
  sliced per unit (the one check, shared with :func:`~widthlab.units.remove_units`);
- :func:`watch_unsliced`: after a shrink without an optimizer, an optimizer that still holds
  state of the old shapes raises a clear :class:`UsageError` at its next ``step()`` instead of
  torch's size mismatch. The optimizer step pre-hook is process-wide, so it exists only while
  some shrunk parameter is watched: :func:`unwatch` (called by ``fold_gates_``) drops a
  model's parameters, and the hook is removed when none is left (or all were freed).
- :class:`Undo`: a record of every tensor a shrink replaces, restored on failure.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from widthlab.errors import UsageError
from widthlab.units.state import ELEMENTWISE, check_optimizer

__all__ = ["ELEMENTWISE", "Undo", "check_optimizer", "record", "undoing", "unwatch",
           "watch_unsliced", "watching"]

# id -> weak reference (a WeakSet would compare two references to one tensor with the
# tensor's elementwise ``==`` when the same parameter is shrunk twice)
_SHRUNK: dict[int, weakref.ref] = {}
_HOOK: list = []


def _forget(key: int, ref: weakref.ref) -> None:
    if _SHRUNK.get(key) is ref:
        del _SHRUNK[key]
    _drop_hook_if_idle()


def _drop_hook_if_idle() -> None:
    if not _SHRUNK and _HOOK:
        _HOOK.pop().remove()


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
    if _SHRUNK and not _HOOK:
        _HOOK.append(register_optimizer_step_pre_hook(_stale_state))


def unwatch(params) -> None:
    """Stop checking ``params`` (a model shrunk for good, its gates folded, or an optimizer
    built afresh); the process-wide hook goes when nothing is watched."""
    for p in params:
        _SHRUNK.pop(id(p), None)
    _drop_hook_if_idle()


def watching() -> bool:
    """Whether the optimizer step pre-hook of :func:`watch_unsliced` is installed."""
    return bool(_HOOK)


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
