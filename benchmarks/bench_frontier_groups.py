"""Block structured OBS frontiers of three groups, every ranking, and the elimination's speed.

Groups (synthetic layers, random init, fixed seeds; calibration and evaluation are separate
draws of the same distribution):

* ``ffn``: an FFN of 512 GELU units (``128 -> 512 -> 128``) over 16,384 tokens of correlated
  Gaussian inputs; the units are read by the down projection (1 column each);
* ``conv``: a 64-channel 3x3 convolution (padding 1) reading the ReLU outputs of a ``16 -> 64``
  3x3 convolution of 64 smooth 16x16 images (16,384 im2col rows; 9 columns per channel);
* ``heads``: 8 heads of 64 read by a ``512 -> 512`` output projection, head outputs correlated
  within each head and, through a shared 64-dim component, across heads (16,384 tokens).

For ``taylor`` the gradient is that of the mean squared distance of the consumer's output to a
perturbed teacher's (the consumer with 10% weight noise). Printed per group: the time of the
statistics pass, of the whole ``obs`` frontier (inverse, elimination, cuts at 75/50/25%,
losses) and of a plain numpy float64 reference of the same greedy block elimination (eager
block downdates, one per step; its order is checked against ours), then every method's
evaluation loss at 75/50/25% kept (mean squared output error over the mean squared output).

Then the speed of the one-column elimination (an SPD inverse Gram matrix built directly, so
the timing is the elimination's alone, the inverse excluded) at widths 1024, 4096 and 8192,
against the float64 GEMM peak measured in the same run (the best of one thread and every
thread, before and after): ``2 H^3 / 3`` operations over the time, over the peak (and, robust
to a shared machine's load, the same in CPU seconds against one core's GEMM rate in CPU
seconds: with ``--threads 1`` what an unloaded core gives); the whole
``width_frontier`` of an untrained ``784-4096-10`` MNIST MLP (5000 calibration, 10000
evaluation images) and its parts timed alone (wall and CPU seconds), with the floor of each
part (its least arithmetic at the GEMM peaks of the run) and the whole over their sum
(``whole_over_floor_w4096=``); the elimination's memory at the
largest width (peak resident size during it, against the bound: the matrix is updated in place).
``ratio=`` (our time over numpy's, summed over the three groups) is printed last.

    PYTHONPATH=src python benchmarks/bench_frontier_groups.py [--threads 2] \\
        [--widths 1024,4096,8192]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from widthlab.frontier._memory import big_empty
from widthlab.frontier.block_obs import BlockProblem, eliminate_blocks
from widthlab.frontier.blocks import conv_consumers, heads_consumer, linear_consumer
from widthlab.frontier.group import GROUP_METHODS, group_frontier

TOKENS = 16384
FRACTIONS = (0.75, 0.5, 0.25)


def gemm_peak(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float64) -> float:
    """Best ``n x n`` GEMM rate (float64 unless told), flop/s, over one thread and every
    thread (the higher bar: on a shared machine a thread pool can be slower than one thread)."""
    a = torch.randn(n, n, dtype=dtype)
    c = torch.empty_like(a)
    best = float("inf")
    threads = torch.get_num_threads()
    for th in sorted({1, threads}):
        torch.set_num_threads(th)
        torch.mm(a, a, out=c)
        for _ in range(reps):
            t = time.perf_counter()
            torch.mm(a, a, out=c)
            best = min(best, time.perf_counter() - t)
    torch.set_num_threads(threads)
    return 2 * n ** 3 / best


def gemm_peak_cpu(n: int = 2048, reps: int = 5) -> float:
    """Best one-thread float64 ``n x n`` GEMM rate in flop per CPU second (process time: what
    an unloaded core gives, nearly, on a machine shared with other work)."""
    a = torch.randn(n, n, dtype=torch.float64)
    c = torch.empty_like(a)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.mm(a, a, out=c)
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        torch.mm(a, a, out=c)
        best = min(best, time.process_time() - t)
    torch.set_num_threads(threads)
    return 2 * n ** 3 / best


def _grad(layer: nn.Module, x: torch.Tensor, fwd) -> torch.Tensor:
    """d/dW of the mean squared distance to a teacher (the layer, 10% weight noise)."""
    g = torch.Generator().manual_seed(7)
    w = layer.weight
    noise = torch.randn(w.shape, generator=g, dtype=w.dtype) * w.detach().std() * 0.1
    with torch.no_grad():
        target = fwd(x, w.detach() + noise)
    loss = F.mse_loss(fwd(x, w), target)
    return torch.autograd.grad(loss, w)[0]


def ffn_group(seed: int = 0):
    torch.manual_seed(seed)  # the layers' initialisation
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(128, 128, generator=g, dtype=torch.float64) / 128 ** 0.5
    up = nn.Linear(128, 512, dtype=torch.float64)
    down = nn.Linear(512, 128, dtype=torch.float64)

    def acts():
        x = torch.randn(TOKENS, 128, generator=g, dtype=torch.float64) @ mix
        return F.gelu(up(x)).detach()

    a_cal, a_ev = acts(), acts()
    grad = _grad(down, a_cal, lambda x, w: F.linear(x, w, down.bias))
    t = time.perf_counter()
    cons = [linear_consumer(down, a_cal, grad=grad, module="down")]
    stats_s = time.perf_counter() - t
    return cons, [linear_consumer(down, a_ev).stats], 512, stats_s


def conv_group(seed: int = 1):
    torch.manual_seed(seed)  # the layers' initialisation
    g = torch.Generator().manual_seed(seed)
    prod = nn.Conv2d(16, 64, 3, padding=1, dtype=torch.float64)
    cons_conv = nn.Conv2d(64, 64, 3, padding=1, dtype=torch.float64)

    def acts():
        img = torch.randn(64, 16, 16, 16, generator=g, dtype=torch.float64)
        img = F.avg_pool2d(img, 3, 1, 1)  # smooth images
        return torch.relu(prod(img)).detach()

    a_cal, a_ev = acts(), acts()
    grad = _grad(cons_conv, a_cal, lambda x, w: F.conv2d(x, w, cons_conv.bias, padding=1))
    t = time.perf_counter()
    cons = conv_consumers(cons_conv, a_cal, grad=grad, module="conv2")
    stats_s = time.perf_counter() - t
    return cons, [c.stats for c in conv_consumers(cons_conv, a_ev)], 64, stats_s


def heads_group(seed: int = 2):
    torch.manual_seed(seed)  # the layers' initialisation
    g = torch.Generator().manual_seed(seed)
    mixes = torch.randn(8, 64, 64, generator=g, dtype=torch.float64) / 8
    shared = torch.randn(64, 512, generator=g, dtype=torch.float64) / 8
    scale = torch.linspace(0.3, 1.5, 8, dtype=torch.float64)
    o_proj = nn.Linear(512, 512, dtype=torch.float64)

    def acts():
        z = torch.randn(TOKENS, 8, 64, generator=g, dtype=torch.float64)
        own = (torch.einsum("thi,hij->thj", z, mixes) * scale[:, None]).reshape(TOKENS, 512)
        return own + torch.randn(TOKENS, 64, generator=g, dtype=torch.float64) @ shared

    a_cal, a_ev = acts(), acts()
    grad = _grad(o_proj, a_cal, lambda x, w: F.linear(x, w, o_proj.bias))
    t = time.perf_counter()
    cons = [heads_consumer(o_proj, a_cal, 8, grad=grad, module="o_proj")]
    stats_s = time.perf_counter() - t
    return cons, [heads_consumer(o_proj, a_ev, 8).stats], 8, stats_s


def numpy_reference(cons, n_units: int, damp: float = 1e-6) -> list[int]:
    """The same greedy block elimination in plain numpy float64: eager block downdates."""
    probs = []
    for c in cons:
        g = c.stats.gram.numpy().copy()
        w = np.hstack([c.weight.numpy(), c.bias.numpy()[:, None]])
        g[np.diag_indices_from(g)] += damp * np.mean(np.diag(g))
        probs.append([np.linalg.inv(g), w, c.cols.numpy(), c.units.numpy()])
    dead, order = np.zeros(n_units), []
    while len(order) < n_units - 1:
        score = dead.copy()
        for p, w, cols, units in probs:  # every unit's tr(W_M P_MM^-1 W_M^T), batched
            q = p[cols[:, :, None], cols[:, None, :]]
            wm = w[:, cols].transpose(1, 2, 0)  # (U, b, C)
            np.add.at(score, units, (wm * np.linalg.solve(q, wm)).sum((1, 2)))
        u = int(np.argmin(score))
        for prob in probs:
            p, w, cols, units = prob
            if u not in units:
                continue
            m = cols[list(units).index(u)]
            coef = np.linalg.solve(p[np.ix_(m, m)], p[m, :])  # (b, N)
            prob[1] = w - w[:, m] @ coef
            prob[1][:, m] = 0
            prob[0] = p - p[:, m] @ coef
            prob[0][np.ix_(m, m)] = np.eye(len(m))  # a removed block: no cost, no pivot
        dead[u] = np.inf
        order.append(u)
    return order


def run_group(name: str, build, out: dict) -> tuple[float, float]:
    cons, ev, n_units, stats_s = build()
    ks = [max(1, round(n_units * f)) for f in FRACTIONS]
    t = time.perf_counter()
    fr = group_frontier(cons, n_units, "obs", ks=ks, eval=ev)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = numpy_reference(cons, n_units)
    ref_s = time.perf_counter() - t
    energy = sum(float((torch.cat([c.weight, c.bias[:, None]], 1) @ s.gram
                        * torch.cat([c.weight, c.bias[:, None]], 1)).sum())
                 for c, s in zip(cons, ev, strict=True))
    out[f"{name}_stats_s"] = stats_s
    out[f"{name}_frontier_s"] = ours
    out[f"{name}_numpy_s"] = ref_s
    out[f"{name}_ratio"] = ours / ref_s
    out[f"{name}_order_equals_numpy"] = fr.order[:-1] == ref
    for m in GROUP_METHODS:
        f = fr if m == "obs" else group_frontier(cons, n_units, m, ks=ks, eval=ev)
        for frac, k in zip(FRACTIONS, ks, strict=True):
            out[f"{name}_{m}_relloss_kept{round(frac * 100)}"] = f.losses[k] / energy
    return ours, ref_s


def spd_inverse(h: int, seed: int = 0) -> torch.Tensor:
    """An SPD matrix with a spread spectrum: ``D (I/2 + B B^T / r) D`` (rank-256 ``B``)."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(h, 256, generator=g, dtype=torch.float64)
    d = torch.rand(h, generator=g, dtype=torch.float64) + 0.5
    # one H x H buffer (the run's peak memory stays ours), on huge pages as gram's
    p = torch.mm(b, b.t(), out=big_empty(h, h)).div_(256)
    p.diagonal().add_(0.5)
    return p.mul_(d[:, None]).mul_(d[None, :])


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset the peak resident size (Linux ``clear_refs`` 5); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def elimination_speed(h: int, out: dict) -> None:
    """Time (and, in a fresh process, the extra peak memory) of the width-``h`` elimination."""
    w = torch.randn(10, h, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u = torch.arange(h)
    prob = BlockProblem(spd_inverse(h), w, u[:, None], u)  # no other reference: consumed
    base = _status_mb("VmRSS")
    reset = _reset_peak()
    t, c = time.perf_counter(), time.process_time()
    eliminate_blocks([prob], h)
    out[f"elimination_s_w{h}"] = time.perf_counter() - t
    out[f"elimination_cpu_s_w{h}"] = time.process_time() - c  # all threads' CPU time
    # P is consumed in place (live positions moved into dead ones' places, no copy of it);
    # W, the pending rows V, at most two blocks of moved rows, and vectors of length h
    out[f"elimination_rss_before_mb_w{h}"] = base
    out[f"elimination_peak_rss_mb_w{h}"] = (_status_mb("VmHWM") if reset else
                                            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                            / 1024)
    values = (2 * 10 + 3 * 128 + 16) * h
    out[f"elimination_peak_bound_mb_w{h}"] = base + 8 * values / 2 ** 20 + 16  # + allocator slack
    out[f"elimination_matrix_mb_w{h}"] = 8 * h * h / 2 ** 20


def _child(h: int, threads: int) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", str(h), "--threads", str(threads)],
                         check=True, capture_output=True, text=True)
    return {k: float(v) for k, v in (ln.split("=") for ln in res.stdout.split())}


