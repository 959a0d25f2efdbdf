"""Learned widths of ResNet-20 on FashionMNIST against the practitioner's alternatives at the
same multiply-adds (issue 32): the resnet study's comparison, on the CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_resnet.py          # < 40 min, 2 cores
    .venv/bin/python benchmarks/bench_resnet.py --dataset mnist
    .venv/bin/python benchmarks/bench_resnet.py --quick                    # the CI smoke profile
    .venv/bin/python benchmarks/bench_resnet.py --price 8e-3 --epochs 6    # any profile field

It runs ``widthlab study resnet --profile standard`` (or ``--quick``: the quick profile) on
one dataset into ``--store`` (default a fresh temporary folder; a kept store resumes and
reuses finished runs), prints the final networks and the verdicts, and last:

``dense_acc=``, ``learned_acc=`` (final-epoch test accuracy, %), ``learned_macs_ratio=``
(dense multiply-adds / learned), ``latency_speedup=`` (dense / learned batch-64 latency, one
thread, median; BatchNorm folded into the convs, channels-last), ``latency_speedup_eager=``
(the same of the plain eager networks), then per alternative ``<name>_acc=`` and
``<name>_macs_ratio=`` (uniform, torch_pruning, slimming, widthlab_cut) at the learned
network's multiply-adds.
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


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist", choices=("mnist", "fashion-mnist"))
    ap.add_argument("--quick", action="store_true", help="the quick (CI smoke) profile")
    ap.add_argument("--store", default=None, help="store folder (default: a temporary one)")
    for f in dataclasses.fields(ResnetProfile):
        kind = {"int": int, "int | None": int, "float": float, "str": str}.get(f.type)
        if kind is not None:
            ap.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                            type=kind,
                            help=f.metadata.get("help", ""))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    profile = "quick" if args.quick else "standard"
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(ResnetProfile)
                 if getattr(args, f.name, None) is not None}
    p = dataclasses.replace(PROFILES[profile], **overrides)
    store = args.store or tempfile.mkdtemp(prefix="bench_resnet_")
    print(f"profile {profile}: {p.to_dict()}\nstore {store}", flush=True)
    start = time.perf_counter()
    runs = STUDY.run(args.dataset, p, store=store)
    wall = time.perf_counter() - start
    t = STUDY.tables(Store.open(store), {args.dataset: runs.runs})[args.dataset]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(STUDY.summary_frame(t).to_string())
        print(t.groups.to_string())
        c = t.curves[["method", "epoch", "acc", "macs", "epoch_time"]]
        print(c.round(3).to_string())
    for v in STUDY.verdicts({args.dataset: t})[args.dataset]:
        print(f"[{'holds' if v.holds else 'FAILS'}] {v.claim}: {v.text}")
    print(f"budget: {t.budget}\nwall_s={wall:.0f}")
    f = t.final.set_index("method")
    if DENSE not in f.index or LEARNED not in f.index:
        print("dense or learned run missing")
        return 1
    print(f"dense_acc={f.acc[DENSE]:.2f} learned_acc={f.acc[LEARNED]:.2f} "
          f"learned_macs_ratio={f.macs_ratio[LEARNED]:.3f} "
          f"latency_speedup={f.speedup_b64[LEARNED]:.3f} "
          f"latency_speedup_eager={f.speedup_eager_b64[LEARNED]:.3f}")
    alts = [f"{m.replace('-', '_')}_acc={f.acc[m]:.2f} {m.replace('-', '_')}_macs_ratio="
            f"{f.macs_ratio[m]:.3f}" for m in ALTERNATIVES if m in f.index]
    print(" ".join(alts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
