"""Several GPTs of one shape trained as one: stacked parameters, batched GEMMs.

``K`` models that differ only in their seed (or in anything that does not change a tensor's
shape) are stacked: every parameter becomes one tensor with a leading model axis ``(K, ...)``,
named as ``GPT.named_parameters()`` names it. :func:`stacked_forward` is the GPT's forward pass
written for that axis: every Linear is one ``torch.bmm`` over the ``K`` models, the token
embedding one lookup in the ``K`` stacked tables, the attention one SDPA call over ``K * B``
sequences. The loss is the vector of the ``K`` models' mean losses; its sum is backpropagated,
so each model's gradient is exactly its own (the models share nothing). AdamW is elementwise,
so one AdamW over the stacked tensors is ``K`` AdamWs; gradient clipping is per model (each
model's own global norm). Training ``K`` fused models is therefore mathematically the same as
training them one after another with :func:`widthlab.nn.gpt_train.train_step` (the tests
check it to 1e-5 in float32 and 1e-10 in float64); only floating-point rounding differs.

(``torch.func.stack_module_state`` + ``vmap`` was the first version: on CPU, vmap has no
batching rule for the flash SDPA kernel and loops over the batch instead.)

Speed: fusion removes per-operation overhead and gives parallel hardware K times larger
operations; on one CPU core, where a single model's step is already GEMM-bound, it does not
pay (``benchmarks/bench_transformer.py`` measured 0.8-0.95x at nanoGPT's CPU size).

Dropout must be 0: fused dropout would draw other random numbers than ``K`` separate runs.

Example::

    fused = FusedGPT(cfg, seeds=[0, 1, 2, 3], tc=GPTTrain())
    losses = fused.step(x, y, lr=1e-3)        # x, y (B, T) shared or (K, B, T) per model
    model_2 = fused.export(2)                 # a plain GPT with model 2's weights
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from widthlab.errors import UsageError
from widthlab.nn.gpt import GPT, GPTConfig, build_gpt
from widthlab.nn.gpt_train import GPTTrain, lr_at, param_groups, set_lr


class FusedGPT:
    """``K`` :class:`GPT` s of one config trained as one (see the module docstring).

    Parameters
    ----------
    cfg : GPTConfig
        The shared shape; ``cfg.dropout`` must be 0.
    seeds : sequence of int
        One initialisation seed per model (``build_gpt(cfg, seed)``, as a separate run).
    tc : GPTTrain
        Optimisation settings (AdamW betas, weight decay, gradient clip).
    device : str or torch.device, optional
        Where the stacked parameters live (the models are built on the CPU, as separate runs
        build them, then moved).

    Attributes
    ----------
    params : dict of str to Tensor
        The stacked parameters, ``(K, ...)`` each, named as ``GPT.named_parameters()`` names
        them (a tied head is ``tok.weight`` only); leaves that AdamW steps.
    """

    def __init__(self, cfg: GPTConfig, seeds: Sequence[int], tc: GPTTrain | None = None,
                 device: str | torch.device | None = None) -> None:
        if cfg.dropout > 0:
            raise UsageError(f"fused training needs dropout 0 (got {cfg.dropout}): fused "
                             "dropout differs from separate runs; train one at a time instead")
        if len(seeds) < 1:
            raise UsageError("FusedGPT needs at least one seed, e.g. seeds=[0, 1, 2]")
        self.cfg, self.seeds, self.tc = cfg, list(seeds), tc or GPTTrain()
        named = [dict(build_gpt(cfg, s).named_parameters()) for s in self.seeds]
        self.params: dict[str, Tensor] = {  # name -> (K, ...) stacked leaf
            name: torch.stack([m[name].detach() for m in named]).to(device).requires_grad_()
            for name in named[0]
        }
        self.optimizer = torch.optim.AdamW(
            param_groups(self.params, self.tc.weight_decay, lead_dims=1), lr=self.tc.lr,
            betas=self.tc.betas, foreach=False)

    @property
    def k(self) -> int:
        return len(self.seeds)

    def logits(self, x: Tensor) -> Tensor:
        """Every model's logits ``(K, B, T, V)`` of ``x``: ``(B, T)`` shared or ``(K, B, T)``."""
        if x.dim() == 2:
            x = x.expand(self.k, *x.shape)  # (K, B, T)
        if x.dim() != 3 or x.shape[0] != self.k:
            raise UsageError(f"per-model batches need a leading axis of {self.k}, got "
                             f"{tuple(x.shape)}; give (B, T) to share one batch")
        return stacked_forward(self.params, self.cfg, x)

    def losses(self, x: Tensor, y: Tensor) -> Tensor:
        """Each model's mean loss ``(K,)`` on ``x``, ``y``: ``(B, T)`` shared or ``(K, B, T)``."""
        logits = self.logits(x)  # (K, B, T, V)
        K, B, T, V = logits.shape
        y = y.expand(K, B, T) if y.dim() == 2 else y  # (K, B, T)
        per = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction="none")  # (KBT,)
        return per.view(K, B * T).mean(1)  # (K,)

    def clip_(self, max_norm: float) -> Tensor:
        """Clip each model's gradient to global norm ``max_norm``; returns the norms ``(K,)``."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        sq = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads])  # (P, K)
        norms = sq.sum(0).sqrt()  # (K,)
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # (K,)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))  # (K, ...)
        return norms

    def step(self, x: Tensor, y: Tensor, *, lr: float) -> Tensor:
        """One AdamW step of every model; returns the batch losses ``(K,)`` before the step."""
        losses = self.losses(x, y)  # (K,)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        if self.tc.grad_clip > 0:
            self.clip_(self.tc.grad_clip)
        set_lr(self.optimizer, lr)
        self.optimizer.step()
        return losses.detach()

    def state_dict(self) -> dict:
        """Weights and AdamW state, for a checkpoint (``torch.save``-able)."""
        return {"seeds": list(self.seeds), "params": {n: p.detach().clone()
                                                      for n, p in self.params.items()},
                "optimizer": self.optimizer.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; training then continues bit for bit."""
        if list(state["seeds"]) != self.seeds or set(state["params"]) != set(self.params):
            raise UsageError(f"checkpoint of seeds {state['seeds']} does not fit FusedGPT of "
                             f"seeds {self.seeds}; build FusedGPT with the checkpoint's config")
        for name, p in self.params.items():
            p.copy_(state["params"][name])
        self.optimizer.load_state_dict(state["optimizer"])

    @torch.no_grad()
    def export(self, i: int) -> GPT:
        """Model ``i`` as a plain :class:`GPT` (a copy of its current weights)."""
        model = GPT(self.cfg)
        for name, p in model.named_parameters():
            p.copy_(self.params[name][i])
        return model


