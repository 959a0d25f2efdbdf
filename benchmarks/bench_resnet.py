"""Learned widths of ResNet-20 on FashionMNIST against the practitioner's alternatives at the
same multiply-adds (issue 32): the resnet study's comparison, on the CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_resnet.py          # < 40 min, 2 cores
    .venv/bin/python benchmarks/bench_resnet.py --dataset mnist
    .venv/bin/python benchmarks/bench_resnet.py --quick                    # the CI smoke profile
    .venv/bin/python benchmarks/bench_resnet.py --price 8e-3 --epochs 6    # any profile field
    .venv/bin/python benchmarks/bench_resnet.py --seeds 0,1,2 --store runs  # verdicts over seeds

It runs ``widthlab study resnet --profile standard`` (or ``--quick``: the quick profile) on
one dataset into ``--store`` (default a fresh temporary folder; a kept store resumes and
reuses finished runs), prints the final networks and the verdicts, and last:

``dense_acc=``, ``learned_acc=`` (final-epoch test accuracy, %), ``learned_macs_ratio=``
(dense multiply-adds / learned), ``latency_speedup=`` (dense / learned batch-64 latency, one
thread, median; BatchNorm folded into the convs, channels-last), ``latency_speedup_eager=``
(the same of the plain eager networks), then per alternative ``<name>_acc=`` and
``<name>_macs_ratio=`` (uniform, torch_pruning, slimming, widthlab_cut) at the learned
network's multiply-adds. With ``--seeds`` every seed's study runs in turn (one store; a
kept store resumes), then the verdicts over the seeds (:func:`~widthlab.studies.resnet.verdicts.
across_seeds`: the seed means, each margin with its spread), and the figures printed last are
the seed means after ``seeds=``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time

import pandas as pd

from widthlab.store import Store
from widthlab.studies.resnet import PROFILES, STUDY, ResnetProfile
from widthlab.studies.resnet.config import ALTERNATIVES, DENSE, LEARNED
from widthlab.studies.resnet.verdicts import across_seeds


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds takes distinct integers like 0,1,2; got "
                                         f"{text!r}")
    return seeds


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist", choices=("mnist", "fashion-mnist"))
    ap.add_argument("--quick", action="store_true", help="the quick (CI smoke) profile")
    ap.add_argument("--store", default=None, help="store folder (default: a temporary one)")
    ap.add_argument("--seeds", type=_seeds, default=None,
                    help="several seeds, e.g. 0,1,2: each seed's study, then the verdicts on "
                         "the seeds' means with their spread; the figures printed last are "
                         "the means (default: the profile's seed)")
    for f in dataclasses.fields(ResnetProfile):
        kind = {"int": int, "int | None": int, "float": float, "str": str}.get(f.type)
        if kind is not None:
            ap.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                            type=kind,
                            help=f.metadata.get("help", ""))
    return ap.parse_args(argv)


def _one_seed(args, p: ResnetProfile, store: str):
    """Run (or resume) the study at ``p`` and print its tables and verdicts; the tables."""
    start = time.perf_counter()
    runs = STUDY.run(args.dataset, p, store=store)
    wall = time.perf_counter() - start
    t = STUDY.tables(Store.open(store), {args.dataset: runs.runs})[args.dataset]
    print(f"--- seed {p.seed}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(STUDY.summary_frame(t).to_string())
        print(t.groups.to_string())
        c = t.curves[["method", "epoch", "acc", "macs", "epoch_time"]]
        print(c.round(3).to_string())
    for v in STUDY.verdicts({args.dataset: t})[args.dataset]:
        print(f"[{'holds' if v.holds else 'FAILS'}] {v.claim}: {v.text}")
    print(f"budget: {t.budget}\nwall_s={wall:.0f}", flush=True)
    return t


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    profile = "quick" if args.quick else "standard"
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(ResnetProfile)
                 if getattr(args, f.name, None) is not None}
    p = dataclasses.replace(PROFILES[profile], **overrides)
    seeds = args.seeds or [p.seed]
    store = args.store or tempfile.mkdtemp(prefix="bench_resnet_")
    print(f"profile {profile}: {p.to_dict()}\nseeds {seeds}\nstore {store}", flush=True)
    finals = {s: _one_seed(args, dataclasses.replace(p, seed=s), store).final for s in seeds}
    if len(seeds) > 1:
        print(f"--- {len(seeds)} seeds")
        for v in across_seeds(finals):
            print(f"[{'holds' if v.holds else 'FAILS'}] {v.claim}: {v.text}")
    both = [f.set_index("method") for f in finals.values()
            if {DENSE, LEARNED} <= set(f.method)]
    if len(both) < len(seeds):
        print("dense or learned run missing")
        return 1

    def mean(method: str, col: str) -> float:  # over the seeds
        return sum(float(f[col][method]) for f in both) / len(both)

    print(f"seeds={len(seeds)}")
    print(f"dense_acc={mean(DENSE, 'acc'):.2f} learned_acc={mean(LEARNED, 'acc'):.2f} "
          f"learned_macs_ratio={mean(LEARNED, 'macs_ratio'):.3f} "
          f"latency_speedup={mean(LEARNED, 'speedup_b64'):.3f} "
          f"latency_speedup_eager={mean(LEARNED, 'speedup_eager_b64'):.3f}")
    present = [m for m in ALTERNATIVES if all(m in f.index for f in both)]
    print(" ".join(f"{m.replace('-', '_')}_acc={mean(m, 'acc'):.2f} "
                   f"{m.replace('-', '_')}_macs_ratio={mean(m, 'macs_ratio'):.3f}"
                   for m in present))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
