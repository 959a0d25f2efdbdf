"""Any ``nn.Module`` with a loss as a :class:`~widthlab.engine.lifecycle.Trainable`.

:class:`ModuleRun` trains one model (a user's module, gated by
:func:`widthlab.nn.surgery.gate_layers` or not) with ``loss(model(x), y) + price *
size_penalty(model)`` under a :class:`~widthlab.engine.modules.ModuleConfig`, removes dead
units after every epoch (:func:`~widthlab.nn.surgery.shrink_`, optimizer state sliced in
place) and stores per epoch ``test/error``, ``train/loss``, ``train/epoch_time`` (seconds of
training), ``train/n_params`` and ``train/price``, plus the rows of its epoch hooks. Through
:func:`~widthlab.engine.lifecycle.run_trainable` it gets what every engine run gets: one stored
config, per-epoch rows in one transaction, atomic weights-only checkpoints (state dicts of
the model, optimizer and schedule, the generators' states; a shrunk model is resized to the
saved shapes on resume), kill -9 then resume bitwise identical on the CPU, a diverged model
flagged (the run finishes, its rows stop) and progress events.

Example::

    run = ModuleRun(lambda: MyCNN(seed=0), splits, ModuleConfig(epochs=3), label="mine:cnn")
    run_id = run_trainable(run, "widthlab-runs")
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab import __version__
from widthlab.data.tensors import DatasetSplits
from widthlab.engine.config import describe_hook, resolve_device
from widthlab.engine.distill import (
    check_teacher,
    distill_loss,
    image_augment,
    logits_id,
    n_shifts,
    shift_images,
)
from widthlab.engine.events import EpochContext
from widthlab.engine.identity import closure_hash, module_name
from widthlab.engine.lifecycle import EpochRows, RunRecord
from widthlab.engine.modules import ModuleConfig, error_rate, make_optimizer
from widthlab.engine.spec import RunSpec, data_identity
from widthlab.errors import UsageError
from widthlab.nn.surgery import gate_widths, model_gates, shrink_, size_penalty
from widthlab.store import ArrayRow, MetricRow
from widthlab.units import resize_to_state_, size_attrs


def module_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
                 cfg: ModuleConfig, price: float, gen: torch.Generator, loss_fn: Callable,
                 sched, advance: Callable[[int], None] | None = None, *,
                 fixed_gates: bool = False, dropout: Sequence[float] = (),
                 teacher: Tensor | None = None,
                 augment: tuple[tuple[int, ...], float] | None = None) -> float:
    """One pass over ``(x, y)`` in the order ``gen`` draws; the mean training loss (without
    the price; NaN or inf when the loss diverged). ``fixed_gates``: the gates in evaluation
    mode and not updated (their ``requires_grad`` put back after). ``dropout``: rates of
    dropout on the gates' outputs (one per gate, or one for all; hooks removed after).
    ``teacher``: logits of ``x`` (row by row) distilled with ``cfg.distill`` at
    ``cfg.distill_temperature`` (:func:`~widthlab.engine.distill.distill_loss`; the loss
    returned is the distillation loss). ``augment``: ``(image shape, fill)`` of the
    ``cfg.shift`` translations (:func:`~widthlab.engine.distill.shift_images`)."""
    model.train()
    gates = model_gates(model)
    _dropout_rates(gates, dropout)  # checked before the gates are touched
    before = [g.gate.requires_grad for g in gates]
    if fixed_gates:
        for g in gates:
            g.eval()
            g.gate.requires_grad_(False)
    with gate_dropout(gates, dropout):
        try:
            return _module_pass(model, opt, x, y, cfg, price, gen, loss_fn, sched, advance,
                                teacher if cfg.distill else None,
                                augment if cfg.shift else None)
        finally:
            for g, req in zip(gates, before, strict=True):
                g.gate.requires_grad_(req)


@contextlib.contextmanager
def gate_dropout(gates: Sequence[nn.Module], rates: Sequence[float]):
    """Within the block, every gate with a rate ``> 0`` passes its output through
    ``F.dropout(out, rate, training=True)`` (rates: one per gate or one for all; empty:
    nothing is hooked and no random number drawn)."""
    rates = _dropout_rates(gates, rates)
    hooks = [g.register_forward_hook(lambda m, i, out, r=r: F.dropout(out, r, True))
             for g, r in zip(gates, rates, strict=False) if r > 0]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def _dropout_rates(gates: Sequence[nn.Module], rates: Sequence[float]) -> list[float]:
    """One rate per gate (a single rate repeated), checked: the gates must act per example
    (:func:`~widthlab.nn.surgery.gate_layers` with layer names), not units-core group gates,
    whose one output per batch would drop the same units for every example."""
    rates = list(rates)
    if not rates:
        return rates
    if any(getattr(g, "unit_group", None) is not None for g in gates):
        raise UsageError("dropout acts on gates that scale each example (gate_layers(model, "
                         "names)); units-core group gates (gate_layers(groups=...)) would "
                         "drop the same units for the whole batch: leave dropout off")
    if len(rates) == 1:
        rates *= len(gates)
    if len(rates) != len(gates):
        raise UsageError(f"dropout has {len(rates)} rates for {len(gates)} gates; give one "
                         "rate per gate (model_gates order) or one for all")
    return rates


def _module_pass(model, opt, x, y, cfg, price, gen, loss_fn, sched, advance,
                 teacher=None, augment=None) -> float:
    order = torch.randperm(len(y), generator=gen).to(y.device)
    total = torch.zeros((), device=y.device)
    n = 0
    for i in range(0, len(y), cfg.batch_size):
        idx = order[i:i + cfg.batch_size]
        xb, which = x[idx], None
        if augment is not None:  # one translation per example, from the minibatch generator
            which = torch.randint(0, n_shifts(cfg.shift), (len(idx),), generator=gen)
            which = which.to(x.device)
            xb = shift_images(xb, which, augment[0], cfg.shift, augment[1])
        if teacher is None:
            loss = loss_fn(model(xb), y[idx])
        else:
            t = teacher[idx] if which is None else teacher[idx, which]
            loss = distill_loss(model(xb), y[idx], t, cfg.distill, cfg.distill_temperature,
                                loss_fn)
        full = loss + price * size_penalty(model) if price else loss
        opt.zero_grad(set_to_none=True)
        full.backward()
        opt.step()
        if sched is not None:
            sched.step()
        total += loss.detach() * len(idx)
        n += len(idx)
        if advance is not None:
            advance(1)
    return float(total) / max(n, 1)


def model_identity(model: nn.Module) -> dict:
    """What identifies a freshly built model: its class, its structure and a hash of its
    initial parameters and buffers."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}",
            "structure": repr(model), "init": h.hexdigest()}


