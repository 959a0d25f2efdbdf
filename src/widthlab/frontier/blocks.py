"""Consumers of a group's units as column blocks, and one pass of activation statistics.

A group's units (neurons, channels, heads) are read by one or more *consumers*: a parameter
viewed as a matrix ``W`` (``C x N``) acting on input *rows* ``x`` (``N`` columns). Activations
of any rank become rows: tokens ``(B, T, C) -> (B*T, C)``; a Conv2d's input ``(B, C, H, W)``
becomes its im2col rows ``(B*L, C*kh*kw)`` (``F.unfold`` with the convolution's kernel size,
stride, padding and dilation), read by ``weight.reshape(C_out, -1)``; a grouped convolution is
one consumer per conv group (its own least-squares problem). Each unit is a block of columns:

* an input neuron of a Linear: 1 column (:func:`linear_consumer`);
* an attention head read by the output projection: ``head_dim`` columns (:func:`heads_consumer`);
* an input channel of a Conv2d: ``kh*kw`` columns (:func:`conv_consumers`);
* a SwiGLU down projection's input neuron: 1 column (its two producers, gate and up, lose a row
  each when the unit is cut; the consumer is the down projection: :func:`linear_consumer`).

:class:`RowStats` is everything every ranking needs from the rows, gathered in one pass: the
Gram matrix of ``[x, 1]`` (its last row holds the column means), the mean ``|x|`` and a digest of
the activations (so that calibration and evaluation data can be told apart).

Example::

    down = linear_consumer(mlp.down_proj, acts_calib)         # acts: (B, T, d_ff)
    o = heads_consumer(attn.o_proj, heads_calib, n_heads=8)   # 8 blocks of head_dim columns
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.frontier.obs import add_gram_, mirror_gram_
from widthlab.units.scores import population_var

__all__ = ["BlockConsumer", "RowStats", "conv_consumers", "conv_rows", "heads_consumer",
           "linear_consumer", "row_stats"]


@dataclass
class RowStats:
    """``gram``: ``(N+1, N+1)`` float64 ``[x, 1]^T [x, 1] / n``; ``abs_mean``: ``(N,)`` mean
    ``|x|``; ``n``: rows; ``digest``: hash of the activations the rows came from."""

    gram: Tensor
    abs_mean: Tensor
    n: int
    digest: str

    @property
    def mean(self) -> Tensor:
        return self.gram[-1, :-1]

    @property
    def var(self) -> Tensor:
        """Population variance of every column (:func:`~widthlab.units.scores.population_var`)."""
        return population_var(self.mean, self.gram.diagonal()[:-1])


class _Acc:
    def __init__(self, n_cols: int, device: torch.device):
        self.g = torch.zeros(n_cols + 1, n_cols + 1, dtype=torch.float64, device=device)
        self.absum = torch.zeros(n_cols, dtype=torch.float64, device=device)
        self.n = 0

    def add(self, rows: Tensor) -> None:
        r = rows.to(torch.float64)
        h = r.shape[1]
        add_gram_(self.g[:h, :h], r)
        self.g[h, :h] += r.sum(0)
        self.absum += r.abs().sum(0)
        self.n += len(r)

    def done(self, digest: str) -> RowStats:
        if not self.n:
            raise UsageError("no activation rows: give at least one calibration sample")
        h = len(self.absum)
        mirror_gram_(self.g[:h, :h])
        self.g[:h, h] = self.g[h, :h]
        self.g[h, h] = self.n
        return RowStats(self.g.div_(self.n), self.absum / self.n, self.n, digest)


def _digest(x: Tensor) -> str:
    arr = x.detach().to("cpu").contiguous()
    head = f"{tuple(arr.shape)}{arr.dtype}".encode()
    return hashlib.blake2b(head + arr.view(torch.uint8).numpy().tobytes(),
                           digest_size=16).hexdigest()


def row_stats(rows: Tensor, *, chunk: int = 2 ** 22, digest_of: Tensor | None = None
              ) -> RowStats:
    """:class:`RowStats` of ``rows`` (any rank: the last dimension is the columns), in blocks
    of about ``chunk`` values."""
    r = rows.reshape(-1, rows.shape[-1])
    acc = _Acc(r.shape[1], r.device)
    step = max(1, chunk // max(r.shape[1], 1))
    for i in range(0, len(r), step):
        acc.add(r[i:i + step])
    return acc.done(_digest(rows if digest_of is None else digest_of))


@dataclass
class BlockConsumer:
    """One consumer problem of a group (see the module docstring).

    ``weight``: ``(C, N)`` float64 matrix view of the parameter; ``bias``: ``(C,)`` or None
    (then no intercept is refitted); ``cols``: ``(U_c, b)`` the columns of each unit it reads;
    ``units``: ``(U_c,)`` their unit ids in the group; ``stats``: calibration :class:`RowStats`;
    ``grad``: optional ``dL/dW`` on the calibration data (``taylor``); ``module``, ``param``:
    where the matrix lives; ``out_rows``: the rows of that parameter it covers (conv groups).
    """

    weight: Tensor
    bias: Tensor | None
    cols: Tensor
    units: Tensor
    stats: RowStats
    grad: Tensor | None = None
    module: str = ""
    param: str = "weight"
    out_rows: slice | None = None

    def __post_init__(self) -> None:
        n = self.weight.shape[1]
        if self.stats.gram.shape != (n + 1, n + 1):
            raise UsageError(f"consumer {self.module!r}: {n} input columns but statistics of "
                             f"{self.stats.gram.shape[0] - 1}; build both from the same layer")
        if self.grad is not None and self.grad.shape != self.weight.shape:
            raise UsageError(f"consumer {self.module!r}: grad must have the weight's shape "
                             f"{tuple(self.weight.shape)}, got {tuple(self.grad.shape)}")


def _unit_blocks(n_blocks: int, b: int, unit_ids: Sequence[int] | Tensor | None
                 ) -> tuple[Tensor, Tensor]:
    """``cols`` of the units (ids >= 0) and their ids: the blocks of one id form one unit's
    block (a unit spanning several channels or features, e.g. a whole conv group)."""
    ids = torch.arange(n_blocks) if unit_ids is None else torch.as_tensor(unit_ids).long()
    if ids.shape != (n_blocks,):
        raise UsageError(f"unit_ids must give one id (or -1: not a unit) per block, "
                         f"{n_blocks} blocks, got shape {tuple(ids.shape)}")
    sel = torch.nonzero(ids >= 0).flatten()
    if not len(sel):
        raise UsageError("unit_ids marks no block as a unit")
    uid, counts = torch.unique(ids[sel], return_counts=True)
    if len(set(counts.tolist())) != 1:
        raise UsageError("the units span different numbers of blocks of this consumer; a "
                         "block refit needs equal blocks per unit")
    idx = sel[torch.argsort(ids[sel], stable=True)].view(len(uid), -1)  # (U, blocks per unit)
    cols = (idx[:, :, None] * b + torch.arange(b)).reshape(len(uid), -1)
    return cols, uid


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float64)


def linear_consumer(layer: nn.Linear, x: Tensor, *, unit_ids=None, grad: Tensor | None = None,
                    module: str = "") -> BlockConsumer:
    """A Linear reading one unit per input column; ``x``: its inputs ``(..., in_features)``.

    ``unit_ids``: per input column its unit id, ``-1`` for columns that are no unit of the
    group (kept, still refitted); default ``arange(in_features)``.
    """
    if x.shape[-1] != layer.in_features:
        raise UsageError(f"{module or 'the Linear'} reads {layer.in_features} features, the "
                         f"activations have {x.shape[-1]}")
    cols, units = _unit_blocks(layer.in_features, 1, unit_ids)
    return BlockConsumer(_f64(layer.weight), _f64(layer.bias), cols, units, row_stats(x),
                         _f64(grad), module)


def heads_consumer(layer: nn.Linear, x: Tensor, n_heads: int, *, unit_ids=None,
                   grad: Tensor | None = None, module: str = "") -> BlockConsumer:
    """An attention output projection reading ``n_heads`` heads of ``head_dim`` columns each
    (head ``h``: columns ``h*head_dim:(h+1)*head_dim``); ``x``: the concatenated head outputs
    ``(..., n_heads*head_dim)``."""
    if n_heads < 1 or layer.in_features % n_heads:
        raise UsageError(f"{layer.in_features} input features do not split into {n_heads} heads")
    if x.shape[-1] != layer.in_features:
        raise UsageError(f"{module or 'the projection'} reads {layer.in_features} features, "
                         f"the activations have {x.shape[-1]}")
    cols, units = _unit_blocks(n_heads, layer.in_features // n_heads, unit_ids)
    return BlockConsumer(_f64(layer.weight), _f64(layer.bias), cols, units, row_stats(x),
                         _f64(grad), module)


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    if conv.padding_mode != "zeros":
        raise UsageError(f"padding_mode={conv.padding_mode!r} is not supported (im2col rows "
                         "assume zero padding)")
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":
        if conv.stride != (1, 1):
            raise UsageError("padding='same' with a stride is not supported")
        pads = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        if any(p % 2 for p in pads):
            raise UsageError("padding='same' with an even effective kernel is asymmetric; "
                             "pad explicitly")
        return pads[0] // 2, pads[1] // 2
    return tuple(conv.padding)  # type: ignore[return-value]


def conv_rows(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """The im2col rows ``(B*L, C_in*kh*kw)`` that ``conv.weight.reshape(C_out, -1)`` reads (all
    groups; group ``g`` reads the column slice of its input channels)."""
    if x.ndim != 4 or x.shape[1] != conv.in_channels:
        raise UsageError(f"a Conv2d with {conv.in_channels} input channels needs inputs "
                         f"(B, {conv.in_channels}, H, W), got {tuple(x.shape)}")
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=_conv_padding(conv),
                    stride=conv.stride)  # (B, C*kh*kw, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def conv_consumers(conv: nn.Conv2d, x: Tensor, *, unit_ids=None, grad: Tensor | None = None,
                   module: str = "", batch: int = 64) -> list[BlockConsumer]:
    """One consumer per conv group, each reading its input channels as ``kh*kw``-column
    blocks of im2col rows (``x``: the convolution's input ``(B, C_in, H, W)``, in batches of
    ``batch`` images). ``unit_ids``: per input channel its unit id (-1: no unit)."""
    gs, kk = conv.groups, conv.kernel_size[0] * conv.kernel_size[1]
    cin, cout = conv.in_channels // gs, conv.out_channels // gs
    ids = torch.arange(conv.in_channels) if unit_ids is None else torch.as_tensor(unit_ids)
    if ids.shape != (conv.in_channels,):
        raise UsageError(f"unit_ids must give one id per input channel ({conv.in_channels}), "
                         f"got shape {tuple(ids.shape)}")
    accs = [_Acc(cin * kk, x.device) for _ in range(gs)]
    for i in range(0, len(x), batch):
        rows = conv_rows(conv, x[i:i + batch])
        for g, acc in enumerate(accs):
            acc.add(rows[:, g * cin * kk:(g + 1) * cin * kk])
    digest = _digest(x)
    w = _f64(conv.weight).reshape(conv.out_channels, -1)
    gr = None if grad is None else _f64(grad).reshape(conv.out_channels, -1)
    b = _f64(conv.bias)
    out = []
    for g, acc in enumerate(accs):
        gids = ids[g * cin:(g + 1) * cin]
        if not bool((gids >= 0).any()):
            continue
        cols, units = _unit_blocks(cin, kk, gids)
        rows = slice(g * cout, (g + 1) * cout)
        out.append(BlockConsumer(w[rows], None if b is None else b[rows], cols, units,
                                 acc.done(digest), None if gr is None else gr[rows], module,
                                 out_rows=rows))
    return out