def train_fused(cfg: GPTConfig, data, steps: int, tc: GPTTrain | None = None, *,
                seeds: Sequence[int] = (0, 1), data_seeds: Sequence[int] | None = None,
                data_seed: int = 0, log=None) -> tuple[FusedGPT, list[dict]]:
    """Train ``len(seeds)`` GPTs fused; the same numbers as :func:`train_gpt` per seed.

    With ``data_seeds=None`` every model sees the batches of one generator seeded with
    ``data_seed`` (as ``train_gpt(..., data_seed=data_seed)``); otherwise model ``i`` sees the
    batches of ``data_seeds[i]``. Returns the fused models and per-step records
    ``{step, lr, train_loss: [K floats]}`` (the last also has ``seconds``), each passed to
    ``log`` when given. Validation: ``evaluate_gpt(fused.export(i), data.val, cfg.block_size)``.
    """
    tc = tc or GPTTrain()
    fused = FusedGPT(cfg, seeds, tc)
    if data_seeds is not None and len(data_seeds) != fused.k:
        raise UsageError(f"data_seeds has {len(data_seeds)} entries for {fused.k} models; "
                         "give one per seed or none")
    gens = [torch.Generator().manual_seed(s) for s in (data_seeds or [data_seed])]
    history: list[dict] = []
    t0 = time.perf_counter()
    for step in range(steps):
        batches = [data.batch("train", tc.batch_size, cfg.block_size, generator=g) for g in gens]
        x = torch.stack([b[0] for b in batches]) if data_seeds else batches[0][0]  # (K?, B, T)
        y = torch.stack([b[1] for b in batches]) if data_seeds else batches[0][1]  # (K?, B, T)
        lr = lr_at(step, tc, steps)
        history.append({"step": step, "lr": lr,
                        "train_loss": fused.step(x, y, lr=lr).tolist()})
        if log is not None:
            log(history[-1])
    if history:
        history[-1]["seconds"] = time.perf_counter() - t0
    return fused, history


