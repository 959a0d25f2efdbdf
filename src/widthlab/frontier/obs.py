"""Greedy optimal-brain-surgeon elimination of a layer's neurons, compensating its consumer.

The consumer ``z = a W^T + b`` reads the layer's activations ``a`` (``H`` neurons). Removing a
set ``R`` of neurons and refitting the remaining weights by least squares on the calibration
activations ``A`` (``n x H``, with a ones column for the bias) minimises

    E(W') = ||A_aug (W_aug - W'_aug)^T||^2 / n,      W'_aug[:, R] = 0

whose Hessian in each output row is the Gram matrix ``G = A_aug^T A_aug / n`` (damped:
``+ damp * mean(diag G) * I``). From a least-squares optimum, removing neuron ``j`` costs
``dE_j = w_j^T w_j / [G^-1]_jj`` (``w_j`` its consumer column) and the new optimum is
``W' = W - w_j [G^-1]_j,: / [G^-1]_jj`` (optimal brain surgeon, Hassibi & Stork 1993, for the
``C`` rows at once). Greedy elimination removes the cheapest neuron, corrects ``W`` and
downdates ``G^-1 <- G^-1 - g_j g_j^T / g_jj`` (no refactorisation), ``H - 1`` times: every
prefix of the removal order comes with its exactly refitted consumer.

The elimination is :func:`widthlab.frontier.block_obs.eliminate_blocks` with one column per
neuron (the one implementation): lazy downdates applied ``block`` rows at a time by GEMMs on
the lower row panels, live rows and columns moved into the removed ones' places, so the work is
about ``(9/16) H^3 / 3`` multiply-adds in GEMMs (8 panels) and the memory ``(H+1)^2``
float64 values plus ``O(block H)`` (the Gram matrix is built in sample blocks, factorised and
inverted in place on the CPU; on other devices the inverse needs a second ``(H+1)^2``).

With ``metric=F`` (a ``C x C`` positive semi-definite matrix) the cost of a removal is
``w_j^T F w_j / [G^-1]_jj``: the Kronecker-factored (K-FAC) second-order change of the loss
when ``F`` is the mean Hessian of the cross-entropy in the logits, ``E[diag(p) - p p^T]``.
The correction of ``W`` is the same (``F`` cancels); only the order changes.

Example::

    G = gram(a)                                   # (H+1, H+1), float64
    res = eliminate(G, w_aug, keep_at={16, 64})   # removal order, costs, refitted snapshots
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from widthlab.errors import UsageError
from widthlab.frontier._memory import big_empty
from widthlab.frontier.block_obs import BlockProblem, eliminate_blocks, reads_lower_only

__all__ = ["Elimination", "add_gram_", "damped_inverse", "eliminate", "gram", "mirror_gram_"]


def _panels(h: int) -> list[int]:
    """Edges of the row panels of :func:`add_gram_`: 1 panel below 512 columns, else up to 16
    of at least 256 columns (17/32 of the full product's flops)."""
    t = max(1, min(16, h // 256))
    return [h * i // t for i in range(t + 1)]


def add_gram_(g: Tensor, blk: Tensor, *, beta: float = 1.0) -> None:
    """``g = beta g + blk^T blk`` on the lower triangle's row panels only (``(t+1)/2t`` of the
    GEMM's flops for ``t`` panels; ``beta=0``: ``g``'s old values are not read, not even a NaN);
    :func:`mirror_gram_` completes ``g`` once all blocks are in."""
    edges = _panels(g.shape[0])
    for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
        g[r0:r1, :r1].addmm_(blk[:, r0:r1].t(), blk[:, :r1], beta=beta)


def mirror_gram_(g: Tensor) -> None:
    """Copy the lower panels of :func:`add_gram_` onto the upper triangle, the diagonal
    blocks' own upper triangles included (a GEMM's block ``B^T B`` need not be symmetric
    bitwise: its kernels may sum ``(i, j)`` and ``(j, i)`` in different orders)."""
    edges = _panels(g.shape[0])
    for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
        d = g[r0:r1, r0:r1]
        d.copy_(torch.tril(d) + torch.tril(d, -1).t())
        if r0:
            g[:r0, r0:r1] = g[r0:r1, :r0].t()


def gram(a: Tensor, *, chunk: int = 2 ** 22, lower: bool = False) -> Tensor:
    """``A_aug^T A_aug / n`` for ``A_aug = [a, 1]``: ``(H+1, H+1)`` float64, in sample blocks of
    about ``chunk`` values (only the result and one block are alive). ``lower=True``: only the
    lower triangle (diagonal included) is computed, the upper one is left unset (for
    :func:`eliminate` and :func:`damped_inverse`, which read no more)."""
    n, h = a.shape
    g = big_empty(h + 1, h + 1, device=a.device)  # huge pages: see _memory
    if n == 0:
        g.zero_()
    step = max(1, chunk // max(h, 1))
    for i in range(0, n, step):
        blk = a[i:i + step].to(torch.float64)
        add_gram_(g[:h, :h], blk, beta=float(i > 0))  # the first block writes: no zeroing
        if i:
            g[h, :h] += blk.sum(0)
        else:
            torch.sum(blk, 0, out=g[h, :h])
    g[h, h] = n
    if not lower:
        mirror_gram_(g[:h, :h])
        g[:h, h] = g[h, :h]
        return g.div_(n)
    edges = _panels(h)  # the panels written (the unset upper values are not touched)
    for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
        g[r0:r1, :r1].div_(n)
    g[h].div_(n)
    return g


def damped_inverse(g: Tensor, damp: float, *, lower: bool = False) -> Tensor:
    """``(G + damp * mean(diag G) * I)^-1`` by a Cholesky factorisation, computed in the memory
    of ``g`` (which is consumed; on the CPU the result is ``g`` itself, elsewhere a new
    ``(H+1)^2`` buffer). ``lower=True``: on the CPU only the lower triangle (diagonal
    included) is the inverse, the upper one is left as it is (for a reader of the lower one
    only: the mirror is a sixth of the time).

    Raises
    ------
    UsageError
        If the damped matrix is not positive definite (``damp=0`` with dependent columns).
    """
    if not damp >= 0:
        raise UsageError(f"damp must be >= 0, got {damp!r}")
    g.diagonal().add_(damp * float(g.diagonal().mean()))
    cpu = g.device.type == "cpu" and g.is_contiguous()
    if cpu:  # LAPACK's potrf through scipy on the Fortran view (the upper factor L^T)
        from scipy.linalg import lapack

        # OpenBLAS's potrf: faster than torch's (MKL) cholesky here (benchmarks/README.md)
        a = g.numpy().T
        fac, bad = lapack.dpotrf(a, lower=0, overwrite_a=1, clean=0)
        if not np.shares_memory(fac, a):
            a[...] = fac
    else:
        info = torch.empty((), dtype=torch.int32, device=g.device)
        torch.linalg.cholesky_ex(g, out=(g, info))  # lower factor in place (upper unread)
        bad = int(info)
    if bad != 0:
        raise UsageError("the Gram matrix of the calibration activations is singular (dead or "
                         "duplicate neurons, or fewer samples than neurons); use damp > 0")
    if cpu:
        return _potri_cpu_(g, mirror=not lower)
    return torch.cholesky_inverse(g)  # G^-1 from the factor (upper half of g unread)


def _potri_cpu_(g: Tensor, *, mirror: bool = True) -> Tensor:
    """``G^-1`` from the lower Cholesky factor in ``g``, in place: LAPACK's ``potri`` through
    scipy (OpenBLAS's, faster than torch's ``cholesky_inverse`` and without a second
    buffer), on the Fortran view of ``g`` (the upper factor), then mirrored (unless
    ``mirror`` is False: the lower triangle only)."""
    from scipy.linalg import lapack

    a = g.numpy().T  # Fortran-ordered: the upper factor L^T
    inv, info = lapack.dpotri(a, lower=0, overwrite_c=1)
    if info != 0:
        raise UsageError("the Gram matrix of the calibration activations is singular; use "
                         "damp > 0")
    if not np.shares_memory(inv, a):
        g.copy_(torch.from_numpy(inv.T))
    if not mirror:
        return g
    h = g.shape[0]  # the lower triangle holds G^-1: mirror it in panels of 512 columns
    for c0 in range(0, h, 512):
        c1 = min(h, c0 + 512)
        d = g[c0:c1, c0:c1]
        d.copy_(d.tril() + d.tril(-1).t())
        g[c0:c1, c1:] = g[c1:, c0:c1].t()
    return g


@dataclass
class Elimination:
    """The result of :func:`eliminate`.

    ``order``: neuron indices in removal order (``H``, the last one never removed);
    ``costs``: the increase of ``E`` at each removal (``H``, the last NaN);
    ``snapshots``: ``{k: (kept indices (k,), W (C, k), b (C,))}`` for every requested ``k``.
    """

    order: list[int]
    costs: list[float]
    snapshots: dict[int, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)


def eliminate(g: Tensor, w_aug: Tensor, *, damp: float = 1e-6, metric: Tensor | None = None,
              block: int = 128, keep_at: Collection[int] = (),
              on_step: Callable[[int], None] | None = None) -> Elimination:
    """Greedy OBS removal of all neurons but one (see the module docstring): the one-column
    case of :func:`widthlab.frontier.block_obs.eliminate_blocks`.

    Parameters
    ----------
    g : Tensor of shape (H+1, H+1)
        The Gram matrix of :func:`gram` (consumed: it is damped and factorised in place; only
        its lower triangle is read, so ``gram(..., lower=True)`` is enough).
    w_aug : Tensor of shape (C, H+1)
        The consumer's weights with its bias as the last column (not modified).
    damp : float
        Relative damping of ``g``; 0 needs a non-singular Gram matrix.
    metric : Tensor of shape (C, C), optional
        Cost metric of the consumer's outputs (default: the identity, plain reconstruction).
    block : int
        Rank-one downdates gathered before one GEMM applies them (speed only).
    keep_at : collection of int
        Numbers of kept neurons at which to copy the refitted consumer into ``snapshots``.
    on_step : callable, optional
        Called with the number of kept neurons after every removal (progress).
    """
    h = w_aug.shape[1] - 1
    if g.shape != (h + 1, h + 1) or g.dtype != torch.float64:
        raise UsageError(f"the Gram matrix must be float64 of shape ({h + 1}, {h + 1}), got "
                         f"{g.dtype} {tuple(g.shape)}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise UsageError(f"block must be a positive integer, got {block!r}")
    units = torch.arange(h, device=g.device)
    lower = reads_lower_only(1, 1, g)  # the CPU's column steps: no mirrored upper triangle
    prob = BlockProblem(damped_inverse(g, damp, lower=lower), w_aug, units[:, None], units,
                        metric)
    res = eliminate_blocks([prob], h, cap=block, keep_at=keep_at, on_step=on_step)
    out = Elimination(res.order, res.costs)
    for k, (kept, (w,)) in res.snapshots.items():
        out.snapshots[k] = (kept, w[:, kept], w[:, h].clone())
    return out
