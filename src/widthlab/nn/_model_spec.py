"""One model of a bank, :class:`ModelSpec` (re-exported by :mod:`widthlab.nn.bank`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from widthlab.errors import UsageError


@dataclass(frozen=True)
class ModelSpec:
    """One model of a bank.

    Parameters
    ----------
    hidden : tuple of int
        Hidden widths, e.g. ``(256,)`` for the journal's one-hidden-layer MLP.
    seed : int
        Initialisation seed (``torch.manual_seed(seed)`` followed by ``nn.Linear`` layers gives
        the same weights).
    lr : float or None
        Learning rate of this model; ``None`` uses the run's learning rate.
    weight_decay : float
        L2 penalty, as ``torch.optim.Adam(weight_decay=...)`` applies it.
    variant : str
        Free label (``"relu"``, ``"flexible"``, ...) stored with the results.
    options : tuple of (str, value)
        Extra, hashable settings stored with the results (used by modifiers).
    """

    hidden: tuple[int, ...]
    seed: int = 0
    lr: float | None = None
    weight_decay: float = 0.0
    variant: str = "relu"
    options: tuple[tuple[str, object], ...] = field(default=())

    def __post_init__(self) -> None:
        hidden = tuple(int(h) for h in (self.hidden if isinstance(self.hidden, Sequence)
                                        else (self.hidden,)))
        object.__setattr__(self, "hidden", hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise UsageError(f"hidden widths must be positive integers, got {self.hidden!r}")
        if self.lr is not None and not (self.lr >= 0 and math.isfinite(self.lr)):
            raise UsageError(f"lr must be a finite number >= 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise UsageError(f"weight_decay must be >= 0, got {self.weight_decay!r}")

    @property
    def width(self) -> int:
        """Width of the first hidden layer."""
        return self.hidden[0]

    @property
    def name(self) -> str:
        arch = "x".join(str(h) for h in self.hidden)
        return f"{self.variant}-{arch}-s{self.seed}"

    def to_dict(self) -> dict:
        return {"name": self.name, "arch": list(self.hidden), "seed": self.seed,
                "variant": self.variant,
                "options": {"lr": self.lr, "weight_decay": self.weight_decay,
                            **dict(self.options)}}

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        """The inverse of :meth:`to_dict` (also reads a row of ``Store.models(run_id)``)."""
        opts = dict(d.get("options") or {})
        lr, wd = opts.pop("lr", None), opts.pop("weight_decay", 0.0)
        return cls(tuple(int(h) for h in d["arch"]), seed=int(d.get("seed", 0)), lr=lr,
                   weight_decay=float(wd or 0.0), variant=str(d.get("variant", "relu")),
                   options=tuple(sorted(opts.items())))
