"""Record a model's eager forward at the ATen level and propagate unit labels through it.

``torch.fx`` cannot trace Hugging Face transformers 5 models and keeps ``torch.nn`` modules
opaque; ``torch.export`` needs a model that exports. The forward is therefore simply run once,
under a :class:`~torch.utils._python_dispatch.TorchDispatchMode`: every ATen op the forward
executes (below autograd, so ``nn.Linear`` appears as ``t`` + ``addmm``) is seen with its real
input and output tensors. Parameters are recognised by identity; each parameter dimension
gets atoms on first use (:mod:`~widthlab.units.labels`), and the rule of each op
(:mod:`~widthlab.units.rules`) maps its inputs' labels to its outputs' labels and records
which atoms are one unit. Forward hooks on every module keep the name of the module running,
so an op that touches units and has no rule is refused with the op and module named.

Example::

    book = trace(model, (tokens,), {})     # a Book of atoms, edges and notes
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from widthlab.errors import UsageError
from widthlab.units.labels import Book, Label, Slot


class UnitTraceError(UsageError):
    """An op of the forward touches unit dimensions and the graph cannot follow it."""


class Recorder(TorchDispatchMode):
    """Runs rules on every op; labels of live tensors are kept by id (tensors are held)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.book = Book()
        self.names: dict[int, str] = {}
        for name, p in model.named_parameters(remove_duplicate=True):
            self.names[id(p)] = name
        for name, b in model.named_buffers(remove_duplicate=True):
            self.names.setdefault(id(b), name)
        self.params = {id(p) for p in model.parameters()}
        self.seen: dict[int, tuple[Tensor, list[Label]]] = {}
        self.stack: list[str] = [""]
        self.pre: tuple[int, ...] | None = None

    # -- labels of tensors -------------------------------------------------------------
    def labels(self, t: Tensor, *, buffer: bool = False) -> list[Label]:
        """Labels of ``t``; a parameter (or, when asked, a buffer) gets atoms on first use."""
        hit = self.seen.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        if id(t) in self.params or (buffer and id(t) in self.names):
            out = []
            for d in range(t.ndim):
                if t.shape[d] <= 1:
                    continue  # one index (a layer scale's (C, 1, 1)) or none: no units
                atoms = self.book.new_atoms(t.shape[d])
                self.book.slots.append(Slot(t, self.names[id(t)], d, atoms))
                shape = [1] * t.ndim
                shape[d] = t.shape[d]
                out.append(Label(atoms.view(shape), frozenset({d})))
            self.seen[id(t)] = (t, out)
            return out
        return []

    def set(self, t: Tensor, labels: list[Label]) -> None:
        self.seen[id(t)] = (t, labels)

    def is_param(self, t: Any) -> bool:
        return torch.is_tensor(t) and id(t) in self.params

    @property
    def where(self) -> str:
        return self.stack[-1] or "<model>"

    def refuse(self, func, why: str):
        raise UnitTraceError(
            f"units: {func} in module {self.where!r} {why}; the unit graph cannot follow it "
            "(rewrite that step with ops the graph follows, or leave that module's units "
            "out); see widthlab.units.rules for the ops it follows")

    # -- dispatch ----------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # in-place view ops (squeeze_, as_strided_) change the input's shape: keep the old one
        self.pre = tuple(args[0].shape) if args and torch.is_tensor(args[0]) else None
        out = func(*args, **kwargs)
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if torch.is_tensor(t)]
        if not any(self.labels(t) for t in tensors):
            for o in tree_flatten(out)[0]:
                if torch.is_tensor(o) and id(o) not in self.params:
                    self.seen.pop(id(o), None)  # an in-place op on an unlabeled tensor
            return out
        from widthlab.units.rules import RULES

        rule = RULES.get(func.overloadpacket.__name__)
        if rule is None:
            self.refuse(func, "touches unit dimensions")
        results = rule(self, func, args, kwargs, out)
        outs = [o for o in tree_flatten(out)[0] if torch.is_tensor(o)]
        for o, labels in zip(outs, results, strict=False):
            self.set(o, labels)
        return out


def _hooks(model: nn.Module, rec: Recorder) -> list:
    handles = []
    for name, module in model.named_modules():
        def pre(_m, _a, name=name):
            rec.stack.append(name)

        def post(_m, _a, _o, name=name):
            if len(rec.stack) > 1:
                rec.stack.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post, always_call=True))
    return handles


def _fix_outputs(rec: Recorder, out: Any) -> None:
    """The model's outputs keep their size: every unit reaching one is fixed."""
    if hasattr(out, "to_tuple"):  # a Hugging Face ModelOutput
        out = out.to_tuple()
    for t in tree_flatten(out)[0]:
        if torch.is_tensor(t):
            for label in rec.labels(t):
                rec.book.fix(label.grid)


def trace(model: nn.Module, args: tuple, kwargs: dict) -> Book:
    """Run ``model(*args, **kwargs)`` once under the recorder; the model is not changed."""
    rec = Recorder(model)
    handles = _hooks(model, rec)
    try:
        # with gradients on, fused inference kernels (TransformerEncoderLayer's fast path)
        # stay out of the way and the forward runs op by op
        with torch.enable_grad(), rec:
            out = model(*args, **kwargs)
        _fix_outputs(rec, out)
    finally:
        for h in handles:
            h.remove()
    _couple_mha(model, rec)
    rec.seen.clear()
    return rec.book


def _couple_mha(model: nn.Module, rec: Recorder) -> None:
    """nn.MultiheadAttention computes head_dim = embed_dim // num_heads from its input: its
    heads can go only with as many embedding units, so a fixed embedding fixes its heads."""
    slots = {(id(s.tensor), s.dim): s.atoms for s in rec.book.slots}
    for m in model.modules():
        w = getattr(m, "in_proj_weight", None) if isinstance(m, nn.MultiheadAttention) else None
        if w is not None and (id(w), 1) in slots:
            rec.book.couplings.append((slots[(id(w), 1)], slots[(id(w), 0)]))
