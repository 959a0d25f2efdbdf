"""A bank of many MLPs trained at once: one wide first-layer GEMM, grouped later layers.

Every model in the bank is ``in -> h1 -> ... -> hk -> out`` with ReLU, and every model sees the
same input batch. The bank is *mathematically* the set of independent models:

* layer 1 of all models is one weight matrix ``W0`` of shape ``(H, in)`` where ``H`` is the sum of
  the first hidden widths; its product with the batch is one GEMM computed unit-major,
  ``W0 @ x.T -> (H, B)``, in chunks of ``chunk`` units with bias and ReLU applied while each chunk
  is in cache (contiguous output rows, no copy-out; chunks keep the operands cache-sized);
* later layers are grouped by architecture: models with the same widths share a stacked weight
  ``(n, out, in)`` and one batched GEMM on contiguous ``(n, w, B)`` activation blocks;
* the loss is a vector with one entry per model; the engine sums it, so each model's gradient
  is exactly its own.

Hidden units of one model are contiguous: ``bank.slices[m]`` is model ``m``'s column range in the
``(B, H)`` first-layer activations, in the model's own neuron order. ``bank.model_params(m)``
gives each model's parameters as views, which the optimizer steps as separate tensors (per-model
learning rate and weight decay), and ``bank.export(m)`` gives a plain :class:`MLP` for a model.

Layer kinds that change the width while training (flexible cut-off, gates) plug in as
*modifiers*: a module that rescales the first-layer activations per hidden unit and adds a
per-model penalty (see :class:`widthlab.nn.modifiers.Modifier`).

First-layer units can be removed for real: :meth:`MLPBank.shrink_` drops units from ``w0``,
``b0``, the second layer's input columns and the modifiers' per-unit tensors, and regroups the
models whose widths now differ, so removed units stop costing compute. ``bank.archs[m]`` is
model ``m``'s current architecture (``bank.specs[m].hidden`` keeps the one it started with);
a bank built with ``widths=`` has that layout from the start (resuming a shrunk run).
:meth:`MLPBank.grow_` is the inverse: it appends units to a model with zero outgoing weights, so
no output changes at insertion (the growth rule, :mod:`widthlab.nn.growth`, decides when).

Example::

    bank = MLPBank([ModelSpec((64,), seed=0), ModelSpec((128,), seed=0)])
    loss = bank.loss(x, y)          # (M,) one cross-entropy per model
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError


@dataclass(frozen=True)
class ModelSpec:
    """One model of a bank.

    Parameters
    ----------
    hidden : tuple of int
        Hidden widths, e.g. ``(256,)`` for the journal's one-hidden-layer MLP.
    seed : int
        Initialisation seed (``torch.manual_seed(seed)`` followed by ``nn.Linear`` layers gives
        the same weights).
    lr : float or None
        Learning rate of this model; ``None`` uses the run's learning rate.
    weight_decay : float
        L2 penalty, as ``torch.optim.Adam(weight_decay=...)`` applies it.
    variant : str
        Free label (``"relu"``, ``"flexible"``, ...) stored with the results.
    options : tuple of (str, value)
        Extra, hashable settings stored with the results (used by modifiers).
    """

    hidden: tuple[int, ...]
    seed: int = 0
    lr: float | None = None
    weight_decay: float = 0.0
    variant: str = "relu"
    options: tuple[tuple[str, object], ...] = field(default=())

    def __post_init__(self) -> None:
        hidden = tuple(int(h) for h in (self.hidden if isinstance(self.hidden, Sequence)
                                        else (self.hidden,)))
        object.__setattr__(self, "hidden", hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise UsageError(f"hidden widths must be positive integers, got {self.hidden!r}")
        if self.lr is not None and not (self.lr >= 0 and math.isfinite(self.lr)):
            raise UsageError(f"lr must be a finite number >= 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise UsageError(f"weight_decay must be >= 0, got {self.weight_decay!r}")

    @property
    def width(self) -> int:
        """Width of the first hidden layer."""
        return self.hidden[0]

    @property
    def name(self) -> str:
        arch = "x".join(str(h) for h in self.hidden)
        return f"{self.variant}-{arch}-s{self.seed}"

    def to_dict(self) -> dict:
        return {"name": self.name, "arch": list(self.hidden), "seed": self.seed,
                "variant": self.variant,
                "options": {"lr": self.lr, "weight_decay": self.weight_decay,
                            **dict(self.options)}}

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        """The inverse of :meth:`to_dict` (also reads a row of ``Store.models(run_id)``)."""
        opts = dict(d.get("options") or {})
        lr, wd = opts.pop("lr", None), opts.pop("weight_decay", 0.0)
        return cls(tuple(int(h) for h in d["arch"]), seed=int(d.get("seed", 0)), lr=lr,
                   weight_decay=float(wd or 0.0), variant=str(d.get("variant", "relu")),
                   options=tuple(sorted(opts.items())))


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


class MLP(nn.Module):
    """A plain ReLU MLP: the reference a bank member is equal to (and what ``export`` returns)."""

    def __init__(self, sizes: Sequence[int], seed: int = 0):
        super().__init__()
        self.sizes = list(sizes)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:],
                                                                      strict=False))
        with torch.no_grad():
            for layer, (w, b) in zip(self.layers, init_mlp(sizes, seed), strict=True):
                layer.weight.copy_(w)
                layer.bias.copy_(b)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


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


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 matrix products run natively on ``device``: any CUDA device, or a CPU with
    AVX512-BF16 or AMX tiles (as torch detects them). Elsewhere oneDNN/MKL emulate them."""
    return torch.device(device).type != "cpu" or _native_cpu_bf16()


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


