"""Engine speed: the journal's naive loop vs the bank engine, bf16 vs fp32, and GEMM peaks.

    .venv/bin/python benchmarks/bench_engine.py            # the issue's workload (~4 min here)
    .venv/bin/python benchmarks/bench_engine.py --steps 60 # a shorter smoke run
    .venv/bin/python benchmarks/bench_engine.py --threads 1  # steadier on a shared machine

Workload: one-hidden-layer MLPs 784 -> h -> 10, widths int(2**(i/2)) for i = 8..21 (16..1448),
3 seeds each (42 models), one epoch of MNIST (55,000 training images, batch 128, Adam 1e-3).

(a) naive: the journal's style, a per-sample ``Dataset`` normalising each uint8 image as
    ``ToTensor() + Normalize`` does, a ``DataLoader`` (batch 128, shuffle), and a Python loop over
    the models, each with its own ``torch.optim.Adam``;
(b) engine: ``widthlab.engine`` in fp32, then in bf16 autocast (the whole epoch where the CPU
    has native bf16, ``--bf16-steps`` minibatches elsewhere), for the test accuracy gap.

``bf16_speedup`` is measured separately, in the same run: an fp32 and a bf16 engine train
epochs of ``--ratio-steps`` minibatches in turn (so machine noise hits both alike), and the
ratio is that of their median step times (``bf16_speedup_cpu``: of the process CPU time per
step, which a shared machine disturbs less). The benchmark first prints torch's CPU capability
and the bf16 flags of ``/proc/cpuinfo``; where bf16 is not native it says why no speed-up can
come from it.

FLOPs are counted as the issue asks, 6 * batch * params per step (forward, input gradient,
weight gradient of every layer), so ``gemm_efficiency`` = (6 * samples * params / train seconds)
/ fp32 peak, with the peaks measured here by ``torch.mm`` at 4096^3 (fp32 and bf16 in turn).
The engine's chunk GEMM (1024 x 784 x 128) is also timed in fp32 and bf16, to explain
``bf16_speedup``. Evaluation and checkpoint writing are not in the timed loop. Figures are
printed last, one ``name=value`` per line.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from widthlab.data import load_arrays, load_splits
from widthlab.data.tensors import DatasetSplits, Split
from widthlab.engine.trainer import Engine, TrainConfig, evaluate
from widthlab.nn.bank import MLP, ModelSpec, native_bf16

WIDTHS = [int(2 ** (i / 2)) for i in range(8, 22)]
SEEDS = [0, 1, 2]


def gemm_rate(m: int, k: int, n: int, dtype=torch.float32, repeats: int = 5) -> float:
    """Best-of FLOP/s of an (m x k) @ (k x n) torch.mm."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best


class JournalMNIST(Dataset):
    """Per-sample dataset as in the journal: uint8 image -> float in [0,1] -> normalised."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float, std: float):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.images[i].astype(np.float32) / 255.0)  # ToTensor
        x = (x - self.mean) / self.std                                     # Normalize
        return x.view(-1), int(self.labels[i])


def run_naive(splits, max_steps: int | None) -> tuple[float, int, list[MLP]]:
    tr_x, tr_y, _, _ = load_arrays("mnist")
    # the engine's training split: same images, same normalisation constants
    perm = np.random.default_rng(splits.seed).permutation(len(tr_y))
    train_idx = np.sort(perm[5000:])
    ds = JournalMNIST(tr_x[train_idx], tr_y[train_idx], splits.mean, splits.std)
    loader = DataLoader(ds, batch_size=128, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    models = [MLP([784, w, 10], seed=s) for w in WIDTHS for s in SEEDS]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    samples = 0
    t = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        for model, opt in zip(models, opts, strict=True):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        samples += len(y)
    return time.perf_counter() - t, samples, models


def engine_data(splits, max_steps: int | None):
    """The training split cut to ``max_steps`` minibatches of 128 (None: all of it)."""
    if max_steps is None:
        return splits
    n = max_steps * 128
    return DatasetSplits(splits.name, Split(splits.train.x[:n], splits.train.y[:n]),
                         splits.val, splits.test, splits.mean, splits.std, splits.seed)


def make_engine(data, precision: str, tmp: str, epochs: int = 1,
                eval_splits: tuple[str, ...] = ("test",), progress=False) -> Engine:
    specs = [ModelSpec((w,), seed=s) for w in WIDTHS for s in SEEDS]
    cfg = TrainConfig(dataset="mnist", epochs=epochs, precision=precision, device="cpu",
                      eval_splits=eval_splits, stats_epochs="none", study="bench")
    return Engine(specs, cfg, tmp, data=data, progress=progress)


def run_engine(splits, precision: str, max_steps: int | None):
    data = engine_data(splits, max_steps)
    with tempfile.TemporaryDirectory() as tmp:
        eng = make_engine(data, precision, tmp)
        eng.run()
        return eng.state.train_s, len(data.train), eng


class StepClock:
    """Progress callback that records the wall and CPU seconds of every minibatch step (the
    time from the previous event of the same ``run`` call: training work only)."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._last: tuple[float, float] | None = None

    def __call__(self, ev) -> None:
        now = (time.perf_counter(), time.process_time())
        if ev.kind == "step" and self._last is not None:
            self.wall.append(now[0] - self._last[0])
            self.cpu.append(now[1] - self._last[1])
        self._last = now if ev.kind in ("start", "step") else None


