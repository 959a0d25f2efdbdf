"""Where a layer's neurons go: the consumer ``nn.Linear`` of a layer, found by the units core.

A width frontier removes output neurons of an ``nn.Linear`` (the *layer*) and repairs the one
``nn.Linear`` that reads them (the *consumer*). That is exact only when every operation between
the two acts on each neuron separately (ReLU and friends, dropout in eval mode): then neuron
``j`` of the layer is column ``j`` of the consumer's input. :func:`trace_layer` reads this off
the layer's group of :func:`widthlab.units.build_graph` (one forward on example inputs): the
group must hold the layer's rows and the consumer's columns and nothing else (no residual
stream, second consumer, norm or reshape), and refuses, naming the problem, otherwise.

It also gives the *suffix*: the network after the consumer, as a function of the consumer's
output only (the model run with the consumer's output replaced), checked on the example, so
the frontier evaluates every cut from cached activations.

Example::

    path = trace_layer(model, "0", x[:2])    # nn.Sequential(Linear, ReLU, Linear)
    path.consumer, path.ops                  # "2", ("1 (ReLU)",)
    a = consumer_inputs(model, path, x)      # (N, H) what the consumer reads
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from widthlab.errors import UsageError
from widthlab.units import build_graph

__all__ = ["LayerPath", "consumer_inputs", "trace_layer"]


@dataclass(frozen=True)
class LayerPath:
    """A layer, its consumer and what lies between and after them.

    Attributes
    ----------
    layer, consumer : str
        Module names (as in ``model.named_modules()``) of the two ``nn.Linear``.
    ops : tuple of str
        The operations between them, in order (``"name (Module)"`` for a module, the ATen
        op's name for a function called in a forward).
    suffix : nn.Module or None
        The rest of the network as a function of the consumer's output (None: the consumer's
        output is the model's output).
    after : tuple of (str, nn.Module or None)
        The operations after the consumer: leaf modules (name, module) and functions
        (ATen name, None), in order.
    example : Tensor or None
        One input sample of the trace (``Frontier.cut`` traces its copy on it).
    """

    layer: str
    consumer: str
    ops: tuple[str, ...]
    suffix: nn.Module | None
    after: tuple[tuple[str, nn.Module | None], ...] = ()
    example: Tensor | None = None  # one input sample the path was traced on


class _Suffix(nn.Module):
    """The model after ``consumer``: run on a constant input with the consumer's output
    replaced by ``z``; the layers before it compute nothing that reaches the result."""

    def __init__(self, model: nn.Module, consumer: str, example: Tensor):
        super().__init__()
        self.model, self.consumer = model, consumer
        self.register_buffer("example", torch.zeros_like(example[:1]))

    def forward(self, z: Tensor) -> Tensor:
        return _replaced(self.model, self.consumer,
                         self.example.expand(len(z), *self.example.shape[1:]), z)


def _replaced(model: nn.Module, consumer: str, x: Tensor, z: Tensor):
    """``model(x)`` with the output of ``consumer`` replaced by ``z``."""
    h = model.get_submodule(consumer).register_forward_hook(lambda _m, _a, _o: z)
    try:
        return model(x)
    finally:
        h.remove()


def _reads_only(suffix: _Suffix, model: nn.Module, consumer: str, example: Tensor, z: Tensor,
                out, probes: int = 4) -> bool:
    """Whether the network after ``consumer`` reads nothing but its output: the model on
    ``example`` equals the suffix (run on a constant input) at the consumer's output ``z`` and
    at ``probes`` seeded normal draws in its place (a skip the example hides, such as one
    multiplied by a ReLU that is zero at ``z``, shows at other consumer outputs)."""
    gen = torch.Generator().manual_seed(0)
    for i in range(probes + 1):
        zz = z if i == 0 else torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device)
        real = out if i == 0 else _replaced(model, consumer, example, zz)
        again = suffix(zz)
        if not (isinstance(real, Tensor) and again.shape == real.shape
                and torch.allclose(again, real, rtol=0, atol=0, equal_nan=True)):
            return False  # bitwise the same values, NaN where the other has NaN (log of a probe)
    return True


class _Events(TorchDispatchMode):
    """One forward: leaf module calls and functions called by container code, in order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.events: list[tuple[str, nn.Module | None]] = []
        self.stack: list[nn.Module] = []
        self.handles = []
        for name, m in model.named_modules():
            leaf = not any(True for _ in m.children())
            self.handles.append(m.register_forward_pre_hook(self._pre(name, m, leaf)))
            self.handles.append(m.register_forward_hook(self._post, always_call=True))

    def _pre(self, name, m, leaf):
        def pre(_m, _a):
            if leaf and not self._in_leaf():
                self.events.append((name, m))
            self.stack.append(m)
        return pre

    def _post(self, _m, _a, _o):
        self.stack.pop()

    def _in_leaf(self) -> bool:
        return bool(self.stack) and not any(True for _ in self.stack[-1].children())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self._in_leaf():
            self.events.append((func.overloadpacket.__name__, None))
        return func(*args, **(kwargs or {}))

    def remove(self):
        for h in self.handles:
            h.remove()


def _run(model: nn.Module, layer: str, consumer: str, x: Tensor):
    """The events between the layer and the consumer and after it, whether the model's
    output is the consumer's output, the consumer's output and the model's."""
    mods = dict(model.named_modules())
    got: dict[str, object] = {}
    ev = _Events(model)
    h = mods[consumer].register_forward_hook(lambda _m, _a, o: got.setdefault("z", o))
    try:
        with torch.no_grad(), ev:
            out = model(x)
    finally:
        ev.remove()
        h.remove()
    names = [n for n, m in ev.events if m is not None]
    i, j = names.index(layer), names.index(consumer)
    pos = [k for k, (_, m) in enumerate(ev.events) if m is not None]
    mid = ev.events[pos[i] + 1:pos[j]]
    ops = tuple(n if m is None else f"{n} ({type(m).__name__})" for n, m in mid)
    return ops, tuple(ev.events[pos[j] + 1:]), out is got.get("z"), got.get("z"), out


def _group_of(graph, layer: str):
    for g in graph.groups:
        if any(s.module == layer and s.name == "weight" and s.dim == 0 for s in g.slices):
            return g
    return None


def _consumer(model: nn.Module, graph, layer: str) -> str:
    """The one consumer Linear of ``layer``'s group, or a refusal naming what is there."""
    mods = dict(model.named_modules())
    g = _group_of(graph, layer)
    if g is None:
        raise UsageError(f"the output of layer {layer!r} reaches the model's output (or a "
                         "fixed size); the frontier needs layer -> element-wise ops -> one "
                         "nn.Linear")
    if g.kind == "stream":
        raise UsageError(f"the output of layer {layer!r} is on a residual stream (an add "
                         "joins it with other layers); the frontier needs layer -> element-wise"
                         " ops -> one nn.Linear; use model_frontier for streams")
    if g.mixers:
        what = ", ".join(f"{m} ({type(mods[m.split(' in ')[-1]]).__name__})"
                         if m.split(" in ")[-1] in mods else m for m in g.mixers)
        raise UsageError(f"the output of layer {layer!r} reaches {what}, which mixes its "
                         "neurons; the frontier needs layer -> element-wise ops -> one "
                         "nn.Linear")
    readers = sorted({s.module for s in g.slices if s.dim == 1})
    others = sorted({s.module for s in g.slices if s.dim != 1 and s.module != layer})
    if len(readers) != 1:
        raise UsageError(f"the output of layer {layer!r} is read by {len(readers)} layers "
                         f"({', '.join(readers) or 'none'}): several consumers; the frontier "
                         "needs exactly one consumer nn.Linear")
    cons = readers[0]
    if others or not isinstance(mods[cons], nn.Linear):
        what = ", ".join(f"{n} ({type(mods[n]).__name__})" for n in others or [cons])
        raise UsageError(f"the output of layer {layer!r} reaches {what}, which is not an "
                         "element-wise operation before one nn.Linear (a norm with weights, a "
                         "conv, a reshape); the frontier needs layer -> element-wise ops -> "
                         "one nn.Linear")
    units = next(s.units for s in g.slices if s.module == cons and s.dim == 1)
    if not torch.equal(units, torch.arange(mods[layer].out_features)):
        raise UsageError(f"consumer {cons!r} reads the neurons of layer {layer!r} through a "
                         "reshape or a reordering; the frontier needs them column for column")
    return cons


def trace_layer(model: nn.Module, layer: str, example: Tensor) -> LayerPath:
    """Find the consumer of ``layer`` in ``model`` and the network after it.

    Parameters
    ----------
    model : nn.Module
        Any model whose forward :func:`widthlab.units.build_graph` can follow; dropout counts
        as element-wise (eval mode).
    layer : str
        A name from ``model.named_modules()`` of an ``nn.Linear``.
    example : Tensor
        Inputs of one forward (a batch of one or two samples).

    Returns
    -------
    LayerPath

    Raises
    ------
    UsageError
        If ``layer`` is not an ``nn.Linear`` of the model, is called more than once, or its
        output feeds anything but one ``nn.Linear`` through element-wise operations, or the
        network after the consumer reads other values than the consumer's output.
    """
    mods = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in mods:
        linears = [n for n, m in mods.items() if isinstance(m, nn.Linear)]
        raise UsageError(f"no module {layer!r} in {type(model).__name__}; nn.Linear layers: "
                         f"{', '.join(linears) or 'none'}")
    if not isinstance(mods[layer], nn.Linear):
        raise UsageError(f"layer {layer!r} is a {type(mods[layer]).__name__}; the frontier "
                         "removes output neurons of an nn.Linear")
    work = copy.deepcopy(model).eval()
    calls: list[int] = []
    h = work.get_submodule(layer).register_forward_hook(lambda *_: calls.append(1))
    try:
        graph = build_graph(work, example)
    finally:
        h.remove()
    if len(calls) != 1:
        raise UsageError(f"layer {layer!r} is called {len(calls)} times in the forward pass; "
                         "the frontier needs a layer used exactly once")
    cons = _consumer(work, graph, layer)
    ops, after, is_out, z, out = _run(work, layer, cons, example)
    if is_out:
        return LayerPath(layer, cons, ops, None, after, example[:1].detach().clone())
    suffix = _Suffix(work, cons, example).eval()
    with torch.no_grad():
        alone = _reads_only(suffix, work, cons, example, z, out)
    if not alone:
        raise UsageError(f"after consumer {cons!r} the model reads other values than the "
                         "consumer's output (a skip connection, its input); the frontier "
                         "needs a network that continues from the consumer's output alone")
    return LayerPath(layer, cons, ops, suffix, after, example[:1].detach().clone())


class _Stop(Exception):
    """Raised by the capture hook: nothing after the consumer's input is needed."""


@torch.no_grad()
def consumer_inputs(model: nn.Module, path: LayerPath, x: Tensor, *, batch: int = 4096,
                    dtype: torch.dtype = torch.float64, neuron_major: bool = False) -> Tensor:
    """What the consumer reads, ``(N, H)`` in ``dtype``, for the inputs ``x`` (eval mode).

    The forward pass stops at the consumer (a pre-hook captures its input and aborts), so the
    layers after it cost nothing. ``model`` is used as given (its dtype and device); ``x`` is
    moved to the model's device in batches of ``batch`` samples. ``neuron_major=True`` returns
    the transpose ``(H, N)`` (contiguous), written batch by batch with no ``(N, H)`` copy.
    """
    cons = dict(model.named_modules())[path.consumer]
    p = next(model.parameters())
    got: list[Tensor] = []

    def hook(_mod, args):
        got.append(args[0].detach())
        raise _Stop

    was_training = model.training
    model.eval()
    handle = cons.register_forward_pre_hook(hook)
    out: list[Tensor] = []
    buf: Tensor | None = None
    try:
        for i in range(0, len(x), batch):
            try:
                model(x[i:i + batch].to(device=p.device, dtype=p.dtype))
            except _Stop:
                pass
            if not got:  # the forward returned without calling the consumer
                raise UsageError(f"the forward on inputs {i}..{i + batch} never reached "
                                 f"consumer {path.consumer!r} (a branch of the model's code "
                                 "skips it); give calibration inputs that take that path")
            a = got.pop()
            if a.dim() != 2:
                raise UsageError(f"consumer {path.consumer!r} reads a tensor of shape "
                                 f"{tuple(a.shape)}; the frontier needs (batch, features)")
            if not neuron_major:
                out.append(a.to(dtype))
                continue
            if buf is None:
                buf = a.new_empty(a.shape[1], len(x), dtype=dtype)
            # transposed in the model's dtype (a blocked copy), then cast row by row: 2-3x
            # faster than a strided write of the cast
            buf[:, i:i + len(a)] = a.t().contiguous()
    finally:
        handle.remove()
        model.train(was_training)
    if neuron_major:
        return buf if buf is not None else torch.empty(0, 0, dtype=dtype, device=p.device)
    return torch.cat(out)
