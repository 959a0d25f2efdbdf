"""Block structured OBS against brute-force least squares (numpy float64, columns dropped).

The references build their own rows: a Linear's inputs as they are, a Conv2d's patches by an
explicit loop over output positions (not ``F.unfold``), the refit target from ``F.conv2d``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier import block_obs
from widthlab.frontier.blocks import conv_consumers, heads_consumer, linear_consumer
from widthlab.frontier.group import group_frontier

D = torch.float64


@pytest.fixture(autouse=True, params=[512, 2], ids=["one-panel", "small-panels"])
def _panels(request, monkeypatch):
    """Every test twice: one row panel (full flushes), and panels of >= 2 rows (lower-triangle
    flushes, the stale parts of rows read from columns; up to 8 panels)."""
    monkeypatch.setattr(block_obs, "_PANEL", request.param)


def _lstsq_err(A: np.ndarray, Z: np.ndarray, keep: list[int]):
    """Least-squares refit of ``Z`` on columns ``keep`` of ``A``: (mean squared error summed
    over outputs, coefficients (len(keep), C))."""
    V, *_ = np.linalg.lstsq(A[:, keep], Z, rcond=None)
    return ((A[:, keep] @ V - Z) ** 2).mean(0).sum(), V


def _greedy(A: np.ndarray, Z: np.ndarray, blocks: list[list[int]], fixed: list[int]):
    """Brute-force greedy: remove the block whose removal (with refit) errs least, repeatedly.
    Returns the order, the increase of the error at each removal, the refits per width."""
    alive = list(range(len(blocks)))
    order, incs, fits, prev = [], [], {}, 0.0
    while len(alive) > 1:
        best = None
        for u in alive:
            keep = sorted(fixed + [c for v in alive if v != u for c in blocks[v]])
            err, V = _lstsq_err(A, Z, keep)
            if best is None or err < best[0]:
                best = (err, u, keep, V)
        alive.remove(best[1])
        order.append(best[1])
        incs.append(best[0] - prev)
        prev = best[0]
        fits[len(alive)] = (best[2], best[3])
    return order, incs, fits


def _check_against(fr, A, Z, blocks, fixed, w_of_cut, rel=1e-8):
    order, incs, fits = _greedy(A, Z, blocks, fixed)
    assert fr.order[:-1] == order
    np.testing.assert_allclose(fr.costs[:-1], incs, rtol=rel, atol=rel * max(incs))
    for k, (keep, V) in fits.items():
        if k in fr.cuts:
            got = w_of_cut(fr.cuts[k])  # (C, n_cols_total) with the bias last if any
            ref = np.zeros_like(got)
            ref[:, keep] = V.T
            np.testing.assert_allclose(got, ref, rtol=rel, atol=rel * np.abs(ref).max())


@pytest.fixture(params=["numpy", "numpy-2-threads", "torch"],
                ids=["numpy-steps", "numpy-steps-2-threads", "torch-steps"])
def numpy_steps(request, monkeypatch):
    """One consumer reading one column per unit on the CPU: the numpy steps of column_cpu
    (also on two torch threads, every step's product eligible for both: the flushes are timed
    on each count), and the torch steps that every other device runs."""
    monkeypatch.setattr(block_obs, "_NUMPY_STEPS", request.param != "torch")
    if request.param == "numpy-2-threads":
        from widthlab.frontier import column_cpu

        monkeypatch.setattr(column_cpu, "_BIG", 0)  # every product "large"
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        yield True
        torch.set_num_threads(before)
        return
    yield request.param != "torch"


@pytest.mark.parametrize("cap", [128, 2])
def test_linear_block_obs_is_brute_force_greedy(cap, numpy_steps):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 6, generator=g, dtype=D)  # tokens (B, T, C) -> rows
    lin = nn.Linear(6, 4, dtype=D)
    fr = group_frontier([linear_consumer(lin, x)], 6, ks=range(1, 7), damp=0.0, cap=cap)
    rows = x.reshape(-1, 6).numpy()
    A = np.hstack([rows, np.ones((len(rows), 1))])
    Z = A @ torch.cat([lin.weight, lin.bias[:, None]], 1).detach().numpy().T
    _check_against(fr, A, Z, [[i] for i in range(6)], [6],
                   lambda cut: np.hstack([cut.weights[0][0], cut.weights[0][1][:, None]]))


def _patches(x: np.ndarray, conv: nn.Conv2d) -> np.ndarray:
    """im2col by an explicit loop: rows (B*L, C*kh*kw), channel-major columns."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    dh, dw = conv.dilation
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # the dilated kernel's extent
    oh, ow = (h + 2 * ph - eh) // sh + 1, (w + 2 * pw - ew) // sw + 1
    rows = []
    for n in range(b):
        for i in range(oh):
            for j in range(ow):
                patch = xp[n, :, i * sh:i * sh + eh:dh, j * sw:j * sw + ew:dw]
                rows.append(patch.reshape(-1))
    return np.array(rows)


