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

Speed: the downdates are lazy (the pending ``V`` rows are applied once ``cap`` rows have
accumulated; a chosen unit's row of ``P`` and the diagonal (blocks) of every unit are corrected
from the pending rows meanwhile). A flush first moves the live positions above the new size into
the dead ones' places below it (their rows and columns only; nothing else is copied, the live
block stays the leading ``n x n`` block of the one buffer), then updates only the lower row
panels of the live block (up to 8 fixed panels of >= 512 rows: about 9/16 of the full update's
flops, one GEMM per panel); the stale rest of a row is read from its column below. So the
work is about ``(9/16) N^3 / 3`` multiply-adds in GEMMs plus ``O(cap N)`` memory traffic per
removal. With one column per unit it is the computation of
:func:`widthlab.frontier.obs.eliminate`; one such consumer on the CPU runs the same algorithm
with numpy steps (:mod:`widthlab.frontier.column_cpu`), every other case (other devices, blocks,
several consumers) the torch steps below.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from widthlab.errors import UsageError
from widthlab.frontier._threads import threads as _threads
from widthlab.frontier.column_cpu import downdate_panels_, eliminate_columns, flush_threads

__all__ = ["BlockElimination", "BlockProblem", "eliminate_blocks"]

_PANEL = 512  # smallest row panel of the lower-triangle flushes (tests make it small)
_NUMPY_STEPS = True  # one one-column consumer on the CPU: column_cpu (tests turn it off)


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
    """The working copy of one problem (see the module docstring's "Speed").

    ``p``: the caller's ``(N, N)`` buffer; its leading ``n x n`` block holds the live positions
    (``idx``: the original column at each position) and, on and below the row panels' diagonal
    blocks, ``P`` minus the pending rows ``v[:pending]``; the rest of each row is stale (its
    current values are read from the column below). ``w``: refitted weights (positions).
    One column per unit (``b == 1``): per position the diagonal ``qd``, the global unit ``gid``
    (``n_units``: none), the local unit ``slot`` (-1: none) and a penalty ``pen`` (``inf``: not
    a live unit). Otherwise per local unit: column
    positions ``cols`` and diagonal blocks ``q``.
    """

    def __init__(self, prob: BlockProblem, n_units: int, cap: int, threads: int):
        self.p = prob.ginv
        n = self.n = self.n0 = self.p.shape[0]
        dev = self.p.device
        self.w = prob.weight.detach().to(device=dev, dtype=torch.float64).clone()
        self.f = None if prob.metric is None else prob.metric.to(self.w)
        self.b = int(prob.cols.shape[1])
        self.cap = max(int(cap), self.b)
        self.v = self.p.new_empty(self.cap, n)
        self.buf = self.p.new_empty(n)
        self.pending = 0
        self.threads = threads
        self.rate: dict[int, float] = {}  # flush threads -> measured multiply-adds per second
        self.n_flush = 0
        size = max(_PANEL, -(-n // 8))  # fixed row panels of the lower-triangle flushes
        size = n if 2 * size > n else size
        self.edges = list(range(0, n, size)) + [n]
        self.r1 = [min(e + size, n) for e in range(0, n, size) for _ in range(min(size, n - e))]
        self.idx = torch.arange(n, device=dev)
        self.dead_pos: list[int] = []
        cols, units = prob.cols.to(dev), prob.units.to(dev)
        self.units = units
        self.ulist = units.tolist()
        self.loc = {u: i for i, u in enumerate(self.ulist)}
        self.cols, self.c_list = cols, cols.tolist()
        self.dead = torch.zeros(len(cols), dtype=torch.bool, device=dev)
        if self.b == 1:
            c0 = cols[:, 0]
            self.qd = self.p.diagonal().clone()
            self.gid = torch.full((n,), n_units, dtype=torch.long, device=dev)  # global unit
            self.gid[c0] = units
            self.pen = torch.full((n,), float("inf"), dtype=torch.float64, device=dev)
            self.pen[c0] = 0.0
            self.slot = [-1] * n  # position -> local unit
            for i, c in enumerate(c0.tolist()):
                self.slot[c] = i
            self.pos = c0.tolist()  # local unit -> position
        else:
            flat = cols.reshape(-1)
            q = self.p[flat][:, flat].view(len(cols), self.b, len(cols), self.b)
            self.q = torch.diagonal(q, dim1=0, dim2=2).permute(2, 0, 1).contiguous()

    def rows(self, pos: Sequence[int]) -> Tensor:
        """The current rows of ``P`` (pending rows applied) at positions ``pos``."""
        out, k = self.stale_rows(pos), self.pending
        if k:
            vp = self.v[:k, :self.n]
            out.addmm_(vp[:, list(pos)].t(), vp, alpha=-1)
        return out

    def unit_costs(self) -> Tensor:
        """``b == 1``: the removal cost at every position (dead and non-units: 0 or any);
        otherwise of every local unit (dead: 0)."""
        w = self.w[:, :self.n]
        if self.b == 1:
            num = (w * w).sum(0) if self.f is None else (w * (self.f @ w)).sum(0)
            return num.div_(self.qd[:self.n])
        wm = w[:, self.cols].permute(1, 2, 0)  # (U_c, b, C)
        chol = torch.linalg.cholesky_ex(self.q)[0]
        y = torch.linalg.solve_triangular(chol, wm, upper=False)
        if self.f is None:
            return y.square().sum((1, 2))
        fy = torch.linalg.solve_triangular(chol, (self.f @ w)[:, self.cols].permute(1, 2, 0),
                                           upper=False)
        return (y * fy).sum((1, 2))

    def _row(self, j: int) -> Tensor:
        """The current row ``j`` of ``P`` (``b == 1``'s step: into a reused buffer)."""
        n, k = self.n, self.pending
        r1 = self.r1[j] if self.r1[j] < n else n
        row = self.buf[:n]
        row[:r1] = self.p[j, :r1]
        if r1 < n:
            row[r1:] = self.p[r1:n, j]
        if k:
            row.addmv_(self.v[:k, :n].t(), self.v[:k, j], alpha=-1)
        return row

    def stale_rows(self, pos: Sequence[int]) -> Tensor:
        """Rows of the stored ``P`` (pending rows not applied), the stale parts read from the
        columns below."""
        n = self.n
        out = self.p.new_empty(len(pos), n)
        for i, j in enumerate(pos):
            r1 = min(self.r1[j], n)
            out[i, :r1] = self.p[j, :r1]
            if r1 < n:
                out[i, r1:] = self.p[r1:n, j]
        return out

    def remove(self, u: int) -> None:
        """Remove local unit ``u``: refit ``W``, queue the downdate of ``P``, correct the
        diagonal (blocks)."""
        n, k, w = self.n, self.pending, self.w[:, :self.n]
        if self.b == 1:
            j = self.pos[u]
            r = self._row(j)
            d = float(r[j])
            w.addr_(w[:, j].clone(), r, alpha=-1 / d)
            w[:, j] = 0
            vn = self.v[k, :n]
            torch.mul(r, d ** -0.5, out=vn)
            self.qd[:n].addcmul_(vn, vn, value=-1)
            self.qd[j] = 1.0
            self.pen[j] = float("inf")
            self.dead_pos.append(j)
        else:
            m = self.c_list[u]
            r = self.rows(m)
            chol = torch.linalg.cholesky(r[:, m])
            vn = self.v[k:k + self.b, :n]
            vn.copy_(torch.linalg.solve_triangular(chol, r, upper=False))
            x = torch.linalg.solve_triangular(chol, w[:, m].t(), upper=False)
            w.addmm_(x.t(), vn, alpha=-1)
            w[:, m] = 0
            vc = vn[:, self.cols.reshape(-1)].view(self.b, len(self.cols), self.b)
            self.q -= torch.einsum("kui,kuj->uij", vc, vc)
            self.q[u] = torch.eye(self.b, dtype=self.q.dtype, device=self.q.device)
            self.dead_pos.extend(m)
        self.dead[u] = True
        self.pending += self.b
        if self.pending + self.b > self.cap:
            self.flush()

    def _flush_threads(self) -> int:
        """Threads of the next flush: on a CPU, every thread and one thread are both timed
        (and re-timed every 8 flushes) and the faster is used: on a shared machine a thread
        pool can be far slower than one thread."""
        if self.p.device.type != "cpu":
            return self.threads
        self.n_flush += 1
        return flush_threads(self.rate, self.n_flush, self.threads)

    def flush(self) -> None:
        """Move the live positions to the front, then apply the pending rows to the lower row
        panels of the live block (one GEMM per panel)."""
        if self.dead_pos:
            self._compact()
        k, n = self.pending, self.n
        if not k:
            return
        vp = self.v[:k]
        downdate_panels_(self.p, vp, self.edges, n, self._flush_threads(), self.rate)
        self.pending = 0

    def _compact(self) -> None:
        """Fill the dead positions below the new size with the live ones above it (their rows
        and columns moved; nothing else is copied) and shrink the live block."""
        n, dev = self.n, self.p.device
        dead = torch.zeros(n, dtype=torch.bool, device=dev)
        dead[self.dead_pos] = True
        n2 = n - len(self.dead_pos)
        self.dead_pos = []
        holes = torch.nonzero(dead[:n2]).flatten()
        srcs = torch.nonzero(~dead[n2:]).flatten() + n2
        if len(holes):
            r = self.stale_rows(srcs.tolist())
            r[:, holes] = r[:, srcs]
            r = r[:, :n2]
            self.p[holes, :n2] = r
            self._put_columns(holes, r, n2)
            self.v[:self.pending, holes] = self.v[:self.pending, srcs]
            self.w[:, holes] = self.w[:, srcs]
            self.idx[holes] = self.idx[srcs]
        self.n = n2
        if self.b == 1:
            if len(holes):
                for a in (self.qd, self.gid, self.pen):
                    a[holes] = a[srcs]
                for h, s in zip(holes.tolist(), srcs.tolist(), strict=True):
                    self.slot[h] = self.slot[s]
                    if self.slot[h] >= 0:
                        self.pos[self.slot[h]] = h
            return
        newpos = torch.arange(n, device=dev)
        newpos[srcs] = holes
        alive = ~self.dead
        self.q = self.q[alive].contiguous()
        self.cols, self.units = newpos[self.cols[alive]], self.units[alive]
        self.c_list = self.cols.tolist()
        self.loc = {int(u): i for i, u in enumerate(self.units.tolist())}
        self.dead = self.dead[alive]

    def _put_columns(self, holes: Tensor, r: Tensor, n2: int) -> None:
        """``P[i, holes] = r[:, i]`` for the rows ``i`` that are not stale there: from the
        first row of each hole's panel on (numpy's row-major scatter on a CPU)."""
        cpu = self.p.device.type == "cpu"
        hl = holes.tolist()
        for r0, r1 in zip(self.edges[:-1], self.edges[1:], strict=True):
            if r0 >= n2:
                break
            sel = [i for i, h in enumerate(hl) if r0 <= h < r1]
            if not sel:
                continue
            part = r[sel, r0:n2].t()
            if cpu:
                self.p[r0:n2].numpy()[:, holes[sel].numpy()] = part.numpy()
            else:
                self.p[r0:n2, holes[sel]] = part

    def snapshot(self) -> Tensor:
        full = self.w.new_zeros(self.w.shape[0], self.n0)
        full[:, self.idx[:self.n]] = self.w[:, :self.n]
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
        if len(pr.units.unique()) != len(pr.units):
            raise UsageError(f"consumer {i}: a unit appears in several rows of cols; give all "
                             "of a unit's columns as one block (one row)")
        seen[pr.units.cpu()] = True
    if not bool(seen.all()):
        missing = torch.nonzero(~seen).flatten().tolist()[:5]
        raise UsageError(f"units {missing} are read by no consumer; every unit needs one")


def reads_lower_only(n_problems: int, b: int, ginv: Tensor) -> bool:
    """Whether :func:`eliminate_blocks` takes the CPU column steps
    (:mod:`widthlab.frontier.column_cpu`: one consumer, one column per unit, a contiguous CPU
    matrix), which read only the lower triangle of ``ginv`` (its transpose if it is not
    contiguous)."""
    m = ginv if ginv.is_contiguous() else ginv.t()
    return (_NUMPY_STEPS and n_problems == 1 and b == 1 and m.device.type == "cpu"
            and m.is_contiguous())


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
    pr = problems[0]
    # P is symmetric: a column-major one (LAPACK's) is its row-major transpose
    ginv = pr.ginv if pr.ginv.is_contiguous() else pr.ginv.t()
    if reads_lower_only(len(problems), int(pr.cols.shape[1]), ginv):
        pr.ginv = pr.ginv.new_empty(0)  # consumed
        order, costs, snaps = eliminate_columns(
            ginv, pr.weight, pr.cols[:, 0], pr.units, pr.metric, n_units, cap=cap,
            threads=threads, panel=_PANEL, keep_at=keep_at, on_step=on_step)
        return BlockElimination(order, costs, snaps)
    states = [_State(p, n_units, cap, threads) for p in problems]
    for p in problems:  # consumed: the caller's reference no longer pins the big matrix
        p.ginv = p.ginv.new_empty(0)
    dev = states[0].p.device
    # 0 alive, inf removed; one more slot for the columns that are no unit
    dead = torch.zeros(n_units + 1, dtype=torch.float64, device=dev)
    dead[n_units] = float("inf")
    res = BlockElimination([], [])
    wanted = {int(k) for k in keep_at}
    if n_units in wanted:
        res.snapshots[n_units] = (torch.arange(n_units, device=dev), [s.snapshot() for s in states])
    # the steps are chains of small latency-bound kernels: one CPU thread runs them faster
    # than a pool (which stalls on a busy machine); the flushes pick their thread count
    with _threads(1 if dev.type == "cpu" else threads):
        for k in range(n_units - 1, 0, -1):
            u, cost = _pick(states, dead)
            res.order.append(u)
            res.costs.append(cost)
            dead[u] = float("inf")
            for s in states:
                if u in s.loc:
                    s.remove(s.loc[u])
            if k in wanted:
                kept = torch.nonzero(dead[:n_units] == 0).flatten()
                res.snapshots[k] = (kept, [s.snapshot() for s in states])
            if on_step is not None:
                on_step(k)
    res.order.append(int(torch.nonzero(dead[:n_units] == 0).flatten()[0]))
    res.costs.append(float("nan"))
    return res


def _pick(states: Sequence[_State], dead: Tensor) -> tuple[int, float]:
    """The cheapest live unit and its cost summed over its consumers."""
    if len(states) == 1 and states[0].b == 1:  # one consumer reads every unit: by position
        s = states[0]
        val, j = torch.min(s.unit_costs().add_(s.pen[:s.n]), 0)  # the first of equals
        return s.ulist[s.slot[int(j)]], float(val)
    score = dead.clone()
    for s in states:
        if s.b == 1:
            score.index_add_(0, s.gid[:s.n], s.unit_costs())
        else:
            score.index_add_(0, s.units, s.unit_costs())
    u = int(torch.argmin(score[:-1]))
    return u, float(score[u])
