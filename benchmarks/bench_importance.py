"""Exact neuron importance for all neurons at once vs the naive loop (zero one neuron, evaluate
everything, restore).

    .venv/bin/python benchmarks/bench_importance.py                    # ~2 min on 2 idle cores
    .venv/bin/python benchmarks/bench_importance.py --naive-neurons 2048  # the whole naive loop

Workload: a 784 -> 2048 -> 10 ReLU MLP trained for one epoch on 10,000 MNIST training images
(the engine, Adam 1e-3), scored on the 10,000 MNIST test images.

(a) exact: :func:`widthlab.metrics.importance.exact_importance` in float64 (rank-one corrections
    of the logits, chunked), all 2048 neurons;
(b) naive: :func:`widthlab.metrics.importance.naive_importance`: for each neuron, zero its
    outgoing weights, one forward pass over the test set, restore. Timed in float32 (its fastest
    form) on ``--naive-neurons`` neurons evenly spread over the layer; every neuron costs the
    same full forward pass, so the loop's time is ``per-neuron time x 2048`` (run it all with
    ``--naive-neurons 2048``);
(c) reference: the same naive loop in float64 on those neurons; ``max_abs_diff`` is the largest
    ``|exact - reference|`` (the issue asks for <= 1e-6 on the per-sample mean loss).

``importance_speedup`` = naive float32 time for 2048 neurons / exact time. Figures are printed
last, one ``name=value`` per line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import torch

from widthlab.data import load_splits
from widthlab.engine import TrainConfig, load_bank, train
from widthlab.metrics.importance import block_plan, exact_importance, naive_importance
from widthlab.nn import ModelSpec

WIDTH = 2048


def trained_model(data) -> torch.nn.Module:
    with tempfile.TemporaryDirectory() as store:
        cfg = TrainConfig(dataset="mnist", epochs=1, train_size=10_000, device="cpu",
                          stats_epochs="none", eval_splits=("test",), study="bench")
        run_id = train([ModelSpec((WIDTH,), seed=0)], cfg, store, data=data, progress=False)
        return load_bank(store, run_id, strict_modifiers=False).export(0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--naive-neurons", type=int, default=64,
                    help="neurons the naive loops run on (2048 = all)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads for both sides (default: torch's choice); "
                         "1 is steadier on a shared machine")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    n_naive = max(1, min(args.naive_neurons, WIDTH))

    data = load_splits("mnist")
    mlp = trained_model(data)
    x, y = data.test.x, data.test.y  # (10000, 784), (10000,)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; width {WIDTH}, "
          f"{len(y)} test images", file=sys.stderr)

    exact_importance(mlp, x[:200], y[:200])  # warm-up
    t = time.perf_counter()
    exact = exact_importance(mlp, x, y)
    exact_s = time.perf_counter() - t

    neurons = np.unique(np.linspace(0, WIDTH - 1, n_naive).round().astype(int))
    t = time.perf_counter()
    naive32 = naive_importance(mlp, x, y, neurons=neurons, dtype=torch.float32)
    naive32_per = (time.perf_counter() - t) / len(neurons)
    t = time.perf_counter()
    naive64 = naive_importance(mlp, x, y, neurons=neurons)
    naive64_per = (time.perf_counter() - t) / len(neurons)

    diff = float(np.abs(exact[neurons] - naive64[neurons]).max())
    diff32 = float(np.abs(exact[neurons] - naive32[neurons]).max())
    plan = block_plan([784, WIDTH, 10], len(y))
    plan_wide = block_plan([784, 11585, 10], len(y))
    print(f"exact_s={exact_s:.3f}")
    print(f"naive_neurons_timed={len(neurons)}")
    print(f"naive_fp32_s_per_neuron={naive32_per:.4f}")
    print(f"naive_fp32_total_s={naive32_per * WIDTH:.1f}")
    print(f"naive_fp64_s_per_neuron={naive64_per:.4f}")
    print(f"max_abs_diff_fp32_naive={diff32:.3e}")
    print(f"exact_peak_bound_mib={plan.peak_values * 8 / 2**20:.1f}")
    print(f"exact_peak_bound_mib_width_11585={plan_wide.peak_values * 8 / 2**20:.1f}")
    print(f"importance_range={exact.min():.3e}..{exact.max():.3e}")
    print(f"importance_speedup={naive32_per * WIDTH / exact_s:.1f}")
    print(f"max_abs_diff={diff:.3e}")


if __name__ == "__main__":
    main()