def whole_frontier_4096(out: dict) -> None:
    """``width_frontier`` of an untrained 784-4096-10 MLP on MNIST (5000 calibration, 10000
    evaluation images), after a width-64 frontier in the same process (timed apart), then
    its parts timed alone as the frontier runs them: ``prepare`` (trace, the float32 forward
    of both sets, the neuron-major float64 cache), the Gram matrix, the damped inverse, the
    elimination (with the default widths' snapshots); the rest (scoring every width on both
    sets) is the whole less the parts."""
    from widthlab.data import load_splits
    from widthlab.frontier import frontier_ks, width_frontier
    from widthlab.frontier.obs import damped_inverse, gram
    from widthlab.frontier.prepare import prepare

    d = load_splits("mnist")
    va, te = d.split("val"), d.split("test")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 4096), nn.ReLU(), nn.Linear(4096, 10)).eval()
    # the process's one-time costs (lazy imports such as scipy.linalg, BLAS thread pools,
    # first calls of each operator) are paid by a width-64 frontier first, and timed
    small = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    t = time.perf_counter()
    width_frontier(small, "0", (va.x[:500], va.y[:500]), (te.x[:500], te.y[:500]))
    out["whole_warmup_s_w64"] = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    width_frontier(model, "0", (va.x, va.y), (te.x, te.y))
    out["whole_frontier_s_w4096"] = time.perf_counter() - t
    out["whole_frontier_cpu_s_w4096"] = time.process_time() - c  # all threads' CPU time
    parts: dict[str, tuple[float, float]] = {}

    def timed(name, fn, *args, **kw):
        t, c = time.perf_counter(), time.process_time()
        res = fn(*args, **kw)
        parts[name] = (time.perf_counter() - t, time.process_time() - c)
        return res

    prep = timed("prepare", prepare, model, "0", (va.x, va.y), (te.x, te.y))
    g = timed("gram", gram, prep.at["calib"].t())
    p = timed("inverse", damped_inverse, g, 1e-6, lower=True)  # as the frontier does
    del g
    w = torch.cat([prep.w0, prep.b0[:, None]], 1)
    u = torch.arange(4096)
    timed("elimination", eliminate_blocks, [BlockProblem(p, w, u[:, None], u)], 4096,
          keep_at=frontier_ks(4096))
    for k, (wall, cpu) in parts.items():
        out[f"whole_part_{k}_s"] = wall
        out[f"whole_part_{k}_cpu_s"] = cpu
    out["whole_part_rest_s"] = out["whole_frontier_s_w4096"] - sum(v[0] for v in parts.values())
    out["whole_part_rest_cpu_s"] = (out["whole_frontier_cpu_s_w4096"]
                                    - sum(v[1] for v in parts.values()))