@pytest.mark.parametrize("stride,groups,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1),
                                                    (1, 1, 2), (1, 4, 1), (2, 4, 1)])
def test_conv_block_obs_is_brute_force_greedy(stride, groups, dilation):
    g = torch.Generator().manual_seed(stride * 10 + groups)
    conv = nn.Conv2d(4, 4, 3, stride=stride, padding=1, groups=groups, dilation=dilation,
                     dtype=D)
    x = torch.randn(6, 4, 7, 7, generator=g, dtype=D)
    cons = conv_consumers(conv, x, batch=4)
    assert len(cons) == groups
    fr = group_frontier(cons, 4, ks=range(1, 5), damp=0.0)
    z = F.conv2d(x, conv.weight, conv.bias, stride, 1, dilation, groups).detach().numpy()
    Z = z.transpose(0, 2, 3, 1).reshape(-1, 4)  # rows (B*L, C_out)
    P = _patches(x.numpy(), conv)
    cin, cout = 4 // groups, 4 // groups
    # the reference: one least-squares problem per conv group, its channels' 9-column blocks
    order_ref, incs_ref = [], []
    errs = [0.0] * groups
    alive = [list(range(cin)) for _ in range(groups)]
    while sum(map(len, alive)) > 1:
        best = None
        for gi in range(groups):
            A = np.hstack([P[:, gi * cin * 9:(gi + 1) * cin * 9], np.ones((len(P), 1))])
            for u in alive[gi]:
                keep = [c * 9 + t for c in alive[gi] if c != u for t in range(9)] + [cin * 9]
                err, V = _lstsq_err(A, Z[:, gi * cout:(gi + 1) * cout], keep)
                inc = err - errs[gi]
                if best is None or inc < best[0]:
                    best = (inc, gi, u, err, keep, V)
        inc, gi, u, err, keep, V = best
        alive[gi].remove(u)
        errs[gi] = err
        order_ref.append(gi * cin + u)
        incs_ref.append(inc)
        k = sum(map(len, alive))
        wk, bk = fr.cuts[k].weights[gi if groups > 1 else 0]
        got = np.hstack([wk, bk[:, None]])
        ref = np.zeros_like(got)
        ref[:, keep] = V.T
        np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())
    assert fr.order[:-1] == order_ref
    np.testing.assert_allclose(fr.costs[:-1], incs_ref, rtol=1e-8, atol=1e-10)


def test_attention_heads_block_obs_is_brute_force_greedy():
    g = torch.Generator().manual_seed(3)
    o_proj = nn.Linear(16, 8, dtype=D)  # 4 heads of 4
    x = torch.randn(4, 30, 16, generator=g, dtype=D) * torch.linspace(0.2, 2, 16, dtype=D)
    fr = group_frontier([heads_consumer(o_proj, x, 4)], 4, ks=range(1, 5), damp=0.0)
    rows = x.reshape(-1, 16).numpy()
    A = np.hstack([rows, np.ones((len(rows), 1))])
    Z = A @ torch.cat([o_proj.weight, o_proj.bias[:, None]], 1).detach().numpy().T
    _check_against(fr, A, Z, [list(range(4 * h, 4 * h + 4)) for h in range(4)], [16],
                   lambda cut: np.hstack([cut.weights[0][0], cut.weights[0][1][:, None]]))


