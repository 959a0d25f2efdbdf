"""Cached activations and the evaluation of cut consumers, shared by every frontier method.

:func:`prepare` finds the layer's consumer (:func:`~widthlab.frontier.path.trace_layer`, by
the units core on two calibration samples), runs the model once on the calibration and the
evaluation data (up to the consumer's input, in the model's float32 or in float64; kept as
float64) and keeps the consumer's weights;
:func:`score` then gives the loss and accuracy of any kept set with any consumer weights, in
sample blocks, applying the rest of the network (the suffix) to the corrected consumer output.

Example::

    prep = prepare(model, "0", (xc, yc), (xe, ye))
    loss, acc = score(prep, prep.at["eval"][kept], prep.y["eval"], w, b)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.frontier._threads import threads
from widthlab.frontier.path import LayerPath, consumer_inputs, trace_layer

__all__ = ["Prepared", "prepare", "score", "score_widths"]


@dataclass
class Prepared:
    """What every method needs: activations ``at[split]`` (H, N, neuron-major so that a kept
    set is a block of contiguous rows), labels ``y[split]``, the
    consumer's weight ``w0`` (C, H) and bias ``b0`` (C,), and the suffix, all float64 on
    ``device``; ``model64`` is a float64 copy of the model there."""

    model: nn.Module
    model64: nn.Module
    path: LayerPath
    at: dict[str, Tensor]
    y: dict[str, Tensor]
    w0: Tensor
    b0: Tensor
    suffix: nn.Module | None
    device: torch.device
    chunk: int

    @property
    def width(self) -> int:
        return int(self.w0.shape[1])


def _pair(name: str, data) -> tuple[Tensor, Tensor]:
    if not (isinstance(data, tuple | list) and len(data) == 2 and
            all(isinstance(t, Tensor) for t in data)):
        raise UsageError(f"{name} must be a pair of tensors (x, y), e.g. a Split's (x, y)")
    x, y = data
    if y.dim() != 1 or len(x) != len(y) or len(y) == 0:
        raise UsageError(f"{name}: x must hold one sample per label and y must be a non-empty "
                         f"1-D label tensor; got x {tuple(x.shape)}, y {tuple(y.shape)}")
    if x.is_floating_point() or x.is_complex():
        bad = ~torch.isfinite(x.reshape(len(x), -1)).all(1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            kind = "NaN" if bool(torch.isnan(x[i]).any()) else "inf"
            raise UsageError(f"{name}: x has {kind} in sample {i} ({int(bad.sum())} "
                             "sample(s) with non-finite values); drop or impute them first")
    if y.is_floating_point():
        if not bool((torch.isfinite(y) & (y == y.round())).all()):
            raise UsageError(f"{name}: y must hold integer class labels, got non-integer "
                             f"values ({y.dtype}); pass y.long() of the classes")
    elif y.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
                         torch.bool):
        raise UsageError(f"{name}: y must hold integer class labels, got {y.dtype}")
    return x, y.long()


def _inputs(model: nn.Module, path: LayerPath | str, name: str, x: Tensor, batch: int
            ) -> Tensor | LayerPath:
    """:func:`consumer_inputs` (or, ``path`` a layer name, :func:`trace_layer` on two
    samples), with a model that cannot read ``x`` named in one line.

    Only the errors that torch raises for a tensor of the wrong shape, size or dtype
    (``RuntimeError``, ``ValueError``, ``IndexError``) are read as ``x`` not fitting; anything
    else raised inside the model's forward (a ``TypeError``, an ``AttributeError``: a bug in
    its code) propagates unchanged."""
    try:
        if isinstance(path, str):
            p = next(model.parameters(), None)
            xs = x[:2] if p is None else x[:2].to(p.device)
            xs = xs.to(p.dtype) if p is not None and xs.is_floating_point() else xs
            return trace_layer(model, path, xs)
        return consumer_inputs(model, path, x, batch=batch, neuron_major=True)
    except (RuntimeError, ValueError, IndexError) as exc:
        if isinstance(exc, UsageError):
            raise
        first = next((m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)),
                     None)
        reads = "" if first is None else (
            f" (its first layer reads {first.in_features} features)"
            if isinstance(first, nn.Linear) else
            f" (its first layer reads {first.in_channels} channels)")
        why = " ".join(str(exc).split())[:160]
        raise UsageError(f"{name}: the model cannot run on x of shape {tuple(x.shape)} ({why});"
                         f" give the inputs it was trained on{reads}") from None


def _forward_model(model: nn.Module, model64: nn.Module, dev: torch.device) -> nn.Module:
    """The model that computes the consumer's inputs: a float32 model in float32 (its own
    numbers; cast to float64 afterwards, for the Gram matrix and the refits), any other in
    float64 (``model64``)."""
    p = next(model.parameters(), None)
    if p is None or p.dtype != torch.float32 or any(
            t.dtype != torch.float32 for t in (*model.parameters(), *model.buffers())
            if t.is_floating_point()):
        return model64
    return copy.deepcopy(model).to(dev).eval()  # the user's modes and hooks untouched


def _device(model: nn.Module, device) -> torch.device:
    if device is None or device == "auto":
        p = next(model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")
    return torch.device(device)


@torch.no_grad()
def prepare(model: nn.Module, layer: str, calib, eval, *, device=None,
            chunk: int = 2 ** 22) -> Prepared:
    """Trace ``layer``, cache the consumer's inputs on ``calib`` and ``eval`` (float64; a
    float32 model computes them in float32, its own numbers, then they are cast).

    ``device`` defaults to the model's; ``chunk`` bounds the values of one temporary block.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    mods = dict(model.named_modules())
    if isinstance(layer, str) and isinstance(mods.get(layer), nn.Linear):
        xs = {"calib": _pair("calib", calib), "eval": _pair("eval", eval)}
        path = _inputs(model, layer, "calib", xs["calib"][0], 2)
    else:
        path = trace_layer(model, layer, None)  # refuses, naming the model's Linear layers
    dev = _device(model, device)
    model64 = copy.deepcopy(model).to(device=dev, dtype=torch.float64).eval()
    h = dict(model.named_modules())[layer].out_features
    batch = max(1, chunk // max(h, 1))
    fwd = _forward_model(model, model64, dev)
    at = {s: _inputs(fwd, path, s, x, batch) for s, (x, _) in xs.items()}
    y = {s: yy.to(dev) for s, (_, yy) in xs.items()}
    cons = dict(model64.named_modules())[path.consumer]
    b0 = cons.bias if cons.bias is not None else torch.zeros(cons.out_features, device=dev,
                                                             dtype=torch.float64)
    suffix = None if path.suffix is None else \
        copy.deepcopy(path.suffix).to(device=dev, dtype=torch.float64).eval()
    prep = Prepared(model, model64, path, at, y, cons.weight.detach().clone(),
                    b0.detach().clone(), suffix, dev, chunk)
    _check_labels(prep)
    return prep


def _check_labels(prep: Prepared) -> None:
    for split, y in prep.y.items():
        logits = logits_of(prep, prep.at[split], prep.w0, prep.b0, slice(0, 2))
        if logits.dim() != 2:
            raise UsageError(f"the model returns shape {tuple(logits.shape)}; the frontier needs "
                             "logits of shape (batch, classes)")
        c = logits.shape[1]
        if int(y.min()) < 0 or int(y.max()) >= c:
            raise UsageError(f"{split} labels must be in [0, {c}) (the model's classes), got "
                             f"[{int(y.min())}, {int(y.max())}]")


def logits_of(prep: Prepared, at: Tensor, w: Tensor, b: Tensor, rows: slice) -> Tensor:
    """The model's logits for the samples ``rows`` when the consumer reads the activations
    ``at`` (k, N) (the kept neurons' rows, in the order of ``w``'s columns) with weights ``w``
    (C, k) and bias ``b`` (C,)."""
    z = torch.addmm(b[:, None], w, at[:, rows]).t().contiguous()  # (n, C)
    return z if prep.suffix is None else prep.suffix(z)


def _ce(prep: Prepared, zt: Tensor, y: Tensor) -> tuple[float, int]:
    """Summed cross-entropy and hits of the consumer outputs ``zt`` (C, n) (classes first)."""
    if prep.suffix is not None:
        logits = prep.suffix(zt.t().contiguous())
        return (float(F.cross_entropy(logits, y, reduction="sum")),
                int((logits.argmax(1) == y).sum()))
    # logits classes-first (C, n): reductions over contiguous rows
    with threads(1 if zt.device.type == "cpu" else torch.get_num_threads()):
        m, top = torch.max(zt, 0)  # first maximal index, as argmax (and faster than it)
        picked = zt.gather(0, y[None])[0]
        return (float((zt.sub_(m).exp_().sum(0).log_().add_(m) - picked).sum()),
                int((top == y).sum()))


def _ce_stacked(z: Tensor, y: Tensor) -> tuple[list[float], list[int]]:
    """:func:`_ce` of many cuts' logits ``z`` (cuts, C, n) at once (no suffix; ``z`` is
    overwritten): per cut the summed cross-entropy and the hits."""
    with threads(1 if z.device.type == "cpu" else torch.get_num_threads()):
        m, top = torch.max(z, 1)  # first maximal index, as argmax
        picked = z.gather(1, y.expand(len(z), 1, -1))[:, 0]
        loss = (z.sub_(m[:, None]).exp_().sum(1).log_().add_(m) - picked).sum(1)
        return loss.tolist(), (top == y).sum(1).tolist()


@torch.no_grad()
def score(prep: Prepared, at: Tensor, y: Tensor, w: Tensor, b: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy for the labels ``y`` of the model cut to the kept
    activations ``at`` (k, N) with the consumer ``(w, b)`` (see :func:`logits_of`); in sample
    blocks whose consumer output holds about ``prep.chunk`` values."""
    n = len(y)
    step = max(1, prep.chunk // max(w.shape[0], 1) // 4)
    loss, hits = 0.0, 0
    for i in range(0, n, step):
        dl, dh = _ce(prep, torch.addmm(b[:, None], w, at[:, i:i + step]), y[i:i + step])
        loss, hits = loss + dl, hits + dh
    return loss / n, hits / n


_ZVALS = 2 ** 19  # logits of one sample block of score_widths (4 MiB: they stay in cache)


def _edges(ks: list[int], panel: int = 64) -> list[int]:
    """Row panels ``[e_i, e_i+1)`` of the stacked product: a panel ends at a width, and is at
    least ``panel`` rows unless it is the last."""
    edges = [0]
    for k in ks:
        if k - edges[-1] >= panel:
            edges.append(k)
    if edges[-1] != ks[-1]:
        edges.append(ks[-1])
    return edges


@torch.no_grad()
def score_widths(prep: Prepared, split: str, perm: Tensor,
                 cuts: list[tuple[int, Tensor, Tensor]]) -> list[tuple[float, float]]:
    """:func:`score` on ``split`` of many cuts at once: ``cuts`` holds ``(k, w, b)``, ``k``
    ascending, ``w`` (C, k) the consumer's columns for the neurons ``perm[:k]``.

    The cuts' weights are stacked (zero beyond each ``k``) and multiply each sample block of
    the permuted activations once, panel by panel of rows (a panel only by the cuts that read
    it): about ``2 C N sum(k)`` flops in large GEMMs instead of one memory-bound pass per cut;
    stacks of about ``prep.chunk`` weights, sample blocks of about ``prep.chunk`` values.
    """
    at, y = prep.at[split], prep.y[split]
    h, n = at.shape
    c = int(cuts[0][1].shape[0])
    per = max(1, prep.chunk // max(c * h, 1))
    out: list[tuple[float, float]] = []
    for g0 in range(0, len(cuts), per):
        grp = cuts[g0:g0 + per]
        ks = [k for k, _, _ in grp]
        ws = at.new_zeros(len(grp) * c, ks[-1])
        for i, (k, w, _) in enumerate(grp):
            ws[i * c:(i + 1) * c, :k] = w
        bias = torch.cat([b for _, _, b in grp])[:, None]
        edges = _edges(ks)
        first = [sum(k <= e for k in ks) * c for e in edges[:-1]]  # rows reading each panel
        sums = [[0.0, 0] for _ in grp]
        step = max(1, min(prep.chunk // max(ks[-1], 1), _ZVALS // max(len(ws), 1)))
        for i in range(0, n, step):
            blk = at[:, i:i + step].index_select(0, perm[:ks[-1]])
            z = bias.expand(-1, blk.shape[1]).clone()
            for r0, r1, f in zip(edges[:-1], edges[1:], first, strict=True):
                z[f:].addmm_(ws[f:, r0:r1], blk[r0:r1])
            if prep.suffix is None:  # every cut's classes at once: (cuts, C, n)
                for s, dl, dh in zip(sums, *_ce_stacked(z.view(len(grp), c, -1), y[i:i + step]),
                                     strict=True):
                    s[0], s[1] = s[0] + dl, s[1] + dh
                continue
            for j, s in enumerate(sums):
                dl, dh = _ce(prep, z[j * c:(j + 1) * c], y[i:i + step])
                s[0], s[1] = s[0] + dl, s[1] + dh
        out += [(loss / n, hits / n) for loss, hits in sums]
    return out