def whole_floors(out: dict, peak: float, peak32: float) -> None:
    """The least time of the frontier's arithmetic at 4096 at the GEMM peaks measured in this
    run (float64, and float32 for the forward): the forward ``2 * 784 * H * 15000`` (float32),
    the Gram matrix ``5000 H^2`` (a symmetric rank-k product), the Cholesky factorisation
    and inverse ``H^3``, the elimination ``2 H^3 / 3``, scoring every width
    ``2 * 10 * 15000 * sum(k)``."""
    from widthlab.frontier import frontier_ks

    h = 4096
    floors = {"forward": 2 * 784 * h * 15000 / peak32, "gram": 5000 * h * h / peak,
              "inverse": h ** 3 / peak, "elimination": 2 * h ** 3 / 3 / peak,
              "scoring": 2 * 10 * 15000 * sum(frontier_ks(h)) / peak}
    for k, v in floors.items():
        out[f"whole_floor_{k}_s"] = v
    out["whole_floor_s_w4096"] = sum(floors.values())
    # how far the whole frontier is from its arithmetic (comparable across machines: the
    # fixed 2.5 s target is below the floor on a CPU whose float64 peak is about 100 GFLOP/s)
    if "whole_frontier_s_w4096" in out:
        out["whole_over_floor_w4096"] = out["whole_frontier_s_w4096"] / out["whole_floor_s_w4096"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--widths", default="1024,4096,8192")
    ap.add_argument("--no-whole", dest="whole", action="store_false")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        res: dict = {}
        elimination_speed(args.child, res)
        print(" ".join(f"{k}={v}" for k, v in res.items()))
        return
    out: dict = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                 "threads": args.threads, "load_avg_1min_start": os.getloadavg()[0]}
    peak = gemm_peak()
    peak_cpu = gemm_peak_cpu()
    ours = ref = 0.0
    for name, build in (("ffn", ffn_group), ("conv", conv_group), ("heads", heads_group)):
        o, r = run_group(name, build, out)
        ours, ref = ours + o, ref + r
    widths = [int(w) for w in args.widths.split(",") if w]
    for h in widths:  # the largest in a fresh process: its peak memory is its own
        if h == max(widths):
            out.update(_child(h, args.threads))
        else:
            elimination_speed(h, out)
            for key in ("rss_before_mb", "peak_rss_mb", "peak_bound_mb", "matrix_mb"):
                del out[f"elimination_{key}_w{h}"]
    if args.whole:
        whole_frontier_4096(out)
    peak = max(peak, gemm_peak())  # the best of both (the machine may be shared)
    peak_cpu = max(peak_cpu, gemm_peak_cpu())
    if args.whole:
        whole_floors(out, peak, gemm_peak(dtype=torch.float32))
    out["load_avg_1min_end"] = os.getloadavg()[0]
    out["gemm_peak_gflops"] = peak / 1e9
    out["gemm_peak_cpu_gflops"] = peak_cpu / 1e9
    for h in widths:  # against the best peak seen; and in CPU time against one core's
        out[f"elimination_peak_fraction_w{h}"] = 2 * h ** 3 / 3 / out[f"elimination_s_w{h}"] / peak
        out[f"elimination_cpu_peak_fraction_w{h}"] = (2 * h ** 3 / 3 / peak_cpu
                                                      / out[f"elimination_cpu_s_w{h}"])
    if 4096 in widths:
        out["elimination_peak_fraction"] = out["elimination_peak_fraction_w4096"]
    out["ratio"] = ours / ref
    for k, v in out.items():
        print(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}", flush=True)


if __name__ == "__main__":
    main()