def interleaved_ratio(splits, steps: int, repeats: int) -> dict[str, float]:
    """fp32 vs bf16 training step times: the two engines run epochs of ``steps`` minibatches
    in turn (machine noise hits both alike), ``repeats`` timed epochs each after a warm-up
    epoch; the ratio of the median step times (wall clock and process CPU time)."""
    data = engine_data(splits, steps)
    clocks = [StepClock(), StepClock()]
    with tempfile.TemporaryDirectory() as tmp32, tempfile.TemporaryDirectory() as tmp16:
        engines = [make_engine(data, p, t, repeats + 1, eval_splits=(), progress=c)
                   for p, t, c in (("fp32", tmp32, clocks[0]), ("bf16", tmp16, clocks[1]))]
        for epoch in range(1, repeats + 2):
            for eng, clock in zip(engines, clocks, strict=True):
                if epoch == 2:  # the warm-up epoch is not counted
                    clock.wall.clear()
                    clock.cpu.clear()
                eng.run(until=epoch)
    wall = [statistics.median(c.wall) for c in clocks]
    cpu = [statistics.median(c.cpu) for c in clocks]
    return {"fp32_ms": 1e3 * wall[0], "bf16_ms": 1e3 * wall[1], "speedup": wall[0] / wall[1],
            "speedup_cpu": cpu[0] / cpu[1], "steps": len(clocks[1].wall)}


CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def bf16_support() -> tuple[bool, str, list[str], str]:
    """Native bf16 (torch's detection), torch's CPU capability, the bf16 flags /proc/cpuinfo
    lists, and a sentence saying why bf16 cannot pay off here when it cannot."""
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
    except OSError:
        words = set()
    flags = [f for f in CPU_FLAGS if f in words]
    native = native_bf16("cpu")
    why = "" if native else (
        f"this CPU has no native bf16 matrix unit (torch CPU capability {capability}, "
        f"/proc/cpuinfo bf16 flags: {', '.join(flags) or 'none'} of {', '.join(CPU_FLAGS)}): "
        "oneDNN/MKL emulate bf16 GEMMs by converting to fp32, so bf16 is slower than fp32 "
        "and bf16_speedup >= 1.5 is out of reach; it pays off on AVX512-BF16/AMX CPUs and GPUs")
    return native, capability, flags, why


