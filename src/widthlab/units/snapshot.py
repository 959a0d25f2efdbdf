"""Put a model back as it was after a removal that failed its check, and the check itself.

:class:`Snapshot` keeps what :func:`~widthlab.units.remove_units` may change: the cut tensors'
data, gradients and optimizer state (the cut makes new tensors, so the old ones stay intact),
buffers, every module's plain attributes, a Hugging Face config's fields and the groups'
numbering; :func:`all_or_nothing` wraps several removals in one. :func:`forward_error` runs the
graph's example inputs through the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def _set_data(t: Tensor, data: Tensor) -> None:
    # the same dtype detour as the cut: autograd's cached accumulator must forget the shape
    t.data = torch.empty(0, dtype=torch.float64 if data.dtype != torch.float64
                         else torch.float32, device=data.device)
    t.data = data


class Snapshot:
    """What a removal may change, kept to be restored."""

    def __init__(self, model: nn.Module, tensors: list[Tensor], optimizer, groups: list):
        self.model, self.optimizer = model, optimizer
        self.params = [(t, t.data, t.grad, dict(optimizer.state[t])
                        if optimizer is not None and t in optimizer.state else None)
                       for t in {id(t): t for t in tensors}.values()
                       if isinstance(t, nn.Parameter)]
        self.buffers = [(m, dict(m._buffers)) for m in model.modules()]
        self.registered = [(m, dict(m._parameters)) for m in model.modules()]  # added biases
        self.attrs = [(m, {k: v for k, v in vars(m).items() if not k.startswith("_")})
                      for m in model.modules()]
        config = getattr(model, "config", None)
        self.config = (config, dict(vars(config))) if hasattr(config, "__dict__") else None
        self.groups = [(g, g.size, [(s, s.units) for s in g.slices + g.attrs])
                       for g in groups]

    @torch.no_grad()
    def restore(self) -> None:
        for t, data, grad, state in self.params:
            t.grad = None
            _set_data(t, data)
            t.grad = grad
            if state is not None:
                self.optimizer.state[t] = state
        for m, buffers in self.buffers:
            m._buffers.clear()
            m._buffers.update(buffers)
        for m, params in self.registered:
            m._parameters.clear()
            m._parameters.update(params)
        for m, attrs in self.attrs:
            vars(m).update(attrs)
        if self.config is not None:
            vars(self.config[0]).update(self.config[1])
        for g, size, slices in self.groups:
            g.size = size
            for s, units in slices:
                s.units = units


@contextmanager
def all_or_nothing(model: nn.Module, graph=None, optimizer=None) -> Iterator[None]:
    """Run a block of in-place cuts as one transaction: if it raises, ``model`` (its
    parameters, buffers, attributes; tensors the block replaced, not ones it wrote into in
    place), ``optimizer``'s state and ``graph``'s numbering are put back as they were."""
    saved = Snapshot(model, list(model.parameters()), optimizer,
                     list(graph.groups) if graph is not None else [])
    try:
        yield
    except BaseException:
        saved.restore()
        raise


def forward_error(model: nn.Module, graph) -> Exception | None:
    """The exception the graph's example forward raises on ``model`` (eval mode, no
    gradient, RNG untouched), or None when it runs (or the graph keeps no example)."""
    example = getattr(graph, "example", None)
    if example is None:
        return None
    args, kwargs = example
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure of the user's forward is reported
        return e
    finally:
        for m, training in modes:
            m.training = training
    return None