class ModuleRun:
    """One ``nn.Module`` trained through the one lifecycle (see the module docstring).

    Parameters
    ----------
    model : nn.Module or callable returning one
        Built once (seeded by the caller); moved to ``device``.
    data : DatasetSplits
        Trains on ``train``, evaluates the error on ``test``.
    cfg : ModuleConfig
    label : str
        The stored run label (``"study:experiment"``).
    describe : dict, optional
        The model's identity and stored config keys (e.g. ``{"network": ..., "price": ...}``);
        default: :func:`model_identity`.
    model_record : dict, optional
        The store's model row (``name``, ``arch``, ``seed``, ``variant``, ``options``).
    loss_fn : callable
        ``loss_fn(outputs, y)``, a scalar.
    hooks : sequence of callables
        ``hook(ctx: EpochContext) -> rows`` after each epoch (``ctx.bank`` is the module).
    optimizer : torch.optim.Optimizer, optional
        Instead of ``cfg.optimizer`` (in-memory use only: it is not part of the identity).
    teacher : Tensor or callable, optional
        A teacher's logits of ``data.train`` (one row per example, in order), distilled when
        ``cfg.distill > 0`` (required then); the hash of its bits enters the run id. Or an
        object with ``describe()`` (its identity, in the run id) and ``__call__()`` returning
        the logits, called at the first epoch trained (a stored run never computes them).
    """

    unit = "steps"

    def __init__(self, model: nn.Module | Callable[[], nn.Module], data: DatasetSplits,
                 cfg: ModuleConfig, *, label: str = "train", describe: dict | None = None,
                 model_record: dict | None = None, loss_fn: Callable = F.cross_entropy,
                 hooks: Sequence[Callable] = (), device: str | torch.device = "auto",
                 optimizer: torch.optim.Optimizer | None = None,
                 teacher: Tensor | Callable[[], Tensor] | None = None):
        if teacher is None or isinstance(teacher, Tensor):
            check_teacher(teacher, cfg.distill, len(data.train), cfg.shift)
        elif not cfg.distill:
            check_teacher(teacher, 0.0, len(data.train))  # refused: a teacher without distill
        built = model if isinstance(model, nn.Module) else model()
        if isinstance(model, nn.Module) and str(device) == "auto":
            self.device = next(built.parameters()).device  # trained where it lives
        else:
            self.device = resolve_device(device)
        self.model = built.to(self.device)
        self.data, self.cfg, self.label = data.to(self.device), cfg, label
        self.teacher = teacher.to(self.device) if isinstance(teacher, Tensor) else teacher
        self.augment = image_augment(data, cfg.shift)
        self.loss_fn, self.hooks = loss_fn, list(hooks)
        self.describe = dict(describe) if describe is not None else model_identity(built)
        self.model_record = model_record or {"name": type(built).__name__, "arch": [],
                                             "seed": cfg.seed}
        self.own_opt = optimizer is None
        self.opt = make_optimizer(self.model, cfg) if self.own_opt else optimizer
        self.sched = self._schedule()
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.epoch, self.alive, self.train_s, self.eval_s = 0, True, 0.0, 0.0
        self.last_record: dict = {}
        roots = [type(built), loss_fn, *self.hooks, type(self)]
        if not isinstance(model, nn.Module):
            roots.append(model)  # the code that builds the model
        self.spec = self._spec(closure_hash(__name__, roots))
        self.run_id = self.spec.run_id()

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    def _spec(self, code: str) -> RunSpec:
        """The run's :class:`~widthlab.engine.spec.RunSpec`: the model's identity, the
        config's hashed fields (the rest is placement), the loss and hooks, the data, the
        code."""
        train, placement = self.cfg.identity()
        loss = module_name(self.loss_fn) + "." + getattr(
            self.loss_fn, "__qualname__", type(self.loss_fn).__qualname__)
        teacher = [] if self.teacher is None else [{"teacher": (
            logits_id(self.teacher) if isinstance(self.teacher, Tensor)
            else describe_hook(self.teacher))}]
        return RunSpec("module", label=self.label, dataset=self.data.name,
                       data=data_identity(self.data), models=[self.describe], train=train,
                       modifiers=[{"loss": loss}, *({"hook": describe_hook(h)}
                                                    for h in self.hooks), *teacher],
                       code=code, placement={**placement, "device": str(self.device)})

    # ------------------------------------------------------------------ Trainable
    def record(self) -> RunRecord:
        config = {**self.describe, "data": self.data.describe(), "train": asdict(self.cfg),
                  "hooks": [describe_hook(h) for h in self.hooks]}
        return RunRecord(self.run_id, study=self.label, dataset=self.data.name, config=config,
                         models=[self.model_record], seed=self.cfg.seed,
                         device=str(self.device), precision="fp32",
                         code_version=f"widthlab {__version__} module")

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train) / self.cfg.batch_size)

    def running(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def unit_groups(self) -> list[dict[str, int]]:
        """The width of every gate of the model (none when it is not gated)."""
        return [gate_widths(self.model)]

    def timings(self) -> dict:
        return {"train_s": round(self.train_s, 3), "eval_s": round(self.eval_s, 3)}

    def price_at(self, epoch: int) -> float:
        """The price of ``epoch``: off during the warm-up and the free epochs, rising
        linearly over the first ``ramp_epochs`` priced epochs."""
        cfg = self.cfg
        if not cfg.warmup_epochs < epoch <= cfg.epochs - cfg.free_epochs:
            return 0.0
        k = epoch - cfg.warmup_epochs
        return cfg.price * k / cfg.ramp_epochs if k < cfg.ramp_epochs else cfg.price

    def gates_fixed_at(self, epoch: int) -> bool:
        """Whether ``epoch`` trains at fixed gates (``fix_gates`` and a free epoch)."""
        cfg = self.cfg
        return cfg.fix_gates and epoch > cfg.epochs - cfg.free_epochs

    def dropout_at(self, epoch: int) -> tuple[float, ...]:
        """The dropout rates of ``epoch`` (none outside the free epochs when
        ``dropout_free_only``)."""
        cfg = self.cfg
        free = epoch > cfg.epochs - cfg.free_epochs
        return cfg.dropout if free or not cfg.dropout_free_only else ()

    def train_epoch(self, epoch: int, advance: Callable[[int], None]) -> EpochRows:
        """Train, check for divergence, shrink, evaluate; the epoch's rows (none once the
        model diverged)."""
        if not self.alive:
            advance(self.steps_per_epoch())
            self.epoch = epoch
            return EpochRows()
        if epoch == 1:  # a fresh run: the global generator (dropout) from the run's seed,
            torch.manual_seed(self.cfg.seed)  # not from what the process ran before
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        price = self.price_at(epoch)
        tr = self.data.train
        loss = module_epoch(self.model, self.opt, tr.x, tr.y, self.cfg, price, self.gen,
                            self.loss_fn, self.sched, advance,
                            fixed_gates=self.gates_fixed_at(epoch),
                            dropout=self.dropout_at(epoch), teacher=self.teacher_logits(),
                            augment=self.augment)
        elapsed = time.perf_counter() - start
        self.train_s += elapsed
        self.epoch = epoch
        failure = self._diverged(loss, epoch)
        if failure is not None:
            return EpochRows(failures=[failure])
        t1 = time.perf_counter()
        removed = self.shrink(epoch)
        rec = self._record(epoch, price, loss, elapsed, removed)
        rows = self.rows(rec)
        metrics, arrays = self._hook_rows(epoch)
        rows.metrics += metrics
        rows.arrays += arrays
        self.eval_s += time.perf_counter() - t1
        return rows

    def teacher_logits(self) -> Tensor | None:
        """The teacher's logits (a callable teacher computed now, once, and checked)."""
        if self.teacher is not None and not isinstance(self.teacher, Tensor):
            # computed at the first epoch trained, fresh or resumed: torch's generators are
            # left as they were, so the run's own draws do not depend on which
            cuda = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                logits = self.teacher()
            check_teacher(logits, self.cfg.distill, len(self.data.train), self.cfg.shift)
            self.teacher = logits.to(self.device)
        return self.teacher

    def shrink(self, epoch: int) -> dict[str, int]:
        """Remove the units the rule calls dead after ``epoch`` (optimizer state sliced);
        ``{gate key: units removed}``. A subclass may remove more (e.g. to a budget)."""
        return shrink_(self.model, self.opt, rule=self.cfg.rule) if self.cfg.shrink else {}

    def _diverged(self, loss: float, epoch: int) -> tuple[int, int, str] | None:
        reason = None
        if not math.isfinite(loss):
            reason = "loss became NaN or inf"
        elif not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            reason = "parameters became NaN or inf"
        if reason is None:
            return None
        self.alive = False
        return (0, epoch, f"{reason} during epoch {epoch} at lr {self.cfg.lr:g} "
                          "(lower the learning rate)")

    def _record(self, epoch: int, price: float, loss: float, elapsed: float,
                removed: dict) -> dict:
        test = self.data.test
        self.last_record = {
            "epoch": epoch, "price": price, "train_loss": loss,
            "test_error": error_rate(self.model, test.x, test.y, self.cfg.eval_batch),
            "epoch_time": elapsed, "n_params": sum(p.numel() for p in self.model.parameters()),
            "widths": gate_widths(self.model), "removed": removed}
        return self.last_record

    @staticmethod
    def rows(rec: dict, model: int = 0, epoch: int | None = None) -> EpochRows:
        """The stored rows of one epoch's record."""
        e = int(rec["epoch"] if epoch is None else epoch)
        return EpochRows([MetricRow(model, e, "test", "error", rec["test_error"]),
                          MetricRow(model, e, "train", "loss", rec["train_loss"]),
                          MetricRow(model, e, "train", "epoch_time", rec["epoch_time"]),
                          MetricRow(model, e, "train", "n_params", rec["n_params"]),
                          MetricRow(model, e, "train", "price", rec["price"])])

    def _hook_rows(self, epoch: int) -> tuple[list[MetricRow], list[ArrayRow]]:
        ctx = EpochContext(epoch, self.model, self.cfg, self.data, (self.alive,))
        metrics, arrays = [], []
        for hook in self.hooks:
            for row in hook(ctx) or ():
                (arrays if isinstance(row, ArrayRow) else metrics).append(row)
        return metrics, arrays

    # ------------------------------------------------------------------ checkpoints
    def _schedule(self):
        steps = self.cfg.epochs * self.steps_per_epoch()
        return (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, steps)
                if self.cfg.schedule == "cosine" else None)

    def checkpoint(self, final: bool) -> dict:
        """Tensors and plain containers only (weights-only loadable): the model's
        ``state_dict`` and plain sizes (:func:`~widthlab.units.size_attrs`), and unless
        ``final`` the optimizer's and schedule's ``state_dict``, the minibatch generator's and
        torch's global RNG state (and the GPUs' where there are any)."""
        state = {"epoch": self.epoch, "alive": self.alive, "train_s": self.train_s,
                 "eval_s": self.eval_s}
        ckpt = {"model": self.model.state_dict(), "sizes": size_attrs(self.model),
                "state": state}
        if not final:
            ckpt.update(opt=self.opt.state_dict(),
                        sched=None if self.sched is None else self.sched.state_dict(),
                        gen=self.gen.get_state(), rng=torch.get_rng_state())
            if torch.cuda.is_available():  # dropout on a GPU draws from its generators
                ckpt["rng_cuda"] = torch.cuda.get_rng_state_all()
        return ckpt

    def restore(self, ckpt: dict) -> None:
        """Bring the freshly built model to the checkpoint's shapes (units removed during
        training: :func:`~widthlab.units.resize_to_state_`), load it, then rebuild the
        optimizer and schedule over its parameters and load theirs."""
        resize_to_state_(self.model, ckpt["model"], ckpt.get("sizes"))
        self.model.load_state_dict(ckpt["model"])
        if "opt" in ckpt:
            if self.own_opt:  # built as __init__ built it, then loaded
                self.opt = make_optimizer(self.model, self.cfg)
                self.sched = self._schedule()
            self.opt.load_state_dict(ckpt["opt"])
            if self.sched is not None:
                self.sched.load_state_dict(ckpt["sched"])
            self.gen.set_state(ckpt["gen"])
            torch.set_rng_state(ckpt["rng"])
            if "rng_cuda" in ckpt and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
        s = ckpt["state"]
        self.epoch, self.alive = int(s["epoch"]), bool(s["alive"])
        self.train_s, self.eval_s = float(s["train_s"]), float(s["eval_s"])


__all__ = ["ModuleRun", "model_identity", "module_epoch"]
