"""A character-level GPT as a plain ``nn.Module`` (nanoGPT's architecture).

Pre-norm blocks ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``; causal self-attention with one fused
``qkv`` Linear and :func:`torch.nn.functional.scaled_dot_product_attention`; a GELU MLP whose
width ``n_ffn`` is its own setting (not tied to ``4 * n_embd``), so FFN widths can be swept at a
fixed model width; learned token and position embeddings; a final LayerNorm; the output head
tied to the token embedding by default (``tie_weights=True``, as nanoGPT; untied with
``tie_weights=False``).

Initialisation follows nanoGPT: every Linear and Embedding weight ``N(0, 0.02)``, the residual
output projections (``attn.proj``, ``mlp.proj``) ``N(0, 0.02 / sqrt(2 n_layer))``, biases zero,
LayerNorms one and zero. A model built under ``torch.manual_seed(s)`` is the same every time.

Shape letters: ``B`` batch, ``T`` time (tokens), ``C`` = ``n_embd``, ``H`` heads, ``D`` = C / H,
``F`` = ``n_ffn``, ``V`` = ``vocab_size``.

Example::

    cfg = GPTConfig(n_layer=4, n_head=4, n_embd=128, n_ffn=512, block_size=64, vocab_size=84)
    model = GPT(cfg)
    logits = model(idx)                       # idx (B, T) int64 -> (B, T, V)
    loss = model.loss(idx, targets)           # mean cross-entropy, nats per character
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a :class:`GPT`.

    Parameters
    ----------
    n_layer, n_head, n_embd : int
        Blocks, attention heads per block, model width (``n_embd % n_head == 0``).
    n_ffn : int
        The MLP's hidden width (nanoGPT uses ``4 * n_embd``; here it is free).
    block_size : int
        The longest context (number of learned positions).
    vocab_size : int
        Number of token ids.
    dropout : float
        Dropout on attention weights, residual branches and embeddings (0 disables it).
    bias : bool
        Biases in the Linears and LayerNorms (nanoGPT trains without).
    tie_weights : bool
        The output head shares the token embedding's weight.
    """

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_ffn: int = 512
    block_size: int = 64
    vocab_size: int = 84
    dropout: float = 0.0
    bias: bool = False
    tie_weights: bool = True

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "n_ffn", "block_size", "vocab_size"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"GPTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise UsageError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}; "
                             "choose a width that is a multiple of the number of heads")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (``nn.LayerNorm`` before torch 2.1 had no switch)."""

    def __init__(self, n: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)  # (..., n)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one fused ``qkv`` Linear, then SDPA, then ``proj``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape  # x: (B, T, C)
        H = self.n_head
        # the head width is read off qkv (not the stream), so heads can be cut on their own
        q, k, v = self.qkv(x).chunk(3, dim=2)  # (B, T, H*D) each
        D = q.shape[-1] // H
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H*D)
        return self.resid_drop(self.proj(y))  # (B, T, C)


class MLP(nn.Module):
    """``proj(gelu(fc(x)))``: the FFN whose ``n_ffn`` hidden units a width study counts."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.n_ffn, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_ffn, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.fc(x))  # (B, T, F)
        return self.drop(self.proj(h))  # (B, T, C)


class Block(nn.Module):
    """A pre-norm transformer block."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = LayerNorm(cfg.n_embd, cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = LayerNorm(cfg.n_embd, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))  # (B, T, C)
        return x + self.mlp(self.ln2(x))  # (B, T, C)


class GPT(nn.Module):
    """A decoder-only transformer over token ids (see the module docstring).

    Parameters
    ----------
    cfg : GPTConfig
        The shape.

    Attributes
    ----------
    tok, pos : nn.Embedding
        Token ``(V, C)`` and position ``(block_size, C)`` embeddings.
    blocks : nn.ModuleList
        ``n_layer`` :class:`Block` s; ``blocks[i].mlp.fc`` holds block ``i``'s FFN neurons.
    head : nn.Linear
        ``C -> V``; ``head.weight is tok.weight`` when ``cfg.tie_weights``.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = LayerNorm(cfg.n_embd, cfg.bias)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.tok.weight
        self.apply(_init_weights)
        resid_std = 0.02 / math.sqrt(2 * cfg.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=resid_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=resid_std)

    def forward(self, idx: Tensor) -> Tensor:
        """Logits ``(B, T, V)`` of the next token at every position of ``idx`` ``(B, T)``."""
        B, T = idx.shape  # idx: (B, T)
        if T > self.cfg.block_size:
            raise UsageError(f"a sequence of {T} tokens is longer than block_size "
                             f"{self.cfg.block_size}; crop it to the last {self.cfg.block_size}")
        positions = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.tok(idx) + self.pos(positions))  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.head(self.ln_f(x))  # (B, T, V)

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Mean next-token cross-entropy (nats per token) of ``idx`` ``(B, T)``, a scalar."""
        logits = self(idx)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # ()

    def n_params(self, *, embeddings: bool = True) -> int:
        """Parameters counted once (a tied head is not counted twice); optionally without the
        position embedding (nanoGPT's count)."""
        n = sum(p.numel() for p in self.parameters())
        return n if embeddings else n - self.pos.weight.numel()

    @torch.no_grad()
    def generate(self, idx: Tensor, n_new: int, *, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Append ``n_new`` sampled tokens to ``idx`` ``(B, T)``; returns ``(B, T + n_new)``."""
        for _ in range(n_new):
            ctx = idx[:, -self.cfg.block_size:]  # (B, <=block_size)
            logits = self(ctx)[:, -1, :] / max(temperature, 1e-8)  # (B, V)
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]  # (B, 1)
                logits = logits.masked_fill(logits < kth, float("-inf"))  # (B, V)
            probs = F.softmax(logits, dim=-1)  # (B, V)
            nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)  # (B, T + 1)
        return idx


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def build_gpt(cfg: GPTConfig, seed: int) -> GPT:
    """The :class:`GPT` of ``cfg`` initialised from ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(cfg)
