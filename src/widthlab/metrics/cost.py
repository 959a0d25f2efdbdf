"""The real cost of a network: parameters, multiply-adds of a forward, CPU latency.

- :func:`count_params`: the model's parameters (shared tensors once);
- :func:`count_macs`: multiply-adds **per sample** of one forward of an example batch,
  counted at the tensor operations themselves (a :class:`torch.overrides.TorchFunctionMode`
  sees every call, whether it comes from an ``nn.Module`` or from functional code):
  convolutions (any dimension, ``groups``, ``stride``, ``dilation``, transposed), linear
  layers, and matrix products (``matmul`` / ``@``, ``mm``, ``bmm``, ``addmm``, ``baddbmm``,
  ``scaled_dot_product_attention``: attention's ``q k^T`` and ``p v``). Elementwise work
  (BatchNorm, activations, the residual adds, pooling, softmax) is not counted, the
  convention of the papers' "FLOPs" tables (one multiply-add = one MAC);
- :func:`measure_latency`: median wall seconds of one forward, in ``eval`` mode under
  ``torch.no_grad``, on a chosen number of threads (restored afterwards), optionally in
  ``channels_last`` memory format; :func:`measure_latencies`: several models timed in turn
  (their ratios robust to a change of the machine's load).

Example::

    from widthlab.metrics.cost import count_macs, count_params, measure_latency
    x = torch.randn(64, 1, 28, 28)
    count_macs(model, x)                   # 31,021,952 for ResNet-20 (== ResNetConfig().macs())
    count_params(model)                    # 272,186
    measure_latency(model, x, threads=1)   # seconds per batch of 64, median of 30 runs
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from widthlab.errors import UsageError

__all__ = ["as_args", "count_macs", "count_params", "measure_latencies", "measure_latency"]


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (a tensor shared by several modules counts once)."""
    return sum(p.numel() for p in model.parameters())


def _conv(args, kwargs, out: Tensor) -> int:
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    # weight (out, in / groups, *k): every output element sums in/groups * prod(k) products
    return out.numel() * math.prod(weight.shape[1:])


def _conv_t(args, kwargs, out: Tensor) -> int:
    x = args[0] if args else kwargs["input"]
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    # weight (in, out / groups, *k): every input element is spread over out/groups * prod(k)
    return x.numel() * math.prod(weight.shape[1:])


def _linear(args, kwargs, out: Tensor) -> int:
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    return out.numel() * weight.shape[-1]


def _matmul(args, kwargs, out: Tensor) -> int:
    a = args[0] if args else kwargs["input"]
    return out.numel() * (a.shape[-1] if a.dim() else 1)


def _addmm(args, kwargs, out: Tensor) -> int:  # addmm(bias, a, b), baddbmm(bias, a, b)
    a = args[1] if len(args) > 1 else kwargs["mat1" if "mat1" in kwargs else "batch1"]
    return out.numel() * a.shape[-1]


def _sdpa(args, kwargs, out: Tensor) -> int:
    q = args[0] if args else kwargs["query"]
    k = args[1] if len(args) > 1 else kwargs["key"]
    # q k^T: (..., L, S) scores of E products each; p v: (..., L, Ev) outputs of S products
    scores = out.numel() // out.shape[-1] * k.shape[-2]
    return scores * q.shape[-1] + out.numel() * k.shape[-2]


_COUNTERS: dict[Callable, Callable] = {
    F.conv1d: _conv, F.conv2d: _conv, F.conv3d: _conv,
    F.conv_transpose1d: _conv_t, F.conv_transpose2d: _conv_t, F.conv_transpose3d: _conv_t,
    F.linear: _linear,
    torch.matmul: _matmul, Tensor.matmul: _matmul, Tensor.__matmul__: _matmul,
    torch.mm: _matmul, Tensor.mm: _matmul, torch.bmm: _matmul, Tensor.bmm: _matmul,
    torch.addmm: _addmm, Tensor.addmm: _addmm, torch.baddbmm: _addmm, Tensor.baddbmm: _addmm,
    F.scaled_dot_product_attention: _sdpa,
}


