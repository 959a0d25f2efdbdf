"""Greedy structured optimal-brain-surgeon elimination of units read through blocks of columns.

A consumer ``z = x W^T`` (``W``: ``C x N``, a bias being one more column read against a ones
column) reads each unit of a group through a block ``M`` of its input columns: one column (a
Linear's input neuron), ``k*k`` columns (a Conv2d input channel in im2col form), ``head_dim``
columns (an attention head read by the output projection). With ``P = G^-1`` the (damped)
inverse Gram matrix of the consumer's input rows, removing a unit and refitting the remaining
weights by least squares costs (Kurtic et al. 2022, ZipLM 2023: structured OBS)

    dE = tr(W_M (P_MM)^-1 W_M^T)                     (mean squared output error)

and the refitted weights and the inverse Gram matrix of the kept columns are

    W <- W - W_M (P_MM)^-1 P[M, :],       P <- P - P[:, M] (P_MM)^-1 P[M, :].

With ``P_MM = L L^T`` the downdate is ``P <- P - V^T V`` for ``V = L^-1 P[M, :]`` (``b`` rows).
Greedy elimination removes the cheapest unit ``U - 1`` times; every prefix of the order comes
with its exactly refitted consumer(s). A unit read by several consumers (a concatenation feeding
two branches, or the conv groups of a grouped convolution, each its own least-squares problem)
costs the sum over its consumers, each of which is refitted.

Speed: the downdates are lazy (the pending ``V`` rows are applied in one GEMM once ``cap`` rows
have accumulated; a chosen unit's rows of ``P`` and the diagonal blocks ``P_uu`` of every unit are
corrected from the pending rows meanwhile), and the dead rows and columns are dropped when a
quarter of the matrix is dead, so the work is ``~ N^3 / 3`` multiply-adds in GEMMs plus
``O(cap N)`` memory traffic per removal. With one column per unit it is step for step the
computation of :func:`widthlab.frontier.obs.eliminate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from widthlab.errors import UsageError
from widthlab.frontier._threads import threads as _threads

__all__ = ["BlockElimination", "BlockProblem", "eliminate_blocks"]


@dataclass
class BlockProblem:
    """One consumer's least-squares problem.

    ``ginv``: ``(N, N)`` float64 inverse (damped) Gram matrix of its input rows (consumed);
    ``weight``: ``(C, N)`` its weights (bias included as a column if refitted; not modified);
    ``cols``: ``(U_c, b)`` the input columns of each unit it reads (columns in no block are
    never removed); ``units``: ``(U_c,)`` the group's unit index of each row of ``cols``;
    ``metric``: optional ``(C, C)`` PSD weight of the outputs in the cost (the refit is the same).
    """

    ginv: Tensor
    weight: Tensor
    cols: Tensor
    units: Tensor
    metric: Tensor | None = None


@dataclass
class BlockElimination:
    """``order``: all ``U`` units in removal order (the last one never removed); ``costs``: the
    increase of the summed mean squared error at each removal (the last NaN); ``snapshots``:
    ``{k: (kept units ascending (k,), [refitted (C, N) weights per problem, removed columns 0])}``.
    """

    order: list[int]
    costs: list[float]
    snapshots: dict[int, tuple[Tensor, list[Tensor]]] = field(default_factory=dict)


class _State:
    """The working copy of one problem: ``P`` minus pending rows ``V``, refitted ``W``, the
    diagonal blocks ``Q`` of every live unit, positions of the live columns."""

    def __init__(self, prob: BlockProblem, cap: int, threads: int):
        self.p = prob.ginv
        n = self.p.shape[0]
        self.w = prob.weight.detach().to(device=self.p.device, dtype=torch.float64).clone()
        self.f = None if prob.metric is None else prob.metric.to(self.w)
        self.n0 = n
        self.b = int(prob.cols.shape[1])
        self.cap = max(int(cap), self.b)
        self.v = self.p.new_empty(self.cap, n)
        self.pending = 0
        self.threads = threads
        self.rate: dict[int, float] = {}  # flush threads -> measured multiply-adds per second
        self.n_flush = 0
        self.idx = torch.arange(n, device=self.p.device)  # original column of each position
        self._set_units(prob.cols.to(self.p.device), prob.units.to(self.p.device))
        cols = self.cols
        if self.b == 1:
            self.q = self.p.diagonal()[cols[:, 0]].clone()
        else:
            flat = cols.reshape(-1)
            self.q = self.p[flat][:, flat].view(len(cols), self.b, len(cols), self.b)
            self.q = torch.diagonal(self.q, dim1=0, dim2=2).permute(2, 0, 1).contiguous()
        self.dead = torch.zeros(len(cols), dtype=torch.bool, device=self.p.device)
        self.n_dead_cols = 0

    def _set_units(self, cols: Tensor, units: Tensor) -> None:
        self.cols, self.units = cols, units
        self.loc = {int(u): i for i, u in enumerate(units.tolist())}
        c0 = cols[:, 0]
        # one column per unit at positions 0..U_c-1: slices instead of gathers
        self.head = self.b == 1 and bool((c0 == torch.arange(len(c0), device=c0.device)).all())
        self.c_list = cols.tolist()

    def costs(self) -> Tensor:
        """The removal cost of every live local unit (dead ones: 0)."""
        w = self.w
        if self.b == 1:
            num = (w * w).sum(0) if self.f is None else (w * (self.f @ w)).sum(0)
            num = num[:len(self.q)] if self.head else num[self.cols[:, 0]]
            return num.div_(self.q)
        wm = w[:, self.cols].permute(1, 2, 0)  # (U_c, b, C)
        chol = torch.linalg.cholesky_ex(self.q)[0]
        y = torch.linalg.solve_triangular(chol, wm, upper=False)
        if self.f is None:
            return y.square().sum((1, 2))
        fy = torch.linalg.solve_triangular(chol, (self.f @ w)[:, self.cols].permute(1, 2, 0),
                                           upper=False)
        return (y * fy).sum((1, 2))

    def remove(self, u: int) -> None:
        """Remove local unit ``u``: refit ``W``, queue the downdate of ``P``, correct ``Q``."""
        n, v = self.pending, self.v
        if self.b == 1:
            j = self.c_list[u][0]
            r = torch.addmv(self.p[j], v[:n].t(), v[:n, j], alpha=-1) if n else self.p[j].clone()
            d = float(r[j])
            self.w.addr_(self.w[:, j].clone(), r, alpha=-1 / d)
            self.w[:, j] = 0
            vn = v[n]
            torch.mul(r, d ** -0.5, out=vn)
            vq = vn[:len(self.q)] if self.head else vn[self.cols[:, 0]]
            self.q.addcmul_(vq, vq, value=-1)
            self.q[u] = 1.0
        else:
            m = self.cols[u]
            r = self.p.index_select(0, m)
            if n:
                r.addmm_(v[:n].index_select(1, m).t(), v[:n], alpha=-1)
            chol = torch.linalg.cholesky(r[:, m])
            vn = v[n:n + self.b]
            torch.linalg.solve_triangular(chol, r, upper=False, out=vn)
            x = torch.linalg.solve_triangular(chol, self.w[:, m].t(), upper=False)
            self.w.addmm_(x.t(), vn, alpha=-1)
            self.w[:, m] = 0
            vc = vn[:, self.cols.reshape(-1)].view(self.b, len(self.cols), self.b)
            self.q -= torch.einsum("kui,kuj->uij", vc, vc)
            self.q[u] = torch.eye(self.b, dtype=self.q.dtype, device=self.q.device)
        self.dead[u] = True
        self.pending += self.b
        self.n_dead_cols += self.b
        if self.pending + self.b > self.cap:
            self.flush()

    def _flush_threads(self) -> int:
        """Threads of the next flush: on a CPU, every thread and one thread are both timed
        (and re-timed every 8 flushes) and the faster is used: on a shared machine a thread
        pool can be far slower than one thread."""
        if self.p.device.type != "cpu" or self.threads == 1:
            return self.threads
        self.n_flush += 1
        untried = [t for t in (self.threads, 1) if t not in self.rate]
        if untried:
            return untried[0]
        best = max(self.rate, key=self.rate.__getitem__)
        return best if self.n_flush % 8 else (1 if best != 1 else self.threads)

    def flush(self) -> None:
        if self.pending:
            vp = self.v[:self.pending]
            th = self._flush_threads()
            t = time.perf_counter()
            with _threads(th):  # the one compute-bound step
                self.p.addmm_(vp.t(), vp, alpha=-1)
            self.rate[th] = self.pending * self.p.shape[0] ** 2 / (time.perf_counter() - t)
            self.pending = 0
        n = self.p.shape[0]
        if self.n_dead_cols * 4 >= n and self.n_dead_cols >= 64:
            self._compact()

    def _compact(self) -> None:
        """Drop the dead units' rows and columns (after a flush: nothing pending)."""
        keep_mask = torch.ones(self.p.shape[0], dtype=torch.bool, device=self.p.device)
        keep_mask[self.cols[self.dead].reshape(-1)] = False
        keep = torch.nonzero(keep_mask).flatten()
        with _threads(self.threads):
            if self.p.device.type == "cpu":
                k = keep.numpy()
                self.p = torch.from_numpy(np.ascontiguousarray(self.p.numpy()[np.ix_(k, k)]))
            else:
                self.p = self.p.index_select(0, keep).index_select(1, keep)
            self.w = self.w.index_select(1, keep)
        pos = torch.cumsum(keep_mask, 0) - 1
        alive = ~self.dead
        self.idx = self.idx[keep]
        self.q = self.q[alive].contiguous()
        self._set_units(pos[self.cols[alive]], self.units[alive])
        self.dead = self.dead[alive]
        self.v = self.p.new_empty(self.cap, len(keep))
        self.n_dead_cols = 0

    def snapshot(self) -> Tensor:
        full = self.w.new_zeros(self.w.shape[0], self.n0)
        full[:, self.idx] = self.w
        return full


