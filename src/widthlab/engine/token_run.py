"""A language model trained on token windows as a :class:`~widthlab.engine.lifecycle.Trainable`.

:class:`TokenRun` trains one ``nn.Module`` mapping token ids ``(B, T)`` to logits
``(B, T, V)`` (:class:`~widthlab.nn.gpt.GPT`, gated by
:func:`widthlab.nn.surgery.gate_layers` or not) for a fixed number of AdamW steps on random
windows of a corpus' training split (nanoGPT's ``get_batch``, drawn with a seeded generator).
An "epoch" of the lifecycle is a chunk of :attr:`TokenConfig.chunk` steps; after each chunk
the dead units are removed (:func:`~widthlab.nn.surgery.shrink_`, AdamW state sliced in place)
and one row is stored: ``val/loss`` (nats per token over ``eval_windows`` windows spread over
the validation split, all of them when None; ``final_windows`` at the last chunk),
``train/loss`` (the chunk's mean), ``train/step_time``, ``train/n_params``,
``train/ffn_params`` (parameters of the ``mlp`` modules), ``train/price`` and
``width/<gate>`` per gate. The learning rate is nanoGPT's warm-up and cosine
(:func:`~widthlab.nn.gpt_train.lr_at`); gate parameters get their own peak ``gate_lr`` on
the same schedule and no weight decay. Through
:func:`~widthlab.engine.lifecycle.run_trainable` it gets checkpoints after every chunk and
kill -9 then resume bitwise identical on the CPU. Its identity is a
:class:`~widthlab.engine.spec.RunSpec` (kind ``"token"``, :attr:`TokenRun.spec`): the model's
description, every :class:`TokenConfig` field (prices and their window, fold, seeds, schedule,
evaluation windows), the loss, the corpus' content id and the code are hashed; the device is
its placement and the label only names the id.

Example::

    run = TokenRun(lambda: build_gpt(cfg, 0), load_text("shakespeare"),
                   TokenConfig(steps=2000, chunk=250), label="mine:gpt")
    run_id = run_trainable(run, "widthlab-runs")
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from widthlab import __version__
from widthlab.engine.config import resolve_device
from widthlab.engine.identity import closure_hash
from widthlab.engine.lifecycle import EpochRows, RunRecord
from widthlab.engine.module_run import model_identity
from widthlab.engine.spec import RunSpec, data_identity, hashed_names, split_config
from widthlab.errors import UsageError
from widthlab.nn.gpt_train import GPTTrain, evaluate_gpt, lr_at
from widthlab.nn.surgery import fold_gates_, gate_widths, model_gates, shrink_, size_penalty
from widthlab.store import MetricRow
from widthlab.units import resize_to_state_, size_attrs


@dataclass(frozen=True)
class TokenConfig(GPTTrain):
    """Settings of a :class:`TokenRun` (defaults: nanoGPT's Shakespeare-char CPU run): the
    optimisation settings of :class:`~widthlab.nn.gpt_train.GPTTrain` (``batch_size``,
    ``lr``, ``min_lr``, ``warmup_steps``, ``weight_decay``, ``betas``, ``grad_clip``, same
    defaults) and the run's own.

    Parameters
    ----------
    steps : int
        AdamW steps in all.
    chunk : int
        Steps per stored row (the lifecycle's epoch); ``steps`` must be a multiple.
    gate_lr : float
        Peak learning rate of the gate parameters (same warm-up and cosine shape).
    price : float
        Weight of :func:`~widthlab.nn.surgery.size_penalty` in the loss.
    price_from, price_until : float
        The price is on for steps in ``[price_from * steps, price_until * steps)``.
    shrink : bool
        Remove dead units after every chunk.
    fold_at : float or None
        After step ``fold_at * steps`` (a chunk boundary, at or after ``price_until``) the
        dead units are removed and the gates are folded into the weights
        (:func:`~widthlab.nn.surgery.fold_gates_`): the remaining steps train a plain model
        at fixed widths, AdamW's state of every kept weight carried over as it was: the
        moments are not rescaled by the folded gates (a unit with gate s now sees gradients
        1/s of its history's; the moving averages adapt within about 1/(1 - beta2) steps).
        None: the gates train to the end.
    seed : int
        The model's seed (recorded; the model factory uses it).
    data_seed : int
        Seed of the window generator.
    eval_windows : int or None
        Validation windows per row (spread over the split; None: every window).
    final_windows : int or None
        Validation windows of the last row (None: every window, the exact loss).
    """

    steps: int = 2000
    chunk: int = 250
    gate_lr: float = 1e-2
    price: float = 0.0
    price_from: float = 0.0
    price_until: float = 1.0
    shrink: bool = True
    fold_at: float | None = None
    seed: int = 0
    data_seed: int = 0
    eval_windows: int | None = 400
    final_windows: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        super().__post_init__()  # the optimisation settings
        if self.steps < 1 or self.chunk < 1 or self.steps % self.chunk:
            raise UsageError(f"TokenConfig: steps ({self.steps}) must be a positive multiple "
                             f"of chunk ({self.chunk})")
        if not (self.price >= 0 and 0 <= self.price_from <= self.price_until <= 1):
            raise UsageError("TokenConfig: need price >= 0 and 0 <= price_from <= "
                             "price_until <= 1")
        if self.fold_at is not None and not (
                self.price_until <= self.fold_at < 1
                and (self.fold_at * self.steps) % self.chunk == 0):
            raise UsageError(f"TokenConfig: fold_at ({self.fold_at}) must be in "
                             f"[price_until, 1) and fold_at * steps a multiple of chunk "
                             f"({self.chunk})")
        if self.gate_lr <= 0:
            raise UsageError(f"TokenConfig: gate_lr must be > 0, got {self.gate_lr}")

    @classmethod
    def hashed_fields(cls) -> list[str]:
        """The fields that enter a token run's id (all of them: each changes a number)."""
        return hashed_names(cls)


#: the loss every :class:`TokenRun` trains (its spec's modifier)
LOSS = "torch.nn.functional.cross_entropy (next token)"


def ffn_params(model: nn.Module) -> int:
    """Parameters of every module named ``mlp`` (a GPT's FFNs), gates excluded."""
    return sum(p.numel() for name, p in model.named_parameters()
               if ".mlp." in f".{name}" and not name.endswith(".gate"))


def token_optimizer(model: nn.Module, cfg: TokenConfig) -> torch.optim.AdamW:
    """AdamW with nanoGPT's groups (decay on matrices) and the gates in a third group
    (no decay, ``lr_scale = gate_lr / lr``)."""
    gate_ids = {id(g.gate) for g in model_gates(model)}
    decay, no_decay, gates = [], [], []
    for _, p in sorted(dict(model.named_parameters()).items()):
        (gates if id(p) in gate_ids else decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "lr_scale": cfg.gate_lr / cfg.lr})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, foreach=False)


class TokenRun:
    """One token model trained through the one lifecycle (see the module docstring).

    Parameters
    ----------
    model : nn.Module or callable returning one
        Built once (seeded by the caller); moved to ``device``.
    data : TextCorpus
        Anything with ``batch("train", B, T, generator=)``, ``val``, ``name``,
        ``content_id`` and ``describe()``.
    cfg : TokenConfig
    label : str
        The stored run label (``"study:experiment"``).
    describe : dict, optional
        The model's identity and stored config keys; default
        :func:`~widthlab.engine.module_run.model_identity`.
    model_record : dict, optional
        The store's model row.
    loss_fn, hooks
        Accepted for :class:`~widthlab.studies.steps.ModuleExperiment`; the loss is the
        next-token cross-entropy and hooks must be empty.
    """

    unit = "steps"

    def __init__(self, model: nn.Module | Callable[[], nn.Module], data, cfg: TokenConfig, *,
                 label: str = "train", describe: dict | None = None,
                 model_record: dict | None = None, loss_fn: Callable | None = None,
                 hooks: Sequence[Callable] = (), device: str | torch.device = "cpu"):
        if hooks:
            raise UsageError("TokenRun takes no epoch hooks; compute statistics from its "
                             "checkpoint in a stored analysis")
        if not isinstance(cfg, TokenConfig):
            raise UsageError(f"TokenRun needs a TokenConfig, got {type(cfg).__name__}")
        built = model if isinstance(model, nn.Module) else model()
        self.device = resolve_device(device)
        self.factory = model if not isinstance(model, nn.Module) else None
        self.model = built.to(self.device)
        self.data, self.cfg, self.label = data, cfg, label
        self.block_size = int(getattr(getattr(built, "cfg", None), "block_size", 0)) or 64
        self.describe = dict(describe) if describe is not None else model_identity(built)
        self.model_record = model_record or {"name": type(built).__name__, "arch": [],
                                             "seed": cfg.seed}
        self.opt = token_optimizer(self.model, cfg)
        self.gen = torch.Generator().manual_seed(cfg.data_seed)
        self.epoch, self.alive, self.train_s, self.eval_s = 0, True, 0.0, 0.0
        self.folded: dict[str, int] | None = None  # the widths once the gates are folded
        roots = [type(built), type(self)] + ([model] if self.factory is not None else [])
        self.spec = self._spec(closure_hash(__name__, roots))
        self.run_id = self.spec.run_id()

    def _spec(self, code: str) -> RunSpec:
        """The run's :class:`~widthlab.engine.spec.RunSpec`: the model's description, the
        config's hashed fields, the loss, the corpus' identity and the code are hashed; the
        device (and any field a config marks unhashed) is placement."""
        train, placement = split_config(self.cfg)
        return RunSpec("token", label=self.label, dataset=self.data.name,
                       data=data_identity(self.data), models=[self.describe], train=train,
                       modifiers=[{"loss": LOSS}], code=code,
                       placement={**placement, "device": str(self.device)})

    @property
    def epochs(self) -> int:
        return self.cfg.steps // self.cfg.chunk

    def record(self) -> RunRecord:
        config = {**self.describe, "data": self.data.describe(), "train": asdict(self.cfg)}
        return RunRecord(self.run_id, study=self.label, dataset=self.data.name, config=config,
                         models=[self.model_record], seed=self.cfg.seed,
                         device=str(self.device), precision="fp32",
                         code_version=f"widthlab {__version__} token")

    def steps_per_epoch(self) -> int:
        return self.cfg.chunk

    def running(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def unit_groups(self) -> list[dict[str, int]]:
        return [self.widths()]

    def widths(self) -> dict[str, int]:
        """``{gate key: units}``; after the fold, the widths the gates had."""
        return dict(self.folded) if self.folded is not None else gate_widths(self.model)

    def fold(self) -> None:
        """Fold the gates into the weights; AdamW rebuilt over the plain model with every
        kept weight's state carried over."""
        old = self.opt
        shrink_(self.model, old)
        widths = gate_widths(self.model)
        with torch.no_grad():
            fold_gates_(self.model, old)
        self.opt = token_optimizer(self.model, self.cfg)
        for p in self.model.parameters():
            if p in old.state:
                self.opt.state[p] = old.state[p]
        self.folded = widths

    def timings(self) -> dict:
        return {"train_s": round(self.train_s, 3), "eval_s": round(self.eval_s, 3)}

    def price_at(self, step: int) -> float:
        """The price of ``step`` (0-based): on in ``[price_from, price_until)`` of the steps."""
        c = self.cfg
        return c.price if c.price_from * c.steps <= step < c.price_until * c.steps else 0.0

    def _step(self, step: int) -> tuple[torch.Tensor, float]:
        c = self.cfg
        x, y = self.data.batch("train", c.batch_size, self.block_size, generator=self.gen)
        x, y = x.to(self.device), y.to(self.device)  # (B, T) each
        logits = self.model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        price = self.price_at(step)
        full = loss + price * size_penalty(self.model).to(loss) if price else loss
        self.opt.zero_grad(set_to_none=True)
        full.backward()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        lr = lr_at(step, c, c.steps)
        for group in self.opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.opt.step()
        return loss.detach(), price

    def train_epoch(self, epoch: int, advance: Callable[[int], None]) -> EpochRows:
        """Train one chunk of steps, shrink, evaluate; the chunk's rows (none once the model
        diverged)."""
        c = self.cfg
        self.epoch = epoch
        if not self.alive:
            advance(c.chunk)
            return EpochRows()
        self.model.train()
        start, total = time.perf_counter(), torch.zeros(())
        for step in range((epoch - 1) * c.chunk, epoch * c.chunk):
            loss, price = self._step(step)
            total = total + loss.cpu()
            advance(1)
        elapsed = time.perf_counter() - start
        self.train_s += elapsed
        train_loss = float(total) / c.chunk
        if not (math.isfinite(train_loss)
                and all(bool(torch.isfinite(p).all()) for p in self.model.parameters())):
            self.alive = False
            return EpochRows(failures=[(0, epoch, f"loss or parameters became NaN or inf in "
                                                  f"chunk {epoch} at lr {c.lr:g} (lower the "
                                                  "learning rate)")])
        t1 = time.perf_counter()
        if c.fold_at is not None and self.folded is None and model_gates(self.model) \
                and epoch * c.chunk >= c.fold_at * c.steps:
            self.fold()
        elif c.shrink and model_gates(self.model):
            shrink_(self.model, self.opt)
        val = evaluate_gpt(self.model, self.data.val.to(self.device), self.block_size,
                           max_windows=c.final_windows if epoch == self.epochs
                           else c.eval_windows)
        self.eval_s += time.perf_counter() - t1
        e = epoch
        rows = [MetricRow(0, e, "val", "loss", val), MetricRow(0, e, "train", "loss", train_loss),
                MetricRow(0, e, "train", "step_time", elapsed / c.chunk),
                MetricRow(0, e, "train", "n_params",
                          sum(p.numel() for p in self.model.parameters())),
                MetricRow(0, e, "train", "ffn_params", ffn_params(self.model)),
                MetricRow(0, e, "train", "price", price)]
        rows += [MetricRow(0, e, "width", k, w) for k, w in self.widths().items()]
        return EpochRows(metrics=rows)

    def checkpoint(self, final: bool) -> dict:
        """The model's ``state_dict`` and plain sizes; unless ``final`` also AdamW's state,
        the window generator's and torch's global RNG state (weights-only loadable)."""
        state = {"epoch": self.epoch, "alive": self.alive, "train_s": self.train_s,
                 "eval_s": self.eval_s, "folded": self.folded}
        ckpt = {"model": self.model.state_dict(), "sizes": size_attrs(self.model),
                "state": state}
        if not final:
            ckpt.update(opt=self.opt.state_dict(), gen=self.gen.get_state(),
                        rng=torch.get_rng_state())
        return ckpt

    def restore(self, ckpt: dict) -> None:
        """Resize the fresh model to the checkpoint's shapes, load it, rebuild AdamW over its
        parameters and load AdamW's state (a folded checkpoint folds the fresh model's gates
        first)."""
        s = ckpt["state"]
        if s.get("folded") is not None and self.folded is None:
            with torch.no_grad():
                fold_gates_(self.model)
            self.folded = {k: int(v) for k, v in s["folded"].items()}
        resize_to_state_(self.model, ckpt["model"], ckpt.get("sizes"))
        self.model.load_state_dict(ckpt["model"])
        if "opt" in ckpt:
            self.opt = token_optimizer(self.model, self.cfg)
            self.opt.load_state_dict(ckpt["opt"])
            self.gen.set_state(ckpt["gen"])
            torch.set_rng_state(ckpt["rng"])
        self.epoch, self.alive = int(s["epoch"]), bool(s["alive"])
        self.train_s, self.eval_s = float(s["train_s"]), float(s["eval_s"])


__all__ = ["LOSS", "TokenConfig", "TokenRun", "ffn_params", "token_optimizer"]
