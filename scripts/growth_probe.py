"""Research probe: does the growth rule end at the same width from any start? (issue 18)

Trains, in one fused engine run (quick budget: 10,000 images, 4 epochs), one-hidden-layer
networks that start at 8, 64, 512 and 2048 units under the growth study's
:class:`widthlab.nn.growth.GrowingGate` (:func:`widthlab.studies.growth.config.growth_gate`) at
three prices lambda, for each initialisation of new units (``gradmax``, ``random``; ``none`` =
the plain sparsifier), then static networks of the mean final width of each (init, lambda) in a
second run. Prints one row per model (with its width after every epoch) and, last, one
``name=value`` per line: for each (init, lambda) the final widths, their spread over the starts
(largest distance to their mean, relative to the mean; target <= 0.20), the mean test accuracy
minus that of the static networks (target within 0.3 points) and the training FLOPs of
starting at the smallest and at the largest width; the two runs' wall times.

    PYTHONPATH=src python scripts/growth_probe.py --store /tmp/probe [--dataset fashion-mnist]
        [--set rule=candidate --set grace=40] [--rule-opt quantile=0.25] [--trace FILE]

Defaults are the growth study's quick profile (the benefit rule); ``--set`` overrides any
profile field, ``--rule-opt`` any :class:`~widthlab.nn.growth.BenefitRule` setting, ``--trace``
writes every benefit-rule decision (step, model, live width, benefit, units added or removed;
with ``--cohorts`` also the median cost of every birth cohort). Keep ``--threads 1`` on a shared
machine: the gradmax-only run of both rules takes 15-30 s, all three inits 60-90 s.

FLOPs count the hidden layer only, per step ``B * w * (4 * in + 6 * out)`` (the first layer's
backward forms no input gradient), summed with the recorded ``unit_steps``.
"""

from __future__ import annotations

import argparse
import ast
import math
import time
import typing

import numpy as np
import pandas as pd
import torch