@pytest.mark.parametrize("cap", [128, 1])
def test_two_consumers_are_each_refitted_and_costs_add(cap):
    """A concatenation feeding two branches: 5 units read by two Linears, each also reading
    other (fixed) columns; no bias on the second. ``cap=1``: a flush (live columns, fixed ones
    included, moved into the removed ones' places) after every removal."""
    g = torch.Generator().manual_seed(4)
    u = torch.randn(200, 5, generator=g, dtype=D)
    xa = torch.cat([u, torch.randn(200, 2, generator=g, dtype=D)], 1)  # units at columns 0..4
    xb = torch.cat([torch.randn(200, 3, generator=g, dtype=D), u], 1)  # units at columns 3..7
    la, lb = nn.Linear(7, 3, dtype=D), nn.Linear(8, 2, bias=False, dtype=D)
    ca = linear_consumer(la, xa, unit_ids=[0, 1, 2, 3, 4, -1, -1])
    cb = linear_consumer(lb, xb, unit_ids=[-1, -1, -1, 0, 1, 2, 3, 4])
    fr = group_frontier([ca, cb], 5, ks=range(1, 6), damp=0.0, cap=cap)
    Aa = np.hstack([xa.numpy(), np.ones((200, 1))])
    Za = Aa @ torch.cat([la.weight, la.bias[:, None]], 1).detach().numpy().T
    Ab, Zb = xb.numpy(), xb.numpy() @ lb.weight.detach().numpy().T
    alive, prev, order, incs = list(range(5)), 0.0, [], []
    while len(alive) > 1:
        cand = []
        for v in alive:
            rest = [w for w in alive if w != v]
            ea, Va = _lstsq_err(Aa, Za, rest + [5, 6, 7])
            eb, Vb = _lstsq_err(Ab, Zb, [0, 1, 2] + [3 + w for w in rest])
            cand.append((ea + eb, v, rest, Va, Vb))
        err, v, rest, Va, Vb = min(cand, key=lambda t: t[0])
        alive.remove(v)
        order.append(v)
        incs.append(err - prev)
        prev = err
        (wa, ba), (wb, bb) = fr.cuts[len(alive)].weights
        assert bb is None
        np.testing.assert_allclose(np.hstack([wa, ba[:, None]])[:, rest + [5, 6, 7]], Va.T,
                                   rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(wb[:, [0, 1, 2] + [3 + w for w in rest]], Vb.T, rtol=1e-8,
                                   atol=1e-9)
    assert fr.order[:-1] == order
    np.testing.assert_allclose(fr.costs[:-1], incs, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fr.calib_losses[2], sum(incs[:3]), rtol=1e-8)


def test_bad_blocks_are_refused():
    lin = nn.Linear(4, 2, dtype=D)
    x = torch.randn(30, 4, dtype=D)
    with pytest.raises(UsageError, match="heads"):
        heads_consumer(lin, x, 3)
    with pytest.raises(UsageError, match="reads 4 features"):
        linear_consumer(lin, torch.randn(30, 5, dtype=D))
    with pytest.raises(UsageError, match="read by no consumer"):
        group_frontier([linear_consumer(lin, x, unit_ids=[0, 1, 2, -1])], 4)
    with pytest.raises(UsageError, match="different numbers of blocks"):
        linear_consumer(lin, x, unit_ids=[0, 0, 1, -1])
    u = torch.tensor([0, 0, 1, 1])  # a unit in two rows of cols: would be scored per row
    prob = block_obs.BlockProblem(torch.eye(4, dtype=D), lin.weight.detach(), u[:, None] * 0
                                  + torch.arange(4)[:, None], u)
    with pytest.raises(UsageError, match="one block"):
        block_obs.eliminate_blocks([prob], 2)


def test_channels_of_one_unit_form_one_block():
    """unit_ids naming one unit on two input channels: one 18-column block, not two of 9."""
    conv = nn.Conv2d(4, 2, 3, padding=1, dtype=D)
    x = torch.randn(3, 4, 5, 5, dtype=D)
    (c,) = conv_consumers(conv, x, unit_ids=[1, 0, 1, 0])
    assert c.units.tolist() == [0, 1]
    np.testing.assert_array_equal(c.cols.numpy(), [[9 + t for t in range(9)]
                                                   + [27 + t for t in range(9)],
                                                   list(range(9)) + [18 + t for t in range(9)]])


def test_lazy_downdates_and_compaction_keep_the_greedy_exact():
    """12 channels of 9 columns, 10 pending rows at most: every flush moves live columns into
    the dead ones' places; with small panels the flushes update only the lower row panels (8
    of 14 columns) and the stale rest of each row is read from its column. Each step is still
    the brute-force best, each width the exact least-squares refit of its kept channels."""
    g = torch.Generator().manual_seed(5)
    conv = nn.Conv2d(12, 3, 3, padding=1, dtype=D)
    x = torch.randn(8, 12, 6, 6, generator=g, dtype=D)
    fr = group_frontier(conv_consumers(conv, x), 12, ks=range(1, 13), damp=0.0, cap=10)
    z = F.conv2d(x, conv.weight, conv.bias, padding=1).detach().numpy()
    Z = z.transpose(0, 2, 3, 1).reshape(-1, 3)
    P = _patches(x.numpy(), conv)
    A = np.hstack([P, np.ones((len(P), 1))])
    cols = lambda chans: [c * 9 + t for c in sorted(chans) for t in range(9)] + [108]  # noqa: E731
    alive, total = list(range(12)), 0.0
    for step, u in enumerate(fr.order[:-1]):
        errs = {v: _lstsq_err(A, Z, cols([c for c in alive if c != v]))[0] for v in alive}
        assert errs[u] <= min(errs.values()) * (1 + 1e-9)
        alive.remove(u)
        err, V = _lstsq_err(A, Z, cols(alive))
        total += fr.costs[step]
        assert total == pytest.approx(err, rel=1e-8)
        w, b = fr.cuts[len(alive)].weights[0]
        got = np.hstack([w, b[:, None]])
        ref = np.zeros_like(got)
        ref[:, cols(alive)] = V.T
        np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())