class _MacCounter(TorchFunctionMode):
    """Adds up the multiply-adds of every counted call made while it is active (calls
    made inside a counted call, e.g. by its own implementation, are not seen twice)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = _COUNTERS.get(func)
        if rule is not None and isinstance(out, Tensor):
            self.total += int(rule(args, kwargs, out))
        return out


def as_args(example) -> tuple:
    """The forward's arguments from ``example``: a batch tensor or a tuple whose first item is
    one (its first dimension is the batch)."""
    args = example if isinstance(example, tuple) else (example,)
    if not args or not isinstance(args[0], Tensor) or args[0].dim() == 0:
        raise UsageError("example must be a batch tensor (N, ...) or a tuple whose first item "
                         "is one; e.g. torch.randn(1, 1, 28, 28)")
    return args


def count_macs(model: nn.Module, example) -> int:
    """Multiply-adds **per sample** of one forward of ``model`` on ``example``.

    Parameters
    ----------
    model : nn.Module
        Any model; run once in ``eval`` mode under ``torch.no_grad`` (its mode is put back).
    example : Tensor or tuple
        A batch ``(N, ...)`` (or the model's positional inputs, the first one a batch): the
        total over the batch is divided by ``N`` (integer division; exact when every sample
        costs the same, as in a CNN).

    Returns
    -------
    int
        Multiply-adds of convolutions (``groups``, ``stride``, ``dilation`` and transposed
        convolutions included), linear layers and matrix products (attention's ``q k^T`` and
        ``p v``, also through ``scaled_dot_product_attention``). Elementwise operations
        (BatchNorm, activations, adds, pooling, softmax) are not counted. For
        :class:`widthlab.nn.resnet.ResNet` it equals ``model.current_config().macs()``.
    """
    args = as_args(example)
    was = model.training
    counter = _MacCounter()
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(*args)
    finally:
        model.train(was)
    return counter.total // args[0].shape[0]


def _channels_last(args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last)
                 if isinstance(a, Tensor) and a.dim() == 4 else a for a in args)


def measure_latencies(models: Sequence[nn.Module], example, *, threads: int | None = 1,
                      repeats: int = 30, warmup: int = 5,
                      channels_last: bool = False) -> list[float]:
    """Median wall-clock seconds of one forward of each of ``models`` on ``example``, the
    models timed in turn (one forward of each per round), so that a change of the machine's
    load during the measurement falls on every model alike and their ratios hold.

    Parameters
    ----------
    models : sequence of nn.Module
        Each run in ``eval`` mode under ``torch.no_grad`` (its mode is put back).
    example : Tensor or tuple
        The batch (or positional inputs) timed, e.g. ``torch.randn(64, 1, 28, 28)``.
    threads : int or None
        ``torch.set_num_threads`` during the measurement (the previous value is restored,
        also on an error); None keeps the current setting.
    repeats, warmup : int
        Timed rounds (the median is returned) after ``warmup`` untimed ones.
    channels_last : bool
        Time copies of the models and 4-D inputs in ``torch.channels_last`` memory format
        (NHWC, the layout oneDNN's CPU convolutions run fastest in; the models passed are
        not changed).

    Returns
    -------
    list of float
        Seconds per forward of the batch, one per model (divide by the batch size for
        per-sample time).
    """
    args = as_args(example)
    if repeats < 1 or warmup < 0:
        raise UsageError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if threads is not None and threads < 1:
        raise UsageError(f"threads must be >= 1 (or None for the current setting), "
                         f"got {threads}")
    models = list(models)
    if channels_last:
        models = [copy.deepcopy(m).to(memory_format=torch.channels_last) for m in models]
        args = _channels_last(args)
    before, was = torch.get_num_threads(), [m.training for m in models]
    times: list[list[float]] = [[] for _ in models]
    # a GPU forward returns before its kernels end: wait for them inside each timing
    sync = torch.cuda.synchronize if any(isinstance(a, Tensor) and a.is_cuda
                                         for a in args) else (lambda: None)
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for m in models:
            m.eval()
        with torch.no_grad():
            for i in range(warmup + repeats):
                for m, t in zip(models, times, strict=True):
                    sync()
                    start = time.perf_counter()
                    m(*args)
                    sync()
                    if i >= warmup:
                        t.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
        for m, w in zip(models, was, strict=True):
            m.train(w)
    return [statistics.median(t) for t in times]


def measure_latency(model: nn.Module, example, *, threads: int | None = 1, repeats: int = 30,
                    warmup: int = 5, channels_last: bool = False) -> float:
    """Median wall-clock seconds of one forward of ``model`` on ``example`` (the whole batch):
    :func:`measure_latencies` of one model (the parameters are its)."""
    return measure_latencies([model], example, threads=threads, repeats=repeats,
                             warmup=warmup, channels_last=channels_last)[0]
