"""The bank's optimizer: every model's tensors stepped as separate parameters, in one call.

Each model's parameters are views into the bank's stacked tensors, registered with
``torch.optim.Adam`` (fused kernel where the device supports it) in one parameter group per
``(lr, weight_decay)``. So a model trained in the bank gets exactly the update it would get alone,
with its own learning rate and weight decay, and the whole bank is stepped by one fused call
instead of a Python loop over models.

When the bank loses units (:meth:`MLPBank.shrink_`), :meth:`BankOptimizer.shrunk` builds the
optimizer of the new layout and carries every model's state (Adam moments, step counts,
momentum buffers) over for the units that stayed, so training continues as if the removed
units had only been masked. :meth:`BankOptimizer.grown` is the inverse after
:meth:`MLPBank.grow_`: the state of new units starts at zero, the step counts are kept (so a
new unit's first Adam steps use the model's bias correction, as a unit masked until then would).
"""

from __future__ import annotations

import torch
from torch import Tensor

from widthlab.errors import UsageError
from widthlab.nn.bank import BankGrowth, MLPBank
from widthlab.units.state import taken_state

OPTIMIZERS = ("adam", "adamax", "sgd")


class BankOptimizer:
    """Wraps a ``torch.optim`` optimizer over the per-model views of an :class:`MLPBank`.

    Parameters
    ----------
    bank : MLPBank
    lr : float
        Learning rate of models whose spec does not set one.
    kind : {"adam", "adamax", "sgd"}
    fused : bool or None
        Use the fused Adam kernel; None picks it when the device supports it.
    momentum : float
        SGD momentum (``kind="sgd"`` only).
    """

    def __init__(self, bank: MLPBank, *, lr: float = 1e-3, kind: str = "adam",
                 fused: bool | None = None, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, momentum: float = 0.0):
        if kind not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {kind!r}; choose one of {', '.join(OPTIMIZERS)}")
        self.bank, self.kind = bank, kind
        self._args = dict(lr=lr, kind=kind, fused=fused, betas=betas, eps=eps, momentum=momentum)
        groups: dict[tuple[float, float], list[Tensor]] = {}
        self.model_tensors: list[list[Tensor]] = []
        for m, spec in enumerate(bank.specs):
            tensors = []
            for name, view, grad in bank.model_params(m):
                view.grad = grad  # a view of the bank's persistent gradient
                p_lr, wd = (spec.lr if spec.lr is not None else lr), spec.weight_decay
                if name.startswith("modifiers."):
                    mod = bank.modifiers[int(name.split(".")[1])]
                    mod_lr = mod.model_lr(m)
                    p_lr, wd = (mod_lr if mod_lr is not None else p_lr), 0.0
                groups.setdefault((float(p_lr), float(wd)), []).append(view)
                tensors.append(view)
            self.model_tensors.append(tensors)
        param_groups = [{"params": ps, "lr": g_lr, "weight_decay": wd}
                        for (g_lr, wd), ps in groups.items()]
        if kind == "adam":
            if fused is None:
                fused = bank.device.type in ("cpu", "cuda")
            self.opt = torch.optim.Adam(param_groups, lr=lr, betas=betas, eps=eps, fused=fused)
        elif kind == "adamax":
            # foreach: one multi-tensor kernel per group (there is no fused Adamax)
            self.opt = torch.optim.Adamax(param_groups, lr=lr, betas=betas, eps=eps,
                                          foreach=True)
        else:
            self.opt = torch.optim.SGD(param_groups, lr=lr, momentum=momentum)

    def step(self) -> None:
        self.opt.step()

    def reset_model(self, m: int) -> None:
        """Zero model ``m``'s parameters and optimizer state (a failed model stops moving)."""
        with torch.no_grad():
            for p in self.model_tensors[m]:
                p.zero_()
                for key, value in self.opt.state.get(p, {}).items():
                    if key != "step" and torch.is_tensor(value):
                        value.zero_()

    def shrunk(self, bank: MLPBank, kept: list[Tensor]) -> BankOptimizer:
        """The optimizer of ``bank`` after ``bank.shrink_``, with this one's state carried over.

        Parameters
        ----------
        bank : MLPBank
            The shrunk bank (this optimizer still holds views of its old tensors).
        kept : list of LongTensor
            Per model, the kept positions within its old first-layer slice
            (``BankShrink.kept``).

        Every per-parameter state tensor shaped like its parameter (``exp_avg``,
        ``exp_avg_sq``, ``exp_inf``, ``momentum_buffer``, ...) is sliced along the dimension
        the first-layer units index (:meth:`MLPBank.unit_dims`); step counts are copied.
        """
        return self._carried(bank, kept)

    def grown(self, bank: MLPBank, done: BankGrowth) -> BankOptimizer:
        """The optimizer of ``bank`` after ``bank.grow_``, with this one's state carried over.

        Parameters
        ----------
        bank : MLPBank
            The grown bank (this optimizer still holds views of its old tensors).
        done : BankGrowth
            What ``grow_`` returned.

        State tensors shaped like their parameter keep their values for the old units and are
        zero for the new ones (along :meth:`MLPBank.unit_dims`); step counts are copied.
        """
        return self._carried(bank, done.sources)

    @torch.no_grad()
    def _carried(self, bank: MLPBank, sources: list[Tensor]) -> BankOptimizer:
        """A new optimizer of ``bank`` whose state for model ``m``'s unit ``i`` is the old
        state of unit ``sources[m][i]`` (a position in the old slice; -1: zero state)."""
        new = BankOptimizer(bank, **self._args)
        for m, (old_ts, new_ts) in enumerate(zip(self.model_tensors, new.model_tensors,
                                                 strict=True)):
            dims = bank.unit_dims(m)
            src = sources[m]
            for old, fresh, dim in zip(old_ts, new_ts, dims, strict=True):
                state = self.opt.state.get(old)
                if not state:
                    continue
                new.opt.state[fresh] = taken_state(state, old.shape, dim, src, copy=True)
        return new

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)
