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

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn._bank_kernels import MIN_ROWS as MIN_ROWS
from widthlab.nn._bank_kernels import (
    _chunks,
    _forward_emulated,
    _forward_fp32,
    _forward_native,
    _grad,
    _native_cpu_bf16,
)
from widthlab.nn._bank_kernels import init_linear as init_linear
from widthlab.nn._bank_kernels import init_mlp as init_mlp
from widthlab.nn._bank_resize import BankGrowth as BankGrowth
from widthlab.nn._bank_resize import BankShrink as BankShrink
from widthlab.nn._bank_resize import _BankResize
from widthlab.nn._model_spec import ModelSpec as ModelSpec


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


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 matrix products run natively on ``device``: any CUDA device, or a CPU with
    AVX512-BF16 or AMX tiles (as torch detects them). Elsewhere oneDNN/MKL emulate them."""
    return torch.device(device).type != "cpu" or _native_cpu_bf16()


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


class MLPBank(_BankResize, nn.Module):
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