class _StackedMatmul(torch.autograd.Function):
    """``x @ w^T`` per model with the weight gradient computed in ``w``'s own layout
    (autograd's ``bmm`` backward computes ``x^T g`` and copies it into ``(K, out, in)``)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return torch.bmm(x, w.transpose(1, 2))  # (K, N, out)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors  # (K, N, in), (K, out, in)
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None  # (K, N, in)
        gw = torch.bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None  # (K, out, in)
        return gx, gw


def _linear(x: Tensor, params: dict, name: str) -> Tensor:
    """Every model's Linear ``name``: x ``(K, B, T, in)`` -> ``(K, B, T, out)``, one bmm."""
    K, B, T, n_in = x.shape
    w = params[name + ".weight"]  # (K, out, in)
    y = _StackedMatmul.apply(x.reshape(K, B * T, n_in), w)  # (K, BT, out)
    bias = params.get(name + ".bias")
    if bias is not None:
        y = y + bias[:, None, :]  # (K, BT, out)
    return y.view(K, B, T, -1)  # (K, B, T, out)


def _layer_norm(x: Tensor, params: dict, name: str) -> Tensor:
    """Every model's LayerNorm ``name`` on x ``(K, B, T, C)``."""
    y = F.layer_norm(x, x.shape[-1:], None, None, 1e-5)  # (K, B, T, C)
    w = params[name + ".weight"][:, None, None, :]  # (K, 1, 1, C)
    bias = params.get(name + ".bias")
    return y * w if bias is None else torch.addcmul(bias[:, None, None, :], y, w)  # (K, B, T, C)


def _attention(x: Tensor, params: dict, name: str, n_head: int) -> Tensor:
    """Every model's causal self-attention: one SDPA over the ``K * B`` sequences."""
    K, B, T, C = x.shape
    H = n_head
    q, k, v = _linear(x, params, name + ".qkv").split(C, dim=3)  # (K, B, T, C) each
    q = q.reshape(K * B, T, H, C // H).transpose(1, 2)  # (KB, H, T, D)
    k = k.reshape(K * B, T, H, C // H).transpose(1, 2)  # (KB, H, T, D)
    v = v.reshape(K * B, T, H, C // H).transpose(1, 2)  # (KB, H, T, D)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (KB, H, T, D)
    y = y.transpose(1, 2).reshape(K, B, T, C)  # (K, B, T, C)
    return _linear(y, params, name + ".proj")  # (K, B, T, C)


def stacked_forward(params: dict[str, Tensor], cfg: GPTConfig, x: Tensor) -> Tensor:
    """The :class:`GPT` forward of ``K`` stacked models: x ``(K, B, T)`` -> ``(K, B, T, V)``.

    ``params`` holds ``(K, ...)`` tensors named as ``GPT.named_parameters()``; model ``i``'s
    output is ``GPT`` with ``params[...][i]`` applied to ``x[i]`` (dropout off).
    """
    K, B, T = x.shape
    if T > cfg.block_size:
        raise UsageError(f"a sequence of {T} tokens is longer than block_size "
                         f"{cfg.block_size}; crop it to the last {cfg.block_size}")
    tok = params["tok.weight"]  # (K, V, C)
    offset = torch.arange(K, device=x.device)[:, None, None] * cfg.vocab_size  # (K, 1, 1)
    h = F.embedding(x + offset, tok.reshape(-1, tok.shape[-1]))  # (K, B, T, C), rows of model k
    h = h + params["pos.weight"][:, None, :T, :]  # (K, B, T, C)
    for i in range(cfg.n_layer):
        pre = f"blocks.{i}."
        h = h + _attention(_layer_norm(h, params, pre + "ln1"), params, pre + "attn",
                           cfg.n_head)  # (K, B, T, C)
        m = F.gelu(_linear(_layer_norm(h, params, pre + "ln2"), params, pre + "mlp.fc"))
        h = h + _linear(m, params, pre + "mlp.proj")  # (K, B, T, C); m is (K, B, T, F)
    h = _layer_norm(h, params, "ln_f")  # (K, B, T, C)
    head = "tok" if cfg.tie_weights else "head"
    return _linear(h, {"w.weight": params[head + ".weight"]}, "w")  # (K, B, T, V)
