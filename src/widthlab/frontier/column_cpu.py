"""The one-column greedy elimination of :mod:`widthlab.frontier.block_obs` on the CPU.

One consumer reading every unit through one column (a Linear's input neuron): the same
algorithm and the same layout as ``block_obs._State`` with ``b == 1`` (lazy downdates applied
by GEMMs on the lower row panels of ``P``, the stale rest of a row read from its column, live
positions moved into the dead ones' places at every flush; only the lower triangle of ``P`` is
read: a row up to the diagonal, the rest from its column), with the per-removal work done by
numpy on views of the buffers: a removal is about 25 small vector operations, each ~1 us in
numpy against ~5 us for a torch operator. The weights are lazy as well (``W`` at the last
flush plus the pending ``a^T v``; the costs' numerators follow each removal in closed form
and are recomputed exactly at every flush). ``W`` and the pending rows ``V`` are stored one
above the other with the live size as leading dimension (re-laid out at each flush, where
``V`` is empty anyway), so a removal's two corrections are one product streaming one
contiguous block (rows ``8 N`` bytes apart thrash the caches when ``N`` is a power of two).
The BLAS calls (that product, the flush GEMMs) go through torch, whose thread count the
caller controls (numpy's BLAS keeps its own thread pool). Beyond the numpy overheads the steps
are bound by memory traffic and the flushes by the rank of their GEMMs (hence ``cap=128``);
benchmarks/README.md has the measured split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import numpy as np
import torch
from torch import Tensor

from widthlab.frontier._threads import threads as _threads

__all__ = ["downdate_panels_", "eliminate_columns", "flush_threads"]

_BIG = 2 ** 18  # values of a step's product operand (2 MiB) above which it may use 2 threads


def flush_threads(rate: dict[int, float], n_flush: int, threads: int) -> int:
    """Threads of the next flush on a CPU: every thread and one thread are both timed (``rate``:
    threads -> measured multiply-adds per second; re-timed every 8 flushes) and the faster is
    used: on a shared machine a thread pool can be far slower than one thread."""
    if threads == 1:
        return 1
    untried = [t for t in (threads, 1) if t not in rate]
    if untried:
        return untried[0]
    best = max(rate, key=rate.__getitem__)
    return best if n_flush % 8 else (1 if best != 1 else threads)


def downdate_panels_(p: Tensor, vp: Tensor, edges: list[int], n: int, threads: int,
                     rate: dict[int, float]) -> None:
    """``P -= V^T V`` (``vp`` the ``k`` pending rows) on the lower row panels ``edges`` of the
    live ``n x n`` block of ``p``, one GEMM per panel on ``threads`` threads; the rate
    (multiply-adds per second) is recorded in ``rate[threads]`` for :func:`flush_threads`."""
    t = time.perf_counter()
    with _threads(threads):  # the one compute-bound step
        for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
            if r0 >= n:
                break
            r1 = min(r1, n)
            p[r0:r1, :r1].addmm_(vp[:, r0:r1].t(), vp[:, :r1], alpha=-1)
    rate[threads] = len(vp) * n * n / (time.perf_counter() - t)


class _Columns:
    """``p``: ``(N, N)`` numpy view of the consumed inverse Gram matrix (leading ``n x n``
    block live, lower row panels current up to the pending rows); per position ``qd`` (the
    current diagonal), ``num`` (the current ``w_i^T F w_i``), ``pen`` (0: a live unit, inf: not
    one), ``gid`` (the group's unit, -1: none) and ``idx`` (the original column).

    The weights are lazy too: ``w`` holds ``W`` at the last flush and ``a`` the pending removals'
    ``W_j d^-1/2`` (``W = w - a^T v``); a removal updates ``num`` by the closed form of the
    rank-one change (exact again at every flush), so a step reads ``w`` once instead of three
    times. ``w`` and the pending rows ``v`` are stored one after the other with leading
    dimension ``n`` (``wv``): a step's two corrections are one product streaming both."""

    def __init__(self, ginv: Tensor, weight: Tensor, col: Tensor, units: Tensor,
                 metric: Tensor | None, cap: int, threads: int, panel: int):
        self.pt = ginv
        self.p = ginv.numpy()
        n = self.n = self.n0 = self.p.shape[0]
        w = weight.detach().to(device="cpu", dtype=torch.float64)
        self.c = int(w.shape[0])
        self.f = None if metric is None else metric.detach().to("cpu", torch.float64)
        self.cap, self.threads = cap, threads
        # W (C rows) then the pending rows v (cap rows), leading dimension n: one stream
        self.buf = np.empty((self.c + cap) * n)
        self.buf[:self.c * n] = w.contiguous().reshape(-1).numpy()
        self.a = np.empty((cap, self.c))
        self.x = np.zeros((2, self.c + cap))  # the step's left factor (row 0: 0 against W)
        self.ybuf = np.empty(2 * n)
        self.pending = 0
        self.rate: dict[int, float] = {}
        self.n_flush = 0
        self.step_threads = 1  # of a step's product with [W; v] when large (see flush)
        size = max(panel, -(-n // 8))  # fixed row panels of the lower-triangle flushes
        size = n if 2 * size > n else size
        self.edges = list(range(0, n, size)) + [n]
        self.qd = self.p.diagonal().copy()
        c0, u = col.cpu().numpy(), units.cpu().numpy()
        self.gid = np.full(n, -1, dtype=np.int64)
        self.gid[c0] = u
        self.pen = np.full(n, np.inf)
        self.pen[c0] = 0.0
        self.idx = np.arange(n)
        self.dead_pos: list[int] = []
        self.num, self.cost, self.tmp, self.g = (np.empty(n) for _ in range(4))
        self._views()
        self._exact_num()

    def _views(self) -> None:
        """numpy and torch views of the flat buffers with the live size as leading dimension:
        ``v`` (cap, n), ``w`` (C, n) and the step's product ``y`` (2, n)."""
        n, c = self.n, self.c
        self.wv = self.buf[:(c + self.cap) * n].reshape(c + self.cap, n)
        self.w, self.v = self.wv[:c], self.wv[c:]
        self.y = self.ybuf[:2 * n].reshape(2, n)
        self.wvt, self.wt, self.vt, self.yt = (torch.from_numpy(x) for x in
                                               (self.wv, self.w, self.v, self.y))

    def _exact_num(self) -> None:
        fw = self.w if self.f is None else torch.mm(self.f, self.wt).numpy()
        np.einsum("ij,ij->j", self.w, fw, out=self.num[:self.n])

    def pick(self) -> tuple[int, float]:
        """The position of the cheapest live unit and its cost."""
        n = self.n
        cost = self.cost[:n]
        np.divide(self.num[:n], self.qd[:n], out=cost)
        cost += self.pen[:n]
        j = int(cost.argmin())  # the first of equals
        return j, float(cost[j])

    def remove(self, j: int) -> None:
        """Remove the unit at position ``j``: its current row of ``P`` (pending rows applied)
        scaled by ``d^-1/2`` becomes the pending row ``v``, ``W_j d^-1/2`` the pending ``a``;
        ``num += v (a^T F a v - 2 (F a)^T W)`` (the change of ``w_i^T F w_i`` under
        ``W -= a v^T``)."""
        n, k, c = self.n, self.pending, self.c
        r1 = j + 1  # the lower triangle only: row j up to the diagonal, then column j
        v, y, g, ak = self.v[k], self.y, self.g[:n], self.a[:k]
        x = self.x[:, :c + k]
        vj = x[0, c:]
        vj[:] = self.v[:k, j]
        wj = self.w[:, j] - vj @ ak  # the current W_j
        fwj = wj if self.f is None else torch.mv(self.f, torch.from_numpy(wj)).numpy()
        # one product with [W; v_:k] (one stream): y0 = v^T v_:,j (the pending part of row
        # j), y1 = W^T F W_j - v^T (a F W_j) = (F W_j)^T (W - a^T v), the current weights
        x[1, :c] = fwj
        np.dot(ak, -fwj, out=x[1, c:])
        if self.step_threads > 1 and (c + k) * n >= _BIG:  # past one core's L2: split
            torch.set_num_threads(self.step_threads)
            torch.mm(torch.from_numpy(x), self.wvt[:c + k], out=self.yt)
            torch.set_num_threads(1)
        else:
            torch.mm(torch.from_numpy(x), self.wvt[:c + k], out=self.yt)
        np.subtract(self.p[j, :r1], y[0, :r1], out=v[:r1])
        np.subtract(self.p[r1:n, j], y[0, r1:], out=v[r1:])
        s = float(v[j]) ** -0.5
        v *= s
        np.multiply(y[1], 2 * s, out=g)  # 2 (F a)^T W
        tmp = self.tmp[:n]
        np.multiply(v, s * s * float(wj @ fwj), out=tmp)
        tmp -= g
        tmp *= v
        self.num[:n] += tmp
        self.a[k] = wj * s
        np.multiply(v, v, out=tmp)
        np.subtract(self.qd[:n], tmp, out=self.qd[:n])
        self.qd[j] = 1.0
        self.pen[j] = np.inf
        self.dead_pos.append(j)
        self.pending += 1
        if self.pending == self.cap:
            self.flush()

    def flush(self) -> None:
        """Move the live positions to the front, then apply the pending rows to the lower row
        panels of the live block (one GEMM per panel)."""
        if self.dead_pos:
            self._compact()
        k, n = self.pending, self.n
        if not k:
            return
        vp = self.vt[:k]
        self.wt.addmm_(torch.from_numpy(self.a[:k]).t(), vp, alpha=-1)  # W -= a^T v
        self.n_flush += 1
        downdate_panels_(self.pt, vp, self.edges, n,
                         flush_threads(self.rate, self.n_flush, self.threads), self.rate)
        self.pending = 0
        # a free second core (the flush ran 1.4x faster on every thread than on one) also
        # takes half of the steps' large products, whose operand then fits the cores' caches
        r1, rt = self.rate.get(1), self.rate.get(self.threads)
        self.step_threads = self.threads if r1 and rt and rt > 1.4 * r1 else 1
        self._exact_num()

    def _relayout(self, buf: np.ndarray, rows: int, n2: int, holes: np.ndarray,
                  srcs: np.ndarray) -> None:
        """``rows`` rows of leading dimension ``n`` in ``buf`` -> leading dimension ``n2``,
        column ``srcs`` moved to ``holes``."""
        a = buf[:rows * self.n].reshape(rows, self.n)
        new = a[:, :n2].copy()
        new[:, holes] = a[:, srcs]
        buf[:rows * n2] = new.reshape(-1)

    def _compact(self) -> None:
        """Fill the dead positions below the new size with the live ones above it (their rows
        and columns moved) and shrink the live block."""
        n, p = self.n, self.p
        dead = np.zeros(n, dtype=bool)
        dead[self.dead_pos] = True
        n2 = n - len(self.dead_pos)
        self.dead_pos = []
        holes = np.flatnonzero(dead[:n2])
        srcs = np.flatnonzero(~dead[n2:]) + n2
        if len(holes):  # a moved row is current up to n2 (its panel starts above n2)
            r = p[srcs, :n2]
            sub = p[np.ix_(srcs, srcs)]  # among the moved: from the row or from the column
            r[:, holes] = np.where(srcs[None, :] <= srcs[:, None], sub, sub.T)  # lower
            p[holes, :n2] = r
            self._put_columns(holes, r, n2)
            for a in (self.qd, self.pen, self.gid, self.idx):
                a[holes] = a[srcs]
        self._relayout(self.buf, self.c + self.pending, n2, holes, srcs)
        self.n = n2
        self._views()

    def _put_columns(self, holes: np.ndarray, r: np.ndarray, n2: int) -> None:
        """``P[i, holes] = r[:, i]`` for the rows ``i`` that are not stale there: from the
        first row of each hole's panel on."""
        for r0, r1 in zip(self.edges[:-1], self.edges[1:], strict=True):
            if r0 >= n2:
                break
            sel = np.flatnonzero((holes >= r0) & (holes < r1))
            if len(sel):
                self.p[r0:n2][:, holes[sel]] = r[sel, r0:n2].T

    def snapshot(self) -> Tensor:
        k = self.pending
        w = self.wt.addmm(torch.from_numpy(self.a[:k]).t(), self.vt[:k], alpha=-1).numpy()
        w[:, self.dead_pos] = 0.0
        full = np.zeros((self.c, self.n0))
        full[:, self.idx[:self.n]] = w
        return torch.from_numpy(full)


def eliminate_columns(ginv: Tensor, weight: Tensor, col: Tensor, units: Tensor,
                      metric: Tensor | None, n_units: int, *, cap: int, threads: int,
                      panel: int, keep_at: Collection[int] = (),
                      on_step: Callable[[int], None] | None = None
                      ) -> tuple[list[int], list[float], dict[int, tuple[Tensor, list[Tensor]]]]:
    """Greedy removal of all units but one, every unit read through one column ``col[u]`` of
    one consumer (``ginv`` a contiguous CPU float64 tensor, consumed); returns the order, the
    costs and the snapshots of :func:`widthlab.frontier.block_obs.eliminate_blocks`."""
    s = _Columns(ginv, weight, col, units, metric, cap, threads, panel)
    alive = np.ones(n_units, dtype=bool)
    order: list[int] = []
    costs: list[float] = []
    snaps: dict[int, tuple[Tensor, list[Tensor]]] = {}
    wanted = {int(k) for k in keep_at}
    if n_units in wanted:
        snaps[n_units] = (torch.arange(n_units), [s.snapshot()])
    with _threads(1):  # the steps' BLAS-2 calls: one thread (the flushes pick their own)
        for k in range(n_units - 1, 0, -1):
            j, cost = s.pick()
            u = int(s.gid[j])
            order.append(u)
            costs.append(cost)
            alive[u] = False
            s.remove(j)
            if k in wanted:
                snaps[k] = (torch.from_numpy(np.flatnonzero(alive)), [s.snapshot()])
            if on_step is not None:
                on_step(k)
    order.append(int(np.flatnonzero(alive)[0]))
    costs.append(float("nan"))
    return order, costs, snaps