@pytest.mark.parametrize("b", [3, 1])
def test_block_costs_under_an_output_metric_are_brute_force(b, numpy_steps):
    """With an output metric F the cost is the F-weighted output error of the least-squares
    refit (the refit itself does not depend on F): 4 heads of 3 or 12 single columns, a
    random PSD F, a flush every two removals."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(150, 12, generator=g, dtype=D)
    w = torch.randn(5, 13, generator=g, dtype=D)  # bias as the last column
    m = torch.randn(5, 5, generator=g, dtype=D)
    f = m @ m.T
    A = np.hstack([x.numpy(), np.ones((150, 1))])
    G = torch.from_numpy(A.T @ A / 150)
    nu = 12 // b
    cols = torch.arange(12).view(nu, b)
    prob = block_obs.BlockProblem(torch.linalg.inv(G), w, cols, torch.arange(nu), f)
    res = block_obs.eliminate_blocks([prob], nu, cap=2 * b, keep_at=range(1, nu + 1))
    Z, F_ = A @ w.numpy().T, f.numpy()
    alive, prev = list(range(nu)), 0.0
    for step, u in enumerate(res.order[:-1]):
        errs = {}
        for v in alive:
            keep = [c for h in alive if h != v for c in range(b * h, b * h + b)] + [12]
            V, *_ = np.linalg.lstsq(A[:, keep], Z, rcond=None)
            d = A[:, keep] @ V - Z
            errs[v] = (np.einsum("ni,ij,nj->n", d, F_, d).mean(), keep, V)
        assert u == min(errs, key=lambda v: errs[v][0])
        err, keep, V = errs[u]
        assert res.costs[step] == pytest.approx(err - prev, rel=1e-8)
        alive.remove(u)
        prev = err
        ref = np.zeros((5, 13))
        ref[:, keep] = V.T
        np.testing.assert_allclose(res.snapshots[len(alive)][1][0].numpy(), ref, rtol=1e-8,
                                   atol=1e-10)


@pytest.mark.parametrize("metric", [False, True])
def test_numpy_and_torch_steps_agree_with_columns_in_no_unit(metric, monkeypatch):
    """150 units read through shuffled columns of 170 (20 columns in no unit, never removed),
    unit ids shuffled too, 9 pending rows per flush: the numpy steps (CPU) and the torch steps
    (every other device) give the same order, costs and refitted weights."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(400, 170, generator=g, dtype=D)
    w = torch.randn(4, 170, generator=g, dtype=D)
    m = torch.randn(4, 4, generator=g, dtype=D)
    cols = torch.randperm(170, generator=g)[:150, None]
    units = torch.randperm(150, generator=g)
    ginv = torch.linalg.inv(x.T @ x / 400)
    out = {}
    for fast in (True, False):
        monkeypatch.setattr(block_obs, "_NUMPY_STEPS", fast)
        prob = block_obs.BlockProblem(ginv.clone(), w, cols, units, m @ m.T if metric else None)
        out[fast] = block_obs.eliminate_blocks([prob], 150, cap=9, keep_at=[150, 97, 40, 1])
    a, b = out[True], out[False]
    assert a.order == b.order and sorted(a.order) == list(range(150))
    np.testing.assert_allclose(a.costs[:-1], b.costs[:-1], rtol=1e-9)
    for k in (150, 97, 40, 1):
        assert a.snapshots[k][0].tolist() == b.snapshots[k][0].tolist()
        np.testing.assert_allclose(a.snapshots[k][1][0], b.snapshots[k][1][0], rtol=1e-9,
                                   atol=1e-9 * float(b.snapshots[k][1][0].abs().max()))
