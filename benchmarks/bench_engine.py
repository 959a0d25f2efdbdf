"""Engine speed: the journal's naive loop vs the bank engine, and the machine's GEMM peak.

    .venv/bin/python benchmarks/bench_engine.py            # the issue's workload (~4 min here)
    .venv/bin/python benchmarks/bench_engine.py --steps 60 # a shorter smoke run

Workload: one-hidden-layer MLPs 784 -> h -> 10, widths int(2**(i/2)) for i = 8..21 (16..1448),
3 seeds each (42 models), one epoch of MNIST (55,000 training images, batch 128, Adam 1e-3).

(a) naive: the journal's style, a per-sample ``Dataset`` normalising each uint8 image as
    ``ToTensor() + Normalize`` does, a ``DataLoader`` (batch 128, shuffle), and a Python loop over
    the models, each with its own ``torch.optim.Adam``;
(b) engine: ``widthlab.engine`` in fp32, then in bf16 autocast.

FLOPs are counted as the issue asks, 6 * batch * params per step (forward, input gradient,
weight gradient of every layer), so ``gemm_efficiency`` = (6 * samples * params / train seconds)
/ fp32 peak, with the peak measured here by ``torch.mm`` at 4096^3. The engine's chunk GEMM
(1024 x 784 x 128) is also timed in fp32 and bf16, to explain ``bf16_speedup``. Evaluation and
checkpoint writing are not in the timed loop. Figures are printed last, one ``name=value`` per
line.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from widthlab.data import load_arrays, load_splits
from widthlab.engine.trainer import Engine, TrainConfig, evaluate
from widthlab.nn.bank import MLP, ModelSpec

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


def run_engine(splits, precision: str, max_steps: int | None):
    specs = [ModelSpec((w,), seed=s) for w in WIDTHS for s in SEEDS]
    data = splits
    if max_steps is not None:
        from widthlab.data.tensors import DatasetSplits, Split
        n = max_steps * 128
        data = DatasetSplits(splits.name, Split(splits.train.x[:n], splits.train.y[:n]),
                             splits.val, splits.test, splits.mean, splits.std, splits.seed)
    cfg = TrainConfig(dataset="mnist", epochs=1, precision=precision, device="cpu",
                      eval_splits=("test",), stats_epochs="none", study="bench")
    with tempfile.TemporaryDirectory() as tmp:
        eng = Engine(specs, cfg, tmp, data=data, progress=False)
        eng.run()
        st = eng.state
        return st.train_s, len(data.train), eng


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None,
                    help="train only this many minibatches (default: the whole epoch)")
    ap.add_argument("--bf16-steps", type=int, default=60,
                    help="minibatches of the bf16-vs-fp32 comparison (0: the whole epoch); "
                         "bf16 GEMMs are ~15x slower than fp32 on CPUs without native bf16")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    splits = load_splits("mnist")
    n_params = sum(784 * w + w + 10 * w + 10
                   for w in WIDTHS for _ in SEEDS)

    t_naive, n_naive, naive_models = run_naive(splits, args.steps)
    t_fp32, n_fp32, eng32 = run_engine(splits, "fp32", args.steps)
    # bf16 vs fp32 on the same (possibly shorter) stream: speed and accuracy
    short = args.bf16_steps or args.steps
    t_bf16, n_bf16, eng16 = run_engine(splits, "bf16", short)
    t_ref, n_ref, eng_ref = (t_fp32, n_fp32, eng32) if short == args.steps else \
        run_engine(splits, "fp32", short)
    peak = gemm_rate(4096, 4096, 4096)
    # the engine's own chunk shape: (1024 units x 784) @ (784 x 128), fp32 and bf16 (a large
    # square bf16 product takes minutes on CPUs without native bf16 GEMM)
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
    print(f"naive_s={t_naive:.2f}")
    print(f"engine_fp32_s={t_fp32:.2f}")
    print(f"engine_bf16_s={t_bf16:.2f}")
    print(f"naive_ms_per_step={1e3 * 128 / rate_naive:.2f}")
    print(f"engine_ms_per_step={1e3 * 128 / rate_fp32:.2f}")
    print(f"gemm_peak_gflops={peak / 1e9:.1f}")
    print(f"chunk_gemm_fp32_gflops={chunk32 / 1e9:.1f}")
    print(f"chunk_gemm_bf16_gflops={chunk16 / 1e9:.1f}")
    print(f"naive_gemm_efficiency={6 * n_params * rate_naive / peak:.3f}")
    print(f"engine_speedup={rate_fp32 / rate_naive:.3f}")
    print(f"gemm_efficiency={flops32 / peak:.3f}")
    print(f"bf16_steps={n_bf16 // 128}")
    print(f"bf16_speedup={rate_bf16 / rate_ref:.3f}")
    print(f"naive_test_acc={100 * naive_acc:.2f}")
    print(f"fp32_test_acc={100 * acc32:.2f}")
    print(f"fp32_test_acc_at_bf16_steps={100 * acc_ref:.2f}")
    print(f"bf16_test_acc={100 * acc16:.2f}")
    print(f"bf16_acc_gap_points={100 * abs(acc16 - acc_ref):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
