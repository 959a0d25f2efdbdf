"""A small training loop for a user's own gated ``nn.Module``: price, shrink, per-epoch records.

:func:`train_module` trains a model gated by :func:`widthlab.nn.surgery.gate_layers` with
``loss(model(x), y) + price * size_penalty(model)``, calls
:func:`~widthlab.nn.surgery.shrink_` after every epoch (optimizer state sliced in place) and
records, per epoch, the width of every gate, the test error, the training loss, the number of
parameters and the epoch's wall time. It works on whatever device the tensors are on.

Example::

    gate_layers(model, ["fc1", "fc2"], example=x_tr[:2])
    records = train_module(model, (x_tr, y_tr), (x_te, y_te), epochs=10, price=1e-4)
    records_frame(records)          # pandas DataFrame, one row per epoch, width/<gate> columns
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.engine.spec import NOT_HASHED, hashed_names, split_config, without_defaults
from widthlab.errors import UsageError
from widthlab.nn.surgery import model_gates

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "adamax": torch.optim.Adamax, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}


#: fields hashed into a run's identity only when they differ from these defaults
WHEN_SET = {"dropout": (), "dropout_free_only": False, "distill": 0.0,
            "distill_temperature": 4.0, "shift": 0}


@dataclass(frozen=True)
class ModuleConfig:
    """How :func:`train_module` trains.

    Parameters
    ----------
    epochs : int
    price : float
        L1 price of the gates (lambda of ``sum(g.penalty())``).
    free_epochs : int
        The last ``free_epochs`` epochs train without the price (a fine-tune of the learned
        widths: under the ``"strict"`` penalty dead gates stay dead, the live ones recover).
    warmup_epochs : int
        The first ``warmup_epochs`` epochs train without the price too (the weights learn
        which units matter before the gates start dying).
    ramp_epochs : int
        The price rises linearly over the first ``ramp_epochs`` priced epochs (``price * k /
        ramp_epochs`` in the k-th), so that units that are only jointly useful do not all die
        in the first priced epoch (0: the full price at once).
    fix_gates : bool
        The ``free_epochs`` train the weights at fixed gates: every gate in evaluation mode
        (a stochastic gate at its deterministic value, no noise drawn) and not updated, so
        the weights are fine-tuned for the gates the model is evaluated with.
    dropout : tuple of float
        Dropout on the gated units in training: each gate's output (the kept units it
        multiplies) times a Bernoulli mask per example, kept with probability ``1 - rate``
        and scaled by ``1 / (1 - rate)`` (``torch.nn.functional.dropout``; torch's global RNG,
        which the checkpoints carry). One rate per gate in
        :func:`~widthlab.nn.surgery.model_gates` order, or one rate for every gate; ``()``:
        none (no mask drawn, bit for bit the run without the field).
    dropout_free_only : bool
        Apply ``dropout`` only in the ``free_epochs`` (the fine-tune at the learned widths).
    distill : float
        Weight ``a`` in [0, 1] of knowledge distillation from a teacher's stored logits
        (:mod:`widthlab.engine.distill`): the training loss is ``(1 - a) * loss_fn + a * T**2
        * KL(teacher_T || student_T)``; the run needs ``teacher=`` logits. 0: none (the run
        without the field, bit for bit).
    distill_temperature : float
        The softmax temperature ``T`` of the distillation (> 0; ignored, and not part of the
        run id, when ``distill`` is 0).
    shift : int
        Data augmentation: every training image translated by up to ``shift`` pixels in each
        direction (one of ``(2 shift + 1)**2`` translations drawn per example and step from
        the minibatch generator; uncovered pixels get the training inputs' minimum, the
        blank pixel of the built-in image sets); needs the data's ``sample_shape`` and, when
        distilling, the teacher's logits of every translation
        (:func:`~widthlab.engine.distill.shifted_teacher_logits`). 0: none.
    optimizer : {"adam", "adamw", "adamax", "sgd", "rmsprop"}
    lr, momentum, weight_decay : float
        ``momentum`` is used by SGD and RMSprop only.
    gate_lr : float or None
        Learning rate of the gates (None: ``lr``); no weight decay on them. Under Adam a gate
        moves at most about ``gate_lr`` per step, so from ``g = 1`` it needs at least
        ``1 / gate_lr`` steps to die.
    batch_size : int
    schedule : {"constant", "cosine"}
        Learning rate over the epochs (cosine: down to 0 at the last step).
    rule : str
        Removal rule of :func:`~widthlab.nn.surgery.shrink_` (``"dead"``, ``"smallify"``).
    shrink : bool
        Shrink after every epoch (else only train).
    seed : int
        Seed of the minibatch order.
    eval_batch : int
    """

    epochs: int = 10
    price: float = 0.0
    free_epochs: int = 0
    warmup_epochs: int = 0
    ramp_epochs: int = 0
    fix_gates: bool = False
    dropout: tuple[float, ...] = ()
    dropout_free_only: bool = False
    distill: float = 0.0
    distill_temperature: float = 4.0
    shift: int = 0
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    gate_lr: float | None = None
    batch_size: int = 100
    schedule: str = "constant"
    rule: str = "dead"
    shrink: bool = True
    seed: int = 0
    eval_batch: int = field(default=2000, metadata=NOT_HASHED)  # changes no number

    @classmethod
    def hashed_fields(cls) -> list[str]:
        """The names of the fields that can enter a module run's id (all but the placement
        ones such as ``eval_batch``); :meth:`identity` leaves out the :data:`WHEN_SET` ones at
        their defaults."""
        return hashed_names(cls)

    def identity(self) -> tuple[dict, dict]:
        """``(hashed, placement)``: :func:`~widthlab.engine.spec.split_config` without the
        :data:`WHEN_SET` fields at their defaults (so runs that do not set them keep their
        settings)."""
        train, placement = split_config(self)
        return without_defaults(train, WHEN_SET), placement

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}; choose one of "
                             f"{', '.join(OPTIMIZERS)}")
        if self.schedule not in ("constant", "cosine"):
            raise UsageError(f"unknown schedule {self.schedule!r}; choose constant or cosine")
        if not 0 <= self.free_epochs <= self.epochs:
            raise UsageError(f"free_epochs must be in [0, epochs], got {self.free_epochs}")
        if not 0 <= self.warmup_epochs <= self.epochs - self.free_epochs:
            raise UsageError(f"warmup_epochs must be in [0, epochs - free_epochs], got "
                             f"{self.warmup_epochs}")
        drop = self.dropout
        rates = (float(drop),) if isinstance(drop, (int, float)) else tuple(map(float, drop))
        if any(not 0 <= r < 1 for r in rates):
            raise UsageError(f"dropout rates must be in [0, 1), got {list(rates)}; e.g. (0.2,)")
        if not any(rates):  # all rates 0 is no dropout: the same numbers, the same run id
            rates = ()
        object.__setattr__(self, "dropout", rates)
        if not rates:
            object.__setattr__(self, "dropout_free_only", False)  # nothing to restrict
        if not 0 <= self.distill <= 1 or not 0 < self.distill_temperature < float("inf"):
            raise UsageError(f"distill must be in [0, 1] and distill_temperature finite and > 0, "
                             f"got {self.distill} and {self.distill_temperature}; e.g. 0.5, 4")
        object.__setattr__(self, "distill", float(self.distill))
        object.__setattr__(self, "distill_temperature", float(self.distill_temperature))
        if not self.distill:  # no teacher: the temperature means nothing, one run id
            object.__setattr__(self, "distill_temperature", 4.0)
        if self.shift < 0:
            raise UsageError(f"shift must be >= 0 pixels, got {self.shift}")
        if self.ramp_epochs < 0:
            raise UsageError(f"ramp_epochs must be >= 0, got {self.ramp_epochs}")
        if self.epochs < 1 or self.batch_size < 1 or self.price < 0 or self.lr <= 0:
            raise UsageError("epochs and batch_size must be >= 1, price >= 0 and lr > 0, got "
                             f"{self.epochs}, {self.batch_size}, {self.price}, {self.lr}")


def make_optimizer(model: nn.Module, cfg: ModuleConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names over ``model.parameters()`` (gates in their own group
    when ``cfg.gate_lr`` is set)."""
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer in ("sgd", "rmsprop"):
        kwargs["momentum"] = cfg.momentum
    if cfg.gate_lr is None:
        return OPTIMIZERS[cfg.optimizer](model.parameters(), **kwargs)
    gates = {id(g.gate) for g in model_gates(model)}
    rest = [p for p in model.parameters() if id(p) not in gates]
    groups = [{"params": rest},
              {"params": [g.gate for g in model_gates(model)], "lr": cfg.gate_lr,
               "weight_decay": 0.0}]
    return OPTIMIZERS[cfg.optimizer](groups, **kwargs)


