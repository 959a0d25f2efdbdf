"""Kernels of :mod:`widthlab.nn.bank`: the seeded initialisation of linear layers and MLPs,
gradient views, and the chunked first-layer GEMMs in float32, native bf16 and emulated bf16
(re-exported by :mod:`widthlab.nn.bank`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor


def init_linear(out_features: int, in_features: int, generator: torch.Generator
                ) -> tuple[Tensor, Tensor]:
    """``nn.Linear``'s default initialisation, drawn from ``generator`` (weight, then bias)."""
    bound = 1.0 / math.sqrt(in_features) if in_features else 0.0  # 0 inputs: a shrunk layer
    # kaiming_uniform_(a=sqrt(5)) on the weight and the bias rule both give U(-bound, bound).
    w = torch.empty(out_features, in_features).uniform_(-bound, bound, generator=generator)
    b = torch.empty(out_features).uniform_(-bound, bound, generator=generator)
    return w, b


def init_mlp(sizes: Sequence[int], seed: int) -> list[tuple[Tensor, Tensor]]:
    """Weights of an MLP with layer sizes ``sizes`` (``[in, h1, ..., out]``), seeded."""
    g = torch.Generator().manual_seed(int(seed))
    return [init_linear(o, i, g) for i, o in zip(sizes[:-1], sizes[1:], strict=False)]

def _grad(p: Tensor) -> Tensor:
    if p.grad is None:
        raise RuntimeError("call MLPBank.init_grads() before taking gradient views")
    return p.grad


MIN_ROWS = 4  # CPU GEMMs give each row the same bits from this many rows up, not below


def _chunks(h: int, chunk: int) -> list[tuple[int, int]]:
    """Row ranges of ``chunk`` units covering ``h``; a tail under :data:`MIN_ROWS` rows joins
    the chunk before it, so a unit's result does not depend on where the chunks fall (a model
    that grows or shrinks moves its neighbours' units, bit for bit unchanged)."""
    bounds = list(range(0, h, chunk)) + [h]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < MIN_ROWS:
        bounds.pop(-2)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


@functools.cache
def _native_cpu_bf16() -> bool:
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch >= 2.1
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def _forward_fp32(x: Tensor, weight: Tensor, bias: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Unit-major fp32 products ``W[i:j] @ x.T`` into one ``(H, B)`` buffer; saves ``x.T``."""
    xt = x.t().contiguous()  # (in, B)
    out = torch.empty(weight.shape[0], x.shape[0], dtype=torch.float32, device=x.device)
    for i, j in _chunks(weight.shape[0], chunk):
        # mm + in-cache bias and ReLU: addmm(out=) would first broadcast-copy the bias
        torch.mm(weight[i:j], xt, out=out[i:j])
        out[i:j].add_(bias[i:j, None]).clamp_(min=0)
    return xt, out


def _forward_native(x: Tensor, weight: Tensor, bias: Tensor, chunk: int,
                    dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Native low precision (AMX/AVX512-BF16, GPUs): the fp32 layout with bf16 operands and a
    bf16 ``(H, B)`` result. Each weight chunk is cast into one reused buffer just before its
    product (the cast stays in cache; the fp32 master weights are read once per step); the
    bias enters the product's fp32 accumulator (one rounding). Saves ``x`` batch-major in
    bf16 for the weight gradient."""
    xb = x.to(dtype)  # (B, in)
    xt = xb.t().contiguous()  # (in, B)
    h = weight.shape[0]
    bc = bias.to(dtype)[:, None]
    out = torch.empty(h, x.shape[0], dtype=dtype, device=x.device)
    wc = torch.empty(min(h, chunk + MIN_ROWS), weight.shape[1], dtype=dtype, device=x.device)
    for i, j in _chunks(h, chunk):
        w = wc[:j - i]
        w.copy_(weight[i:j])
        torch.addmm(bc[i:j], w, xt, out=out[i:j]).relu_()
    return xb, out


def _forward_emulated(x: Tensor, weight: Tensor, bias: Tensor, chunk: int,
                      dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """bf16 products where the CPU has no native bf16 GEMM: ``x`` batch-major (that
    orientation runs ~4x faster there), results in fp32."""
    xb = x.to(dtype)  # (B, in)
    out = torch.empty(weight.shape[0], x.shape[0], dtype=torch.float32, device=x.device)
    for i, j in _chunks(weight.shape[0], chunk):
        out[i:j] = torch.mm(xb, weight[i:j].to(dtype).t()).t()
        out[i:j].add_(bias[i:j, None]).clamp_(min=0)
    return xb, out