def _check(problems: Sequence[BlockProblem], n_units: int) -> None:
    if not problems:
        raise UsageError("eliminate_blocks needs at least one consumer problem")
    seen = torch.zeros(n_units, dtype=torch.bool)
    for i, pr in enumerate(problems):
        n = pr.weight.shape[1]
        if pr.ginv.shape != (n, n) or pr.ginv.dtype != torch.float64:
            raise UsageError(f"consumer {i}: the inverse Gram matrix must be float64 of shape "
                             f"({n}, {n}), got {pr.ginv.dtype} {tuple(pr.ginv.shape)}")
        if pr.cols.ndim != 2 or pr.units.shape != (len(pr.cols),) or not len(pr.cols):
            raise UsageError(f"consumer {i}: cols must be (units, b) and units (units,), got "
                             f"{tuple(pr.cols.shape)} and {tuple(pr.units.shape)}")
        flat = pr.cols.reshape(-1)
        if int(flat.min()) < 0 or int(flat.max()) >= n or len(flat.unique()) != len(flat):
            raise UsageError(f"consumer {i}: the unit blocks must be distinct columns in "
                             f"[0, {n}) of its weight")
        if int(pr.units.min()) < 0 or int(pr.units.max()) >= n_units:
            raise UsageError(f"consumer {i}: unit ids must lie in [0, {n_units})")
        seen[pr.units.cpu()] = True
    if not bool(seen.all()):
        missing = torch.nonzero(~seen).flatten().tolist()[:5]
        raise UsageError(f"units {missing} are read by no consumer; every unit needs one")