from widthlab.data import load_splits
from widthlab.engine.trainer import TrainConfig, train
from widthlab.nn.bank import ModelSpec
from widthlab.nn.growth import GrowingGate, output_weight, removal_costs
from widthlab.store import Store
from widthlab.studies.growth.config import PROFILES, GrowthProfile, grid, growth_gate


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="/tmp/growth-probe")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--starts", default="8,64,512,2048")
    ap.add_argument("--prices", default="1e-4,1e-3,1e-2")
    ap.add_argument("--inits", default="gradmax,random,none")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a GrowthProfile field")
    ap.add_argument("--rule-opt", action="append", default=[], metavar="NAME=VALUE",
                    help="override a BenefitRule setting")
    ap.add_argument("--trace", default=None, help="write every benefit-rule decision here")
    ap.add_argument("--cohorts", action="store_true", help="trace cohort costs too")
    ap.add_argument("--no-static", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    return ap.parse_args()


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def profile(args: argparse.Namespace) -> GrowthProfile:
    """The quick profile with the probe's starts, prices, inits, seeds and ``--set``s."""
    hints = typing.get_type_hints(GrowthProfile)
    over = {}
    for item in args.set:
        key, _, text = item.partition("=")
        value = _value(text)
        over[key] = float(value) if hints.get(key) is float else value
    return PROFILES["quick"].replace(
        starts=tuple(int(v) for v in args.starts.split(",")),
        lambdas=tuple(float(v) for v in args.prices.split(",")),
        inits=tuple(args.inits.split(",")), seeds=args.seeds, **over)


def _trace(path: str, cohorts: bool) -> None:
    """Log every benefit-rule decision (step, model, live width, benefit, units +/-)."""
    out = open(path, "w")  # noqa: SIM115 - kept open for the run
    benefit, decide = GrowingGate.benefit, GrowingGate._decide
    seen = {}

    def traced_benefit(self, bank, m, act, logits, y, step):
        got = benefit(self, bank, m, act, logits, y, step)
        seen[m] = got
        if cohorts:  # median cost of every birth cohort, young units included
            a, b = self.slices[m]
            cost = removal_costs(logits, act[:, a:b], output_weight(bank, m), y,
                                 linear=self.rule.linear)
            born = self.born[a:b]
            parts = [f"{max(int(t), -1)}:{int((born == t).sum())}:"
                     f"{float(cost[born == t].median()):.2g}" for t in torch.unique(born)]
            out.write(f"# {step} {m} " + " ".join(parts) + "\n")
        return got

    def traced_decide(self, bank, m, act, logits, y, step, *rest):
        n = decide(self, bank, m, act, logits, y, step, *rest)
        got = seen.pop(m, None)
        if got is not None:
            out.write(f"{step} {m} {got.width} {got.value} {n}\n")
            out.flush()
        return n

    GrowingGate.benefit, GrowingGate._decide = traced_benefit, traced_decide


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    summary = table.groupby(["init", "lam"]).agg(mean_w=("final", "mean"),
                                                 min_w=("final", "min"),
                                                 max_w=("final", "max"),
                                                 acc=("test_acc", "mean"))
    summary["spread"] = np.maximum(summary.max_w - summary.mean_w,
                                   summary.mean_w - summary.min_w) / summary.mean_w
    return summary


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    p = profile(args)
    g = grid(p)
    specs = [ModelSpec((w,), seed=s, variant="growing",
                       options=(("init", i), ("lambda", lam))) for i, lam, w, s in g]
    common = dict(dataset=args.dataset, epochs=p.epochs, train_size=p.train_size,
                  device="cpu", stats_epochs="none", eval_splits=("test",), study="probe")
    cfg = TrainConfig(**common, shrink_every=p.every if p.rule == "benefit" else "epoch")
    steps = p.epochs * math.ceil(p.train_size / cfg.batch_size)
    rule = {k: _value(v) for k, v in (item.partition("=")[::2] for item in args.rule_opt)}
    if args.trace:
        _trace(args.trace, args.cohorts)
    data = load_splits(args.dataset, val_size=cfg.val_size, seed=cfg.data_seed)
    t0 = time.perf_counter()
    run_id = train(specs, cfg, args.store, modifiers=[lambda: growth_gate(p, g, steps, **rule)],
                   data=data, progress=False)
    grow_s = time.perf_counter() - t0
    st = Store(args.store)
    met = st.metrics(run_id, wide=True)
    train_rows = met[met.split == "train"]
    tr = train_rows[train_rows.epoch == p.epochs].set_index("model")
    te = met[(met.split == "test") & (met.epoch == p.epochs)].set_index("model")
    curves = train_rows.pivot(index="model", columns="epoch", values="kept_width")
    d_in, d_out = data.train.x.shape[1], 10
    rows = []
    for m, (i, lam, w, s) in enumerate(g):
        if m not in tr.index:  # a failed model
            continue
        rows.append(dict(init=i, lam=lam, start=w, seed=s, final=int(tr.loc[m, "kept_width"]),
                         grown=int(tr.loc[m, "grown"]), test_acc=float(te.loc[m, "acc"]),
                         path="/".join(str(int(v)) for v in curves.loc[m]),
                         train_gflops=cfg.batch_size * (4 * d_in + 6 * d_out)
                         * float(tr.loc[m, "unit_steps"]) / 1e9))
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print(table.to_string(index=False))
    summary = summarise(table)
    static_acc = {}
    t1 = time.perf_counter()
    if not args.no_static:
        keys = list(summary.index)
        widths = [max(1, round(summary.loc[k, "mean_w"])) for k in keys]
        sspecs = [ModelSpec((w,), seed=s) for w in widths for s in range(args.seeds)]
        sid = train(sspecs, TrainConfig(**common), args.store, data=data, progress=False)
        sm = st.metrics(sid, wide=True)
        sm = sm[(sm.epoch == p.epochs) & (sm.split == "test")].set_index("model")["acc"]
        for j, k in enumerate(keys):
            static_acc[k] = float(np.mean([sm.loc[j * args.seeds + s]
                                           for s in range(args.seeds)]))
    static_s = time.perf_counter() - t1
    print(summary.to_string())
    report(table, summary, static_acc)
    print(f"grow_run_s={grow_s:.1f}")
    print(f"static_run_s={static_s:.1f}")


def report(table: pd.DataFrame, summary: pd.DataFrame, static_acc: dict) -> None:
    lo, hi = table.start.min(), table.start.max()
    for (i, lam), row in summary.iterrows():
        key = f"{i}_lam{lam:g}"
        sel = table[(table.init == i) & (table.lam == lam)]
        print(f"{key}_widths={'/'.join(str(v) for v in sel.final)}")
        print(f"{key}_spread={row.spread:.3f}")
        print(f"{key}_test_acc={100 * row.acc:.2f}")
        if (i, lam) in static_acc:
            print(f"{key}_static_acc={100 * static_acc[(i, lam)]:.2f}")
            print(f"{key}_acc_minus_static={100 * (row.acc - static_acc[(i, lam)]):+.2f}")
        flops = sel.set_index("start")["train_gflops"]
        print(f"{key}_gflops_from_{lo}={flops.loc[lo].mean():.1f}")
        print(f"{key}_gflops_from_{hi}={flops.loc[hi].mean():.1f}")


if __name__ == "__main__":
    main()
