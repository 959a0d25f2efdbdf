"""Sparsifier epoch time: removing dead neurons for real against masking them, and against a
static network of the final width.

    .venv/bin/python benchmarks/bench_shrink.py                    # the journal's setting
    .venv/bin/python benchmarks/bench_shrink.py --epochs 8 --train-size 12800   # a smoke run

Workload (the journal's "Implement the first version of a Sparsifier Network"): MNIST,
one-hidden-layer sparsifiers starting at 500 neurons, one per lambda (1e-4, 1e-3, 1e-2) in one
bank, 60 epochs, Adam 1e-3, batch 128, dead neurons acted on after every epoch. Three engines
on the same minibatch stream, timed epoch by epoch in turn (so machine noise hits all alike):

(a) shrink: ``SparsifierGate`` with ``shrink_mode="remove"``: dead neurons leave the GEMMs;
(b) mask: the same with ``shrink_mode="mask"``: identical numbers, full width every epoch;
(c) static: plain networks of (a)'s final alive widths, timed after (a) finishes, each static
    epoch alternating with one more epoch of (a) at its final width.

``shrink_speedup_vs_mask`` = total training time of (b) / that of (a) over the run;
``end_epoch_time_ratio_vs_static`` = median epoch time of (a) at its final width / median
epoch time of (c) (target <= 1.25). Training time only (the engine's ``train_s``: forward,
backward, optimizer and the shrink itself; not evaluation or checkpoints). Figures are printed
last, one ``name=value`` per line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

import torch

from widthlab.data import load_splits
from widthlab.engine.trainer import Engine, TrainConfig
from widthlab.nn.bank import ModelSpec
from widthlab.nn.gated import SparsifierGate

LAMBDAS = (1e-4, 1e-3, 1e-2)
START = 500


def epoch_time(eng: Engine) -> float:
    """Run one more epoch of ``eng``; its training seconds."""
    before = eng.state.train_s
    eng.run(until=eng.state.epoch + 1)
    return eng.state.train_s - before


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60, help="the journal: 60")
    ap.add_argument("--train-size", type=int, default=None,
                    help="use the first N training images (default: all 55,000)")
    ap.add_argument("--static-epochs", type=int, default=5,
                    help="epochs of (c), each alternating with one more of (a)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = load_splits("mnist")
    base = dict(dataset="mnist", train_size=args.train_size, device="cpu", study="bench",
                eval_splits=("test",), stats_epochs="none")
    specs = [ModelSpec((START,), seed=0, variant="sparsifier", options=(("lambda", lam),))
             for lam in LAMBDAS]
    extra = args.static_epochs
    with tempfile.TemporaryDirectory() as tmp:
        engines = {mode: Engine(specs, TrainConfig(epochs=args.epochs + extra, shrink_mode=mode,
                                                   **base),
                                tmp, modifiers=[lambda: SparsifierGate(list(LAMBDAS))],
                                data=splits, progress=False)
                   for mode in ("remove", "mask")}
        times: dict[str, list[float]] = {"remove": [], "mask": []}
        widths = []
        for _ in range(args.epochs):
            for mode, eng in engines.items():
                times[mode].append(epoch_time(eng))
            widths.append([a[0] for a in engines["remove"].bank.archs])
            print(f"epoch {len(widths)}: widths {widths[-1]}  shrink {times['remove'][-1]:.2f}s"
                  f"  mask {times['mask'][-1]:.2f}s", file=sys.stderr)
        final = widths[-1]
        static = Engine([ModelSpec((max(w, 1),), seed=0) for w in final],
                        TrainConfig(epochs=extra, **base), tmp, data=splits, progress=False)
        end_shrunk, end_static = [], []
        for _ in range(extra):
            end_shrunk.append(epoch_time(engines["remove"]))
            end_static.append(epoch_time(static))
        now = [a[0] for a in engines["remove"].bank.archs]
        print(f"static widths {final}; sparsifier widths after the timed extra epochs {now}",
              file=sys.stderr)

    total_shrink, total_mask = sum(times["remove"]), sum(times["mask"])
    print(f"epochs={args.epochs}")
    print(f"start_width={START}")
    print(f"lambdas={','.join(f'{v:g}' for v in LAMBDAS)}")
    print(f"final_widths={','.join(str(w) for w in final)}")
    print(f"shrink_first_epoch_s={times['remove'][0]:.3f}")
    print(f"shrink_last_epoch_s={times['remove'][-1]:.3f}")
    print(f"mask_median_epoch_s={statistics.median(times['mask']):.3f}")
    print(f"shrink_total_s={total_shrink:.2f}")
    print(f"mask_total_s={total_mask:.2f}")
    print(f"shrink_s={engines['remove'].state.shrink_s:.3f}")
    print(f"end_epoch_shrunk_median_s={statistics.median(end_shrunk):.3f}")
    print(f"end_epoch_static_median_s={statistics.median(end_static):.3f}")
    print(f"end_epoch_speedup_vs_mask="
          f"{statistics.median(times['mask'][-extra:]) / statistics.median(end_shrunk):.3f}")
    print(f"shrink_speedup_vs_mask={total_mask / total_shrink:.3f}")
    print(f"end_epoch_time_ratio_vs_static="
          f"{statistics.median(end_shrunk) / statistics.median(end_static):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