def eliminate_blocks(problems: Sequence[BlockProblem], n_units: int, *, cap: int = 128,
                     keep_at: Collection[int] = (),
                     on_step: Callable[[int], None] | None = None) -> BlockElimination:
    """Greedy structured OBS removal of all units but one (see the module docstring).

    Parameters
    ----------
    problems : sequence of BlockProblem
        One per consumer (their ``ginv`` are consumed: replaced by empty tensors, so that the
        matrices are freed as the elimination compacts them).
    n_units : int
        The number ``U`` of units of the group.
    cap : int
        Pending downdate rows gathered before one GEMM applies them (speed only).
    keep_at : collection of int
        Numbers of kept units at which to copy the refitted weights into ``snapshots``.
    on_step : callable, optional
        Called with the number of kept units after every removal (progress).
    """
    _check(problems, n_units)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise UsageError(f"cap must be a positive integer, got {cap!r}")
    threads = torch.get_num_threads()
    states = [_State(p, cap, threads) for p in problems]
    for p in problems:  # consumed: the caller's reference no longer pins the big matrix
        p.ginv = p.ginv.new_empty(0)
    dev = states[0].p.device
    dead = torch.zeros(n_units, dtype=torch.float64, device=dev)  # 0 alive, inf removed
    res = BlockElimination([], [])
    wanted = {int(k) for k in keep_at}
    if n_units in wanted:
        res.snapshots[n_units] = (torch.arange(n_units, device=dev), [s.snapshot() for s in states])
    # the steps are chains of small latency-bound kernels: one CPU thread runs them faster
    # than a pool (which stalls on a busy machine); the flushes use every thread
    with _threads(1 if dev.type == "cpu" else threads):
        for k in range(n_units - 1, 0, -1):
            if len(states) == 1 and states[0].head and len(states[0].q) == n_units:
                score = states[0].costs().add_(dead)
            else:
                score = dead.clone()
                for s in states:
                    score.index_add_(0, s.units, s.costs())
            u = int(torch.argmin(score))
            res.order.append(u)
            res.costs.append(float(score[u]))
            dead[u] = float("inf")
            for s in states:
                if u in s.loc:
                    s.remove(s.loc[u])
            if k in wanted:
                kept = torch.nonzero(dead == 0).flatten()
                res.snapshots[k] = (kept, [s.snapshot() for s in states])
            if on_step is not None:
                on_step(k)
    res.order.append(int(torch.nonzero(dead == 0).flatten()[0]))
    res.costs.append(float("nan"))
    return res
