"""Training a :class:`~widthlab.nn.gpt.GPT`: AdamW, linear warm-up then cosine decay, one step.

The pieces a trainer calls (the one trainer lives in the engine; this module has no loop of its
own beyond the small :func:`train_gpt` that benchmarks and tests use):

- :class:`GPTTrain`: the optimisation settings (nanoGPT's Shakespeare-char defaults);
- :func:`lr_at`: the learning rate of a step (linear warm-up, cosine decay to ``min_lr``);
- :func:`make_optimizer`: AdamW with weight decay on matrices only (nanoGPT's two groups);
- :func:`train_step`: one step (forward, backward, clip, set lr, AdamW step), returns the loss;
- :func:`evaluate_gpt`: the exact mean cross-entropy over non-overlapping windows of a split.

Example::

    model = build_gpt(cfg, seed=0)
    opt = make_optimizer(model, GPTTrain())
    for step in range(steps):
        x, y = corpus.batch("train", 12, 64, generator=g)
        loss = train_step(model, opt, x, y, lr=lr_at(step, tc, steps), grad_clip=tc.grad_clip)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.gpt import GPTConfig, build_gpt


@dataclass(frozen=True)
class GPTTrain:
    """Optimisation settings (defaults: nanoGPT's ``train_shakespeare_char`` CPU run).

    Parameters
    ----------
    batch_size : int
        Windows per step.
    lr, min_lr : float
        Peak learning rate and the floor the cosine decays to.
    warmup_steps : int
        Linear warm-up steps (``lr * (s + 1) / (warmup + 1)``).
    weight_decay : float
        AdamW decoupled weight decay, on parameters with two or more dimensions only.
    betas : tuple of float
        AdamW's betas.
    grad_clip : float
        Clip the gradient's global norm to this (0 disables).
    """

    batch_size: int = 12
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.warmup_steps < 0:
            raise UsageError("GPTTrain: batch_size must be >= 1 and warmup_steps >= 0")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise UsageError(f"GPTTrain: need lr > 0 and 0 <= min_lr <= lr, got lr {self.lr}, "
                             f"min_lr {self.min_lr}")

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(step: int, tc: GPTTrain, total_steps: int) -> float:
    """The learning rate of ``step`` (0-based) of ``total_steps``: warm-up, then cosine.

    ``lr * (step + 1) / (warmup + 1)`` during warm-up; then
    ``min_lr + (lr - min_lr) * (1 + cos(pi * r)) / 2`` with ``r`` going from 0 to 1 between
    the warm-up's end and ``total_steps``; ``min_lr`` from then on.
    """
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / (tc.warmup_steps + 1)
    if step >= total_steps:
        return tc.min_lr
    r = (step - tc.warmup_steps) / max(1, total_steps - tc.warmup_steps)
    return tc.min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (tc.lr - tc.min_lr)


def param_groups(named: dict[str, Tensor], weight_decay: float, *, lead_dims: int = 0) -> list:
    """nanoGPT's AdamW groups: tensors of >= 2 dims decay (matrices, embeddings), others not.

    ``named`` maps names to tensors; ``lead_dims`` leading dimensions (a stacked model axis)
    are not counted.
    """
    decay, no_decay = [], []
    for _, p in sorted(named.items()):
        (decay if p.dim() - lead_dims >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, tc: GPTTrain) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters with nanoGPT's two weight-decay groups."""
    named = dict(model.named_parameters())  # a tied weight appears once
    return torch.optim.AdamW(param_groups(named, tc.weight_decay), lr=tc.lr, betas=tc.betas,
                             foreach=False)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, *,
               lr: float, grad_clip: float = 1.0) -> float:
    """One AdamW step on the batch ``x``, ``y`` ``(B, T)``; returns the batch's mean loss."""
    model.train()
    logits = model(x)  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # ()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    set_lr(optimizer, lr)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate_gpt(model: nn.Module, ids: Tensor, block_size: int, *, batch_size: int = 64,
             max_windows: int | None = None) -> float:
    """Mean next-token cross-entropy (nats per token) over non-overlapping windows of ``ids``.

    Windows start at ``0, T, 2T, ...`` (``T = block_size``) and cover every token that has a
    successor; the last, shorter window is included. ``max_windows`` evaluates only that many
    windows spread evenly over the split (a quicker, deterministic estimate; the start of a
    split is one play's cast list, not a fair sample).
    """
    was_training = model.training
    model.eval()
    n = len(ids) - 1  # tokens with a next token
    starts = list(range(0, n, block_size))
    if max_windows is not None and len(starts) > max_windows:
        step = len(starts) / max_windows
        starts = [starts[int(i * step)] for i in range(max_windows)]
    total, count = torch.zeros((), dtype=torch.float64), 0  # summed on the device
    full = [s for s in starts if s + block_size <= n]
    for i in range(0, len(full), batch_size):
        s = torch.tensor(full[i:i + batch_size])  # (b,)
        offs = torch.arange(block_size)  # (T,)
        x, y = ids[s[:, None] + offs], ids[s[:, None] + offs + 1]  # (b, T) each
        logits = model(x)  # (b, T, V)
        total = total.to(logits.device) + F.cross_entropy(
            logits.flatten(0, 1), y.flatten(), reduction="sum").double()
        count += y.numel()
    tail = [s for s in starts if s + block_size > n]
    for s in tail:
        x, y = ids[None, s:n], ids[None, s + 1:n + 1]  # (1, t) each
        logits = model(x)  # (1, t, V)
        total = total.to(logits.device) + F.cross_entropy(
            logits.flatten(0, 1), y.flatten(), reduction="sum").double()
        count += y.numel()
    model.train(was_training)
    return float(total) / max(count, 1)


def train_gpt(cfg: GPTConfig, data, steps: int, tc: GPTTrain | None = None, *, seed: int = 0,
              data_seed: int = 0, eval_every: int = 0, eval_windows: int | None = None,
              log=None) -> tuple[nn.Module, list[dict]]:
    """Train one GPT for ``steps`` steps on ``data`` (a corpus with ``batch``/``val``).

    Deterministic: the model is built from ``seed``, the batches come from a generator seeded
    with ``data_seed``. Returns the model and a history of records ``{step, lr, train_loss}``
    plus ``val_loss`` every ``eval_every`` steps and after the last (over ``eval_windows``
    windows, all when None). ``log`` (callable) receives each record with a ``val_loss``.
    """
    tc = tc or GPTTrain()
    model = build_gpt(cfg, seed)
    opt = make_optimizer(model, tc)
    gen = torch.Generator().manual_seed(data_seed)
    history: list[dict] = []
    t0 = time.perf_counter()
    for step in range(steps):
        x, y = data.batch("train", tc.batch_size, cfg.block_size, generator=gen)  # (B, T)
        lr = lr_at(step, tc, steps)
        rec = {"step": step, "lr": lr,
               "train_loss": train_step(model, opt, x, y, lr=lr, grad_clip=tc.grad_clip)}
        last = step == steps - 1
        if last or (eval_every and (step + 1) % eval_every == 0):
            rec["val_loss"] = evaluate_gpt(model, data.val, cfg.block_size,
                                           max_windows=eval_windows)
            rec["seconds"] = time.perf_counter() - t0
            if log is not None:
                log(rec)
        history.append(rec)
    return model, history