class _WideLinearReLU(torch.autograd.Function):
    """``relu(x @ W.T + b)`` in column chunks, returned as a ``(B, H)`` view of a unit-major
    ``(H, B)`` buffer, so every chunk GEMM writes contiguous rows (no copy-out) and the grouped
    heads read contiguous ``(n, w, B)`` blocks.

    Each chunk's ReLU is applied while it is still in cache; the backward masks chunk by chunk,
    writes the weight gradient straight into a persistent buffer (no allocation, no accumulation
    pass) and forms no input gradient (the input is data).

    ``compute_dtype`` bf16 on a device with native bf16 GEMMs (:func:`native_bf16`) keeps the
    activations and their gradients in bf16 (the heads' autocast products read them without a
    cast); master weights, the bias and weight gradients stay fp32."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, grad_buffer: Tensor,
                chunk: int, compute_dtype: torch.dtype) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            if compute_dtype == torch.float32:
                mode = "fp32"
                xc, out = _forward_fp32(x, weight, bias, chunk)  # (in, B), (H, B)
            elif native_bf16(x.device):
                mode = "native"
                xc, out = _forward_native(x, weight, bias, chunk, compute_dtype)  # (B, in)
            else:
                mode = "emulated"
                xc, out = _forward_emulated(x, weight, bias, chunk, compute_dtype)  # (B, in)
        ctx.save_for_backward(xc, out)
        ctx.grad_buffer, ctx.chunk, ctx.mode = grad_buffer, chunk, mode
        return out.t()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        xc, a = ctx.saved_tensors  # see forward; a: (H, B)
        buf = ctx.grad_buffer
        g = grad_out.t()  # (H, B) in a's dtype; contiguous when the heads produced it
        h = buf.shape[0]
        grad_b = torch.empty(h, dtype=torch.float32, device=a.device)
        # native bf16: each chunk's gradient lands in one reused bf16 block, then in buf (fp32)
        low = None if ctx.mode != "native" else torch.empty(
            min(h, ctx.chunk + MIN_ROWS), buf.shape[1], dtype=xc.dtype, device=a.device)
        for i, j in _chunks(h, ctx.chunk):
            gz = torch.ops.aten.threshold_backward(g[i:j], a[i:j], 0)  # (c, B)
            torch.sum(gz, 1, dtype=torch.float32, out=grad_b[i:j])
            if ctx.mode == "fp32":
                torch.mm(gz, xc.t(), out=buf[i:j])
            elif low is not None:
                buf[i:j].copy_(torch.mm(gz, xc, out=low[:j - i]))
            else:
                buf[i:j] = torch.mm(gz.t().to(xc.dtype).contiguous().t(), xc)
        return None, None, grad_b, None, None, None


def _first_layer(x: Tensor, weight: Tensor, bias: Tensor, compute_dtype: torch.dtype) -> Tensor:
    """Pre-activations without autograd bookkeeping for the weight (evaluation, statistics)."""
    if compute_dtype == torch.float32:
        return torch.addmm(bias, x, weight.t())
    with torch.autocast(x.device.type, enabled=False):
        return torch.addmm(bias.to(compute_dtype), x.to(compute_dtype),
                           weight.to(compute_dtype).t()).float()


@dataclass
class BankShrink:
    """What :meth:`MLPBank.shrink_` did, per model.

    Attributes
    ----------
    kept : list of LongTensor
        Positions, within the model's slice *before* the shrink, of the units that stayed.
    removed : list of LongTensor
        Original indices (``unit_ids``) of the units removed.
    """

    kept: list[Tensor]
    removed: list[Tensor]

    @property
    def n_removed(self) -> int:
        return sum(len(r) for r in self.removed)


@dataclass
class BankGrowth:
    """What :meth:`MLPBank.grow_` did, per model.

    Attributes
    ----------
    sources : list of LongTensor
        For each unit of the model's new slice, its position in the old slice; -1 for a new
        unit (new units come last).
    added : list of LongTensor
        Original indices (``unit_ids``) given to the new units (empty: the model did not grow).
    """

    sources: list[Tensor]
    added: list[Tensor]

    @property
    def n_added(self) -> int:
        return sum(len(a) for a in self.added)


class MLPBank(nn.Module):
    """Many ReLU MLPs with shared input, trained as one module.

    Parameters
    ----------
    specs : sequence of ModelSpec
        The models, in the order results are reported.
    in_features, out_features : int
        784 and 10 for MNIST-like data.
    chunk : int
        Hidden units per first-layer GEMM call (performance only; results do not depend on it
        beyond float rounding).
    device : torch device
    widths : sequence of int, optional
        Current first-layer width of each model (0 allowed): the layout of a bank that lost
        (:meth:`shrink_`) or gained (:meth:`grow_`) units, to load such a bank's checkpoint.
        Weights start as the first units of each model's initialisation; units beyond the
        spec's width start at zero (a checkpoint overwrites them).
    grown : bool
        Allow ``widths`` above the specs' widths (the layout of a bank that gained units).
    """

    def __init__(self, specs: Sequence[ModelSpec], in_features: int = 784,
                 out_features: int = 10, *, chunk: int = 1024,
                 device: torch.device | str = "cpu", widths: Sequence[int] | None = None,
                 grown: bool = False):
        super().__init__()
        if not specs:
            raise UsageError("a bank needs at least one ModelSpec")
        if chunk < 1:
            raise UsageError(f"chunk must be >= 1, got {chunk}")
        self.specs = list(specs)
        self.in_features, self.out_features, self.chunk = in_features, out_features, chunk
        self.compute_dtype = torch.float32
        if widths is None:
            widths = [s.width for s in self.specs]
        widths = [int(w) for w in widths]
        if len(widths) != len(self.specs) or any(
                not 0 <= w <= (w if grown else s.width)
                for w, s in zip(widths, self.specs, strict=True)):
            raise UsageError(f"widths must give one first-layer width per model, each in "
                             f"[0, its spec's width] (any width >= 0 with grown=True); got "
                             f"{widths} for specs {[s.width for s in self.specs]}")
        # current architectures: the first width changes, later layers keep the spec's widths
        self.archs = [(w, *s.hidden[1:]) for w, s in zip(widths, self.specs, strict=True)]
        self.register_buffer("_inverse", torch.zeros(0, dtype=torch.long), persistent=False)
        self._layout()
        order = self._order()

        # A bank built with other widths than the specs' (to load a shrunk or grown run's
        # checkpoint) starts from the first units of each model's initialisation, zeros beyond.
        inits = [init_mlp([in_features, *s.hidden, out_features], s.seed) for s in self.specs]
        for m, w in enumerate(widths):
            (w0, b0), (w1, b1) = inits[m][0], inits[m][1]
            extra = max(0, w - w0.shape[0])
            inits[m][0] = (F.pad(w0[:w], (0, 0, 0, extra)), F.pad(b0[:w], (0, extra)))
            inits[m][1] = (F.pad(w1[:, :w], (0, extra)), b1)
        self.w0 = nn.Parameter(torch.cat([inits[m][0][0] for m in order]), requires_grad=False)
        self.b0 = nn.Parameter(torch.cat([inits[m][0][1] for m in order]))
        self.weights = nn.ParameterList()  # per group, per later layer: (n, out, in)
        self.biases = nn.ParameterList()   # (n, out)
        for arch, members in self.groups:
            for layer in range(1, len(arch) + 1):
                self.weights.append(nn.Parameter(torch.stack([inits[m][layer][0]
                                                              for m in members])))
                self.biases.append(nn.Parameter(torch.stack([inits[m][layer][1]
                                                             for m in members])))
        # unit_ids[i]: the index unit i had in its model's first layer when training started
        self.unit_ids = torch.cat([torch.arange(widths[m]) for m in order])  # (H,)
        self.modifiers = nn.ModuleList()
        self.to(device)
        self.w0_grad = torch.zeros_like(self.w0)  # written by the backward pass, (H, in)
        self.init_grads()

    def _layout(self) -> None:
        """Group the models by current architecture and place their units (from ``archs``)."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for m, arch in enumerate(self.archs):
            groups.setdefault(arch, []).append(m)
        self.groups = list(groups.items())  # [(arch, [model indices])], first-seen order
        self.slices: list[tuple[int, int]] = [(0, 0)] * len(self.specs)
        self._where: list[tuple[int, int]] = [(0, 0)] * len(self.specs)  # (group, position)
        self.group_cols: list[tuple[int, int]] = []
        self._layer_index = []  # group -> index of its first later layer in weights
        col, layer = 0, 0
        for g, (arch, members) in enumerate(self.groups):
            start = col
            for k, m in enumerate(members):
                self.slices[m] = (col, col + arch[0])
                self._where[m] = (g, k)
                col += arch[0]
            self.group_cols.append((start, col))
            self._layer_index.append(layer)
            layer += len(arch)
        self.n_hidden = col
        # logits are produced group by group; this puts them back in model order
        self._inverse = torch.argsort(torch.tensor(self._order())).to(self._inverse.device)

    def _order(self) -> list[int]:
        """Models in the order their units and stacked weights are laid out."""
        return [m for _, members in self.groups for m in members]

    # ------------------------------------------------------------------ structure
    @property
    def n_models(self) -> int:
        return len(self.specs)

    @property
    def device(self) -> torch.device:
        return self.b0.device

    def add_modifier(self, modifier: nn.Module) -> None:
        """Attach a modifier (gates, flexible cut-off) acting on the first hidden layer."""
        modifier.attach(self)
        self.modifiers.append(modifier.to(self.device))
        self.init_grads()

    def trainable(self) -> list[Tensor]:
        """The bank-level tensors that receive gradients (``w0`` via its own buffer)."""
        return [self.b0, *self.weights, *self.biases] + [
            p for mod in self.modifiers for p in mod.parameters()]

    def model_params(self, m: int) -> list[tuple[str, Tensor, Tensor]]:
        """Model ``m``'s parameters as ``(name, view, gradient view)``, in :class:`MLP` order
        followed by the modifiers' parameters. Call :meth:`init_grads` first."""
        a, b = self.slices[m]
        g, k = self._where[m]
        base = self._layer_index[g]
        out = [("layers.0.weight", self.w0.detach()[a:b], self.w0_grad[a:b]),
               ("layers.0.bias", self.b0.detach()[a:b], _grad(self.b0)[a:b])]
        for layer in range(len(self.specs[m].hidden)):
            w, bias = self.weights[base + layer], self.biases[base + layer]
            out.append((f"layers.{layer + 1}.weight", w.detach()[k], _grad(w)[k]))
            out.append((f"layers.{layer + 1}.bias", bias.detach()[k], _grad(bias)[k]))
        for i, mod in enumerate(self.modifiers):
            out += [(f"modifiers.{i}.{n}", v, gv) for n, v, gv in mod.model_params(m)]
        return out

    def init_grads(self) -> None:
        """Allocate the persistent gradients (so optimizer views stay valid across steps)."""
        for p in self.trainable():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def zero_grad(self, set_to_none: bool = False) -> None:  # noqa: D102 - keep buffers
        for p in self.trainable():
            if p.grad is not None:
                p.grad.zero_()
        # w0_grad is overwritten by the backward pass, never accumulated.

    def export(self, m: int) -> MLP:
        """A standalone :class:`MLP` equal to model ``m`` (copies of its current weights)."""
        spec = self.specs[m]
        mlp = MLP([self.in_features, *self.archs[m], self.out_features], seed=spec.seed)
        params = [t for t in self.model_params(m) if t[0].startswith("layers.")]
        with torch.no_grad():
            for (name, view, _), (pname, p) in zip(params, mlp.named_parameters(), strict=True):
                assert name == pname, (name, pname)
                p.copy_(view)
        return mlp.to(self.device)

    # ------------------------------------------------------------------ shrinking
    def unit_dims(self, m: int) -> list[int | None]:
        """For each tensor of :meth:`model_params`, the dimension indexed by model ``m``'s
        first-layer units (None: not indexed by them). Shrinking slices exactly these."""
        depth = len(self.specs[m].hidden)
        dims: list[int | None] = [0, 0, 1, None] + [None, None] * (depth - 1)
        for mod in self.modifiers:
            per_unit = set(getattr(mod, "unit_tensors", ()))
            dims += [0 if name in per_unit else None for name, _, _ in mod.model_params(m)]
        return dims

    @torch.no_grad()
    def shrink_(self, keep: Tensor) -> BankShrink:
        """Remove the first-layer units where ``keep`` is False, for real.

        Drops them from ``w0``, ``b0``, the second layer's input columns and every modifier's
        per-unit tensors, then regroups the models by their new widths (layout as a bank built
        with ``widths=`` would have it). The outputs of every model are unchanged when the
        removed units contribute exact zeros (a dead gate), up to the summation order.
        Gradients are reset; optimizer state is carried by
        :meth:`widthlab.engine.optim.BankOptimizer.shrunk`.

        Parameters
        ----------
        keep : Tensor of shape (H,), bool
            Which current units stay.

        Returns
        -------
        BankShrink
            Per model: kept positions within its old slice, removed original unit indices.
        """
        keep = torch.as_tensor(keep).to("cpu", torch.bool).flatten()
        if keep.numel() != self.n_hidden:
            raise UsageError(f"keep must have one entry per hidden unit ({self.n_hidden}), "
                             f"got {keep.numel()}")
        bad = [name for name in (type(mod).__name__ for mod in self.modifiers
                                 if not getattr(mod, "unit_tensors", ()))]
        if bad:
            raise UsageError(f"modifier(s) {', '.join(bad)} cannot lose units (they declare no "
                             "per-unit tensors); train without shrinking (shrink_every=None)")
        kept = [keep[a:b].nonzero().flatten() for a, b in self.slices]  # local positions
        removed = [self.unit_ids[a:b][~keep[a:b]] for a, b in self.slices]
        index = self._relayout(kept, [None] * self.n_models)
        for mod in self.modifiers:
            mod.shrink_(self, index)
        self.init_grads()
        return BankShrink(kept, removed)

    @torch.no_grad()
    def grow_(self, m: int | Sequence[int], n: int | Sequence[int],
              init: str | tuple[Tensor, Tensor] | Sequence[tuple[Tensor, Tensor]] = "linear", *,
              ids: Sequence[Tensor] | None = None,
              generator: torch.Generator | None = None) -> BankGrowth:
        """Append ``n`` first-layer units to model ``m`` (or to several models at once).

        The inverse of :meth:`shrink_`: the new units' incoming weights and biases come from
        ``init``, their outgoing weights (the second layer's new input columns) are zero, so
        every model's outputs are unchanged at insertion (bitwise: the new terms are exact
        zeros). Models are regrouped by their new widths; every modifier extends its per-unit
        tensors (it must define ``grow_(bank, index)``). Gradients are reset; optimizer state
        is carried by :meth:`widthlab.engine.optim.BankOptimizer.grown` (zero for new units).

        Parameters
        ----------
        m : int or sequence of int
            The model(s) that grow.
        n : int or sequence of int
            Units to add, one count for all or one per model in ``m``.
        init : "linear", (weight, bias) or a sequence of them
            ``"linear"``: ``nn.Linear``'s initialisation drawn from ``generator``; otherwise
            the incoming weights ``(n, in)`` and biases ``(n,)`` of each model's new units.
        ids : sequence of LongTensor, optional
            Original indices (``unit_ids``) of the new units, per model; default: numbers after
            the largest of the model's spec width and its current ids.
        generator : torch.Generator, optional
            For ``init="linear"`` (default: seeded with 0).

        Returns
        -------
        BankGrowth
            Per model: where each unit of the new slice came from, and the new ids.
        """
        models = [int(m)] if isinstance(m, int) else [int(v) for v in m]
        counts = [int(n)] * len(models) if isinstance(n, int) else [int(v) for v in n]
        if len(counts) != len(models) or len(set(models)) != len(models) or any(
                not 0 <= v < self.n_models for v in models) or any(c < 0 for c in counts):
            raise UsageError(f"grow_ needs distinct model indices in [0, {self.n_models}) and "
                             f"one count >= 0 for all or per model; got m={m!r}, n={n!r}")
        if isinstance(init, str):
            if init != "linear":
                raise UsageError(f"unknown init {init!r}; pass 'linear' or (weight, bias)")
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            init = [init_linear(c, self.in_features, g) for c in counts]
        elif isinstance(init, tuple) and len(init) == 2 and torch.is_tensor(init[0]):
            init = [init]
        init = list(init)
        for (w, b), c in zip(init, counts, strict=True):
            if tuple(w.shape) != (c, self.in_features) or tuple(b.shape) != (c,):
                raise UsageError(f"init for {c} units needs a weight ({c}, {self.in_features}) "
                                 f"and a bias ({c},); got {tuple(w.shape)}, {tuple(b.shape)}")
        bad = [type(mod).__name__ for mod in self.modifiers if not hasattr(mod, "grow_")]
        if bad:
            raise UsageError(f"modifier(s) {', '.join(bad)} cannot gain units (no grow_); use "
                             "widthlab.nn.growth.GrowingGate")
        new: list[tuple[Tensor, Tensor] | None] = [None] * self.n_models
        new_ids = [torch.zeros(0, dtype=torch.long) for _ in range(self.n_models)]
        for k, (v, c, rows) in enumerate(zip(models, counts, init, strict=True)):
            new[v] = rows
            a, b = self.slices[v]
            first = max(self.specs[v].width, int(self.unit_ids[a:b].max()) + 1 if b > a else 0)
            new_ids[v] = (torch.arange(first, first + c) if ids is None
                          else torch.as_tensor(ids[k], dtype=torch.long).flatten())
        sources = [torch.cat([torch.arange(b - a), torch.full((len(new_ids[v]),), -1)])
                   for v, (a, b) in enumerate(self.slices)]
        kept = [torch.arange(b - a) for a, b in self.slices]
        index = self._relayout(kept, new, new_ids)
        for mod in self.modifiers:
            mod.grow_(self, index)
        self.init_grads()
        return BankGrowth(sources, new_ids)

    def _relayout(self, kept: list[Tensor], new: list[tuple[Tensor, Tensor] | None],
                  new_ids: list[Tensor] | None = None) -> Tensor:
        """Rebuild the tensors with model ``m``'s units ``kept[m]`` (local positions) followed
        by the units ``new[m]`` (incoming weight, bias; outgoing weights zero), regrouped.
        Returns, per unit of the new layout, its position in the old one (-1: new unit)."""
        old_slices, old_where = list(self.slices), list(self._where)
        old_layer_index = list(self._layer_index)
        old_weights, old_biases = list(self.weights), list(self.biases)
        added = [0 if r is None else r[0].shape[0] for r in new]
        self.archs = [(len(k) + c, *arch[1:])
                      for k, c, arch in zip(kept, added, self.archs, strict=True)]
        self._layout()
        dev, w0, b0 = self.device, self.w0.detach(), self.b0.detach()
        index, ids, w0s, b0s = [], [], [], []
        for m in self._order():
            old = (old_slices[m][0] + kept[m]).to(dev)
            index.append(torch.cat([old, torch.full((added[m],), -1, device=dev)]))
            w0s.append(w0[old])
            b0s.append(b0[old])
            ids.append(self.unit_ids[old.cpu()])
            if added[m]:
                w0s.append(new[m][0].to(dev, w0.dtype))
                b0s.append(new[m][1].to(dev, b0.dtype))
                ids.append(new_ids[m])
        self.unit_ids = torch.cat(ids)
        self.w0 = nn.Parameter(torch.cat(w0s), requires_grad=False)
        self.b0 = nn.Parameter(torch.cat(b0s))
        weights, biases = nn.ParameterList(), nn.ParameterList()
        for arch, members in self.groups:
            for layer in range(len(arch)):
                ws, bs = [], []
                for m in members:
                    g, k = old_where[m]
                    w = old_weights[old_layer_index[g] + layer].detach()[k]  # (out, in)
                    if layer == 0:  # the second layer's inputs are the first layer's units
                        w = F.pad(w.index_select(1, kept[m].to(dev)), (0, added[m]))
                    ws.append(w)
                    bs.append(old_biases[old_layer_index[g] + layer].detach()[k])
                weights.append(nn.Parameter(torch.stack(ws)))
                biases.append(nn.Parameter(torch.stack(bs)))
        self.weights, self.biases = weights, biases
        self.w0_grad = torch.zeros_like(self.w0)
        return torch.cat(index) if index else torch.zeros(0, dtype=torch.long, device=dev)

    def layout_state(self) -> dict | None:
        """Current widths and original unit indices, for a checkpoint; None while the bank
        still has the layout it was built with from its specs (never shrunk nor grown)."""
        widths = [arch[0] for arch in self.archs]
        initial = torch.cat([torch.arange(widths[m]) for m in self._order()])
        if widths == [s.width for s in self.specs] and torch.equal(self.unit_ids, initial):
            return None
        return {"widths": widths, "unit_ids": self.unit_ids.clone()}

    # ------------------------------------------------------------------ compute
    def hidden(self, x: Tensor, *, track: bool = True) -> tuple[Tensor | None, Tensor]:
        """First-layer pre-activations ``z`` and (modified) activations ``a``, both ``(B, H)``.

        When gradients are recorded (``track`` and grad mode on), the fused training path is
        taken and ``z`` is None; otherwise ``z`` is computed and returned (statistics, PCA).
        """
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise UsageError(f"input must have shape (B, {self.in_features}), "
                             f"got {tuple(x.shape)}")
        if track and torch.is_grad_enabled():
            z = None
            a = _WideLinearReLU.apply(x, self.w0, self.b0, self.w0_grad, self.chunk,
                                      self.compute_dtype)
        else:
            z = _first_layer(x, self.w0, self.b0, self.compute_dtype)
            a = F.relu(z)
        for mod in self.modifiers:
            a = mod(a)
        return z, a

    def head(self, a: Tensor) -> Tensor:
        """Later layers from the first-layer activations ``(B, H)`` to logits ``(B, M, out)``.

        Works unit-major: ``a.t()`` is ``(H, B)`` (free for the training path's output), groups
        tile its rows in order, and each group of ``n`` models of width ``w`` is one batched
        GEMM ``(n, out, w) @ (n, w, B)`` on contiguous blocks.
        """
        at = a.t()
        if not at.is_contiguous():
            at = at.contiguous()
        bsz = a.shape[0]
        outs = []
        # split, not slicing: each slice's backward would zero-fill a full (H, B) gradient
        pieces = at.split([c1 - c0 for c0, c1 in self.group_cols], dim=0)
        for g, (arch, members) in enumerate(self.groups):
            h = pieces[g].view(len(members), arch[0], bsz)  # (n, w, B)
            base = self._layer_index[g]
            for layer in range(len(arch)):
                w, b = self.weights[base + layer], self.biases[base + layer]
                h = torch.baddbmm(b.unsqueeze(2), w, h)  # (n, out, B)
                if layer < len(arch) - 1:
                    h = F.relu(h)
            outs.append(h)
        logits = torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]  # (M in group order, C, B)
        if len(outs) > 1:
            logits = logits.index_select(0, self._inverse)
        return logits.permute(2, 0, 1)  # (B, M, C)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of every model, ``(B, M, out)``."""
        return self.head(self.hidden(x)[1])

    def penalty(self) -> Tensor | None:
        """Sum of the modifiers' per-model penalties, ``(M,)``, or None without modifiers."""
        pens = [mod.penalty() for mod in self.modifiers]
        pens = [p for p in pens if p is not None]
        return torch.stack(pens).sum(0) if pens else None

    @staticmethod
    def per_model_loss(logits: Tensor, y: Tensor) -> Tensor:
        """Mean cross-entropy of each model, ``(M,)``, from logits ``(B, M, C)``."""
        n, m, _ = logits.shape
        ce = F.cross_entropy(logits.transpose(1, 2), y[:, None].expand(n, m),
                             reduction="none")  # (B, M)
        return ce.mean(0)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-model loss ``(M,)``: cross-entropy plus the modifiers' penalties."""
        loss = self.per_model_loss(self(x), y)
        pen = self.penalty()
        return loss if pen is None else loss + pen

    def n_params(self, m: int | None = None) -> int:
        """Trainable parameters of model ``m`` (or of all models)."""
        if m is None:
            return sum(self.n_params(i) for i in range(self.n_models))
        sizes = [self.in_features, *self.archs[m], self.out_features]
        n = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:], strict=False))
        return n + sum(mod.n_params(m) for mod in self.modifiers)