@torch.no_grad()
def error_rate(model: nn.Module, x: Tensor, y: Tensor, batch: int = 2000) -> float:
    """Fraction of ``x`` that ``model`` (in eval mode, restored after) misclassifies."""
    was = model.training
    model.eval()
    wrong = 0
    for i in range(0, len(y), batch):
        wrong += int((model(x[i:i + batch]).argmax(-1) != y[i:i + batch]).sum())
    model.train(was)
    return wrong / max(len(y), 1)


def train_module(model: nn.Module, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                 cfg: ModuleConfig | None = None, *, loss_fn: Callable = F.cross_entropy,
                 optimizer: torch.optim.Optimizer | None = None,
                 on_epoch: Callable[[dict], None] | None = None, teacher: Tensor | None = None,
                 sample_shape: tuple[int, ...] | None = None, **overrides) -> list[dict]:
    """Train ``model`` with its gates' price, shrinking after every epoch, in memory (no
    store): the epochs of :class:`~widthlab.engine.module_run.ModuleRun`, which stores,
    checkpoints and resumes the same training through the one run lifecycle.

    Parameters
    ----------
    model : nn.Module
        Gated (:func:`~widthlab.nn.surgery.gate_layers`) or not; trained in place on the
        device of its parameters (the data is moved there).
    train, test : (x, y) tensor pairs
    cfg : ModuleConfig, optional
        ``overrides`` replace its fields (``epochs=3, price=1e-4``).
    loss_fn : callable
        ``loss_fn(outputs, y)``, a scalar.
    optimizer : torch.optim.Optimizer, optional
        Use this one instead of ``cfg.optimizer`` (it must hold the model's parameters).
    on_epoch : callable, optional
        Called with each epoch's record as soon as it is made (progress, logging).
    teacher : Tensor, optional
        A teacher's logits of ``train`` (one row per example, in order), needed when
        ``cfg.distill > 0`` (:func:`widthlab.engine.distill.teacher_logits`).
    sample_shape : tuple, optional
        ``(C, H, W)`` of the flattened training images (needed by ``cfg.shift``).

    Returns
    -------
    list of dict
        One per epoch: ``epoch``, ``price``, ``train_loss``, ``test_error``, ``epoch_time``
        (seconds of training, without evaluation or shrinking), ``n_params``, ``widths``
        (gate key -> width after that epoch's shrink) and ``removed`` (gate key -> units removed).
    """
    from widthlab.data.tensors import DatasetSplits, Split
    from widthlab.engine.module_run import ModuleRun

    cfg = ModuleConfig(**{**(cfg.__dict__ if cfg else {}), **overrides})
    x, y = train
    empty = Split(x[:0], y[:0])
    data = DatasetSplits("tensors", Split(*train), empty, Split(*test), 0.0, 1.0, cfg.seed,
                         sample_shape=sample_shape)
    run = ModuleRun(model, data, cfg, loss_fn=loss_fn, optimizer=optimizer,
                    describe={"in_memory": True}, teacher=teacher)
    records = []
    for epoch in range(1, cfg.epochs + 1):
        run.train_epoch(epoch, lambda n: None)
        if not run.alive:
            break
        records.append(run.last_record)
        if on_epoch is not None:
            on_epoch(records[-1])
    return records


def records_frame(records: list[dict]):
    """The records as a pandas DataFrame, ``widths`` spread into ``width/<gate>`` columns."""
    import pandas as pd

    rows = []
    for rec in records:
        row = {k: v for k, v in rec.items() if k not in ("widths", "removed")}
        row.update({f"width/{k}": v for k, v in rec["widths"].items()})
        rows.append(row)
    return pd.DataFrame(rows)