def gemm_peaks(native: bool, rounds: int = 3) -> tuple[float, float, int]:
    """fp32 and bf16 ``torch.mm`` peaks, measured in turn (best of ``rounds``); the bf16 size
    is 4096^3 where bf16 is native, 1024^3 elsewhere (an emulated 4096^3 takes minutes)."""
    n16 = 4096 if native else 1024
    p32 = p16 = 0.0
    for _ in range(rounds):
        p32 = max(p32, gemm_rate(4096, 4096, 4096, repeats=2))
        p16 = max(p16, gemm_rate(n16, n16, n16, torch.bfloat16, repeats=2))
    return p32, p16, n16


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None,
                    help="train only this many minibatches (default: the whole epoch)")
    ap.add_argument("--bf16-steps", type=int, default=None,
                    help="minibatches of the bf16-vs-fp32 accuracy comparison (0: the whole "
                         "epoch; default: the whole epoch where bf16 is native, else 60: "
                         "emulated bf16 GEMMs are ~15x slower than fp32)")
    ap.add_argument("--ratio-steps", type=int, default=15,
                    help="minibatches per epoch of the interleaved fp32/bf16 timing")
    ap.add_argument("--ratio-repeats", type=int, default=9,
                    help="timed epochs per precision of the interleaved timing (after one "
                         "warm-up epoch each; the median step time is taken)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's own choice)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    native, capability, flags, why = bf16_support()
    print(f"cpu_capability={capability} cpu_bf16_flags={','.join(flags) or 'none'} "
          f"native_bf16={int(native)} threads={torch.get_num_threads()}", file=sys.stderr)
    if why:
        print(f"bf16: {why}", file=sys.stderr)
    splits = load_splits("mnist")
    n_params = sum(784 * w + w + 10 * w + 10
                   for w in WIDTHS for _ in SEEDS)

    t_naive, n_naive, naive_models = run_naive(splits, args.steps)
    t_fp32, n_fp32, eng32 = run_engine(splits, "fp32", args.steps)
    # bf16 vs fp32 accuracy on the same (possibly shorter) stream
    short = args.bf16_steps if args.bf16_steps is not None else (0 if native else 60)
    short = short or args.steps
    t_bf16, n_bf16, eng16 = run_engine(splits, "bf16", short)
    t_ref, n_ref, eng_ref = (t_fp32, n_fp32, eng32) if short == args.steps else \
        run_engine(splits, "fp32", short)
    ratio = interleaved_ratio(splits, args.ratio_steps, args.ratio_repeats)
    peak, peak16, n16 = gemm_peaks(native)
    # the engine's own chunk shape, unit-major: (1024 units x 784) @ (784 x 128)
    chunk32 = gemm_rate(1024, 784, 128, repeats=20)
    chunk16 = gemm_rate(1024, 784, 128, torch.bfloat16, repeats=20)

    with torch.no_grad():
        x, y = splits.test.x, splits.test.y
        naive_acc = np.mean([(m(x).argmax(1) == y).double().mean().item() for m in naive_models])
    acc32 = evaluate(eng32.bank, splits.test).acc.mean().item()
    acc16 = evaluate(eng16.bank, splits.test, precision="bf16").acc.mean().item()
    acc_ref = evaluate(eng_ref.bank, splits.test).acc.mean().item()

    rate_naive = n_naive / t_naive
    rate_fp32 = n_fp32 / t_fp32
    rate_bf16 = n_bf16 / t_bf16
    rate_ref = n_ref / t_ref
    flops32 = 6 * n_params * rate_fp32
    print(f"models={len(WIDTHS) * len(SEEDS)} params={n_params} samples={n_fp32}",
          file=sys.stderr)
    print(f"cpu_capability={capability}")
    print(f"cpu_bf16_flags={','.join(flags) or 'none'}")
    print(f"native_bf16={int(native)}")
    print(f"naive_s={t_naive:.2f}")
    print(f"engine_fp32_s={t_fp32:.2f}")
    print(f"engine_bf16_s={t_bf16:.2f}")
    print(f"naive_ms_per_step={1e3 * 128 / rate_naive:.2f}")
    print(f"engine_ms_per_step={1e3 * 128 / rate_fp32:.2f}")
    print(f"engine_bf16_ms_per_step={1e3 * 128 / rate_bf16:.2f}")
    print(f"gemm_peak_gflops={peak / 1e9:.1f}")
    print(f"gemm_peak_bf16_gflops={peak16 / 1e9:.1f}")
    print(f"gemm_peak_bf16_size={n16}")
    print(f"chunk_gemm_fp32_gflops={chunk32 / 1e9:.1f}")
    print(f"chunk_gemm_bf16_gflops={chunk16 / 1e9:.1f}")
    print(f"naive_gemm_efficiency={6 * n_params * rate_naive / peak:.3f}")
    print(f"engine_speedup={rate_fp32 / rate_naive:.3f}")
    print(f"gemm_efficiency={flops32 / peak:.3f}")
    print(f"bf16_steps={n_bf16 // 128}")
    print(f"bf16_epoch_speedup={rate_bf16 / rate_ref:.3f}")
    print(f"ratio_steps={ratio['steps']}")
    print(f"ratio_fp32_ms_per_step={ratio['fp32_ms']:.2f}")
    print(f"ratio_bf16_ms_per_step={ratio['bf16_ms']:.2f}")
    print(f"bf16_speedup_cpu={ratio['speedup_cpu']:.3f}")
    print(f"bf16_speedup={ratio['speedup']:.3f}")
    print(f"naive_test_acc={100 * naive_acc:.2f}")
    print(f"fp32_test_acc={100 * acc32:.2f}")
    print(f"fp32_test_acc_at_bf16_steps={100 * acc_ref:.2f}")
    print(f"bf16_test_acc={100 * acc16:.2f}")
    print(f"bf16_acc_gap_points={100 * abs(acc16 - acc_ref):.2f}")
    if why:
        print(f"bf16_why_not={why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
