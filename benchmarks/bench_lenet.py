"""Learned widths of LeNet-300-100 and LeNet-5-Caffe on MNIST: gates, L1 prices, real shrinking.

    .venv/bin/python benchmarks/bench_lenet.py            # the full run (target < 40 min, 2 cores)
    .venv/bin/python benchmarks/bench_lenet.py --quick    # a few minutes: short runs, few prices
    .venv/bin/python benchmarks/bench_lenet.py --no-cut   # without the pruned-after-training rows
    .venv/bin/python benchmarks/bench_lenet.py --kinds hard_concrete   # the L0 gates only

The networks are :mod:`widthlab.nn.lenet`'s, plain ``nn.Module``s written the way a user would,
gated with :func:`widthlab.nn.surgery.gate_layers`: LeNet-300-100 on the input features of all
three Linears (the 784 pixels, the 300 and the 100 units), LeNet-5-Caffe (conv 20, conv 50,
fc 500, fc 10, ReLU and 2x2 max-pooling after each conv) on both convs' channels and both
Linears' input features. Each price is one run of the lenet study's
:func:`~widthlab.studies.lenet.train.gated_run` (``widthlab.engine.modules.train_module``:
Adam 1e-3, gates ``--gate-lr`` 1e-2, cosine schedule, batch 100, the 60,000 training images, the
price off for the last ``--free-frac`` (a third) of the epochs), shrunk after every epoch with
the journal's rule (gate exactly dead). A row is the widths after the last epoch and the
**final-epoch** test error; weights are computed from the widths the same way for widthlab's
and the published rows (:func:`widthlab.nn.lenet.lenet_weights`: conv in * out * 25, linear
in * out, no biases). The settings are the study's full profile
(``widthlab study lenet --profile full`` stores the same runs).

For comparison (``--no-cut`` skips it), each network is also trained without gates for the
same epochs, pruned after training by :func:`widthlab.frontier.cut_layers` (``width_frontier``
on every Linear with one consumer Linear, layer by layer, deciding on training images within
half a point of their accuracy) and fine-tuned for one epoch
(:func:`~widthlab.studies.lenet.train.cut_run`).

Both gate kinds (``--kinds``, default both): the L1 gates ``relu(g)`` at ``--prices300`` /
``--prices5``, and hard-concrete gates (Louizos et al. 2018, the L0 row's method: seeded
stochastic gates in training, their deterministic clamp in evaluation, the expected L0 norm
priced per unit) at ``--hc-prices300`` / ``--hc-prices5``; LeNet-300-100's 100-unit gates
priced 2x (``--hc-scales300``) and its price-free last third trained at fixed deterministic
gates (``--hc-fix-gates300``; ``--hc-ramp300`` raises its price linearly instead of at once),
its weights under L2 weight decay 5e-4 (``--hc-weight-decay300``; ``--hc-dropout300`` adds
dropout on the kept units, off by default: it cost error in the probes), trained for 150
epochs (``--hc-epochs300``) on ``(1-a)*CE + a*T^2*KL(teacher || student)`` (knowledge
distillation, ``--hc-distill300 a`` 0.5, ``--hc-distill-temp300 T`` 4) from the logits of a
dense ``--hc-teacher300`` (LeNet-5-Caffe) trained first on the same images, on training images
translated by up to ``--hc-shift300`` (1) pixel, the teacher's logits of each translation
(``--hc-distill300 0 --hc-shift300 0 --hc-epochs300 0``: the plain 30-epoch runs).
The published rows report their best epoch (RigL its last); widthlab's rows the final epoch, and the
``# ... vs ...`` lines say which published rows each gate kind reaches.

The figures printed last: ``lenet300_error`` / ``lenet300_widths`` and ``lenet5_error`` /
``lenet5_widths`` of the L1 gated row with the smallest total width within the error bound
(1.6%, 1.0%; the lowest-error row when none is within), their weights, and
``end_epoch_time_ratio`` (last epoch's training time / first epoch's, of that LeNet-5 row);
the same for the hard-concrete rows with the suffix ``_hard_concrete``
(``lenet300_error_hard_concrete=``, ``lenet300_features_hard_concrete=``, ...);
``lenet300_features`` is the total of the row's widths (the input features kept).
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch

from widthlab.data import load_splits
from widthlab.nn.lenet import FRONTIER_LAYERS, LENET5, LENET300, lenet_weights
from widthlab.studies.lenet.analysis import GATED, distilled
from widthlab.studies.lenet.config import (
    GATE_KINDS,
    L1,
    PROFILES,
    LenetProfile,
    prices_of,
    settings,
)
from widthlab.studies.lenet.references import BOUND, PUBLISHED, widths_text
from widthlab.studies.lenet.train import cut_run, gated_run
from widthlab.studies.lenet.verdicts import reached_rows


def run(network: str, price: float, data, p: LenetProfile, kind: str = L1) -> dict:
    tag = "" if kind == L1 else f" {kind}"

    def progress(r: dict) -> None:
        print(f"  {network}{tag} price={price:g} epoch {r['epoch']}: error "
              f"{100 * r['test_error']:.2f}% widths {widths_text(r['row_widths'])} "
              f"train loss {r['train_loss']:.4f} {r['epoch_time']:.1f}s", flush=True)

    recs = gated_run(network, price, data, p, on_epoch=progress, kind=kind)
    widths = recs[-1]["row_widths"]
    note = distilled(settings(p, network, "gated", kind))
    row = {"network": network, "method": f"{GATED[kind]}, price {price:g}{note}", "price": price,
           "kind": kind, "widths": widths, "error": 100 * recs[-1]["test_error"],
           "weights": lenet_weights(network, widths),
           "time_ratio": recs[-1]["epoch_time"] / recs[0]["epoch_time"],
           "curve": [(r["epoch"], round(100 * r["test_error"], 2), widths_text(r["row_widths"]))
                     for r in recs]}
    print(f"{network}{tag} price={price:g}: widths={widths_text(widths)} "
          f"error={row['error']:.2f}% weights={row['weights']} "
          f"epoch_time {recs[0]['epoch_time']:.1f}s -> {recs[-1]['epoch_time']:.1f}s "
          f"curve={row['curve']}", flush=True)
    return row


def cut(network: str, data, p: LenetProfile) -> dict:
    """The network without gates, cut after training and fine-tuned one epoch."""
    res = cut_run(network, data, p, on_epoch=lambda r: print(
        f"  {network} no gates epoch {r['epoch']}: error {100 * r['test_error']:.2f}% "
        f"{r['epoch_time']:.1f}s", flush=True))
    ft = res["finetune"]
    widths = ft["row_widths"]
    layers = ", ".join(f"{c.layer} {c.width} -> {c.k} (decision accuracy {c.acc_before:.4f} -> "
                       f"{c.acc_after:.4f})" for c in res["cuts"])
    row = {"network": network, "method": "width_frontier cut + 1 epoch fine-tune",
           "widths": widths, "error": 100 * ft["test_error"],
           "weights": lenet_weights(network, widths)}
    print(f"{network} frontier cut of {', '.join(FRONTIER_LAYERS[network])}: {layers}; "
          f"dense error {100 * res['dense'][-1]['test_error']:.2f}%, after the cut "
          f"{100 * res['cut_error']:.2f}%, after one epoch of fine-tuning {row['error']:.2f}% "
          f"({ft['epoch_time']:.1f}s); widths={widths_text(widths)} weights={row['weights']}",
          flush=True)
    return row


def best(rows: list[dict], network: str, kind: str = L1) -> dict | None:
    mine = [r for r in rows if r["network"] == network and r["kind"] == kind]
    if not mine:
        return None
    within = [r for r in mine if r["error"] <= BOUND[network]]
    return (min(within, key=lambda r: (sum(r["widths"]), r["error"])) if within
            else min(mine, key=lambda r: r["error"]))


def table(rows: list[dict], cuts: list[dict]) -> None:
    print("| network | method | learned widths | weights | test error |")
    print("| --- | --- | --- | --- | --- |")
    for net, method, widths, err in PUBLISHED:
        when = "" if "end of training" in method else " (best epoch)"
        print(f"| {net} | {method} | {widths_text(widths)} | {lenet_weights(net, widths)} "
              f"| {err}%{when} |")
    for r in [*rows, *cuts]:
        print(f"| {r['network']} | {r['method']} | {widths_text(r['widths'])} | "
              f"{r['weights']} | {r['error']:.2f}% |")


def profile(args) -> LenetProfile:
    """The study's full profile with the command line's changes (``--quick``: short runs on
    all 60,000 images, two L1 prices and one hard-concrete price for LeNet-300-100, one of each
    for LeNet-5-Caffe)."""
    e300, e5 = (3, 2) if args.quick else (None, None)
    p300 = [2e-3, 8e-3] if args.quick else None
    p5 = [1e-3] if args.quick else None
    hc300 = [3e-3] if args.quick else None
    hc5 = [1e-3] if args.quick else None
    changes = {"epochs300": args.epochs300 or e300, "epochs5": args.epochs5 or e5,
               "prices300": args.prices300 or p300, "prices5": args.prices5 or p5,
               "hc_prices300": args.hc_prices300 or hc300, "hc_prices5": args.hc_prices5 or hc5,
               "hc_gate_lr": args.hc_gate_lr, "hc_init": args.hc_init,
               "hc_ramp300": args.hc_ramp300, "hc_fix_gates300": args.hc_fix_gates300,
               "hc_per_weight300": args.hc_per_weight300,
               "hc_dropout300": tuple(args.hc_dropout300) if args.hc_dropout300 else None,
               "hc_dropout_free_only300": args.hc_dropout_free_only300,
               "hc_weight_decay300": args.hc_weight_decay300,
               "hc_epochs300": e300 if args.hc_epochs300 is None else args.hc_epochs300,
               "hc_distill300": args.hc_distill300,
               "hc_distill_temp300": args.hc_distill_temp300,
               "hc_teacher300": args.hc_teacher300, "hc_shift300": args.hc_shift300,
               "hc_scales300": tuple(args.hc_scales300) if args.hc_scales300 else None,
               "gate_kinds": tuple(args.kinds),
               "gate_lr": args.gate_lr, "free_frac": args.free_frac, "seed": args.seed,
               "warmup300": args.warmup300, "warmup5": args.warmup5,
               "scales300": tuple(args.scales300) if args.scales300 else None}
    return PROFILES["full"].replace(**{k: v for k, v in changes.items() if v is not None})


def hc_arguments(ap: argparse.ArgumentParser) -> None:
    """The hard-concrete runs' options (``--hc-*``)."""
    ap.add_argument("--hc-prices300", type=float, nargs="+", default=None,
                    help="hard-concrete prices of LeNet-300-100, per unit")
    ap.add_argument("--hc-prices5", type=float, nargs="+", default=None,
                    help="hard-concrete prices of LeNet-5-Caffe, per unit")
    ap.add_argument("--hc-gate-lr", type=float, default=None,
                    help="learning rate of log_alpha (default: the gates')")
    ap.add_argument("--hc-init", type=float, default=None,
                    help="initial log_alpha (default log 4)")
    ap.add_argument("--hc-ramp300", type=float, default=None,
                    help="fraction of LeNet-300-100's epochs over which the hard-concrete "
                         "price rises")
    ap.add_argument("--hc-fix-gates300", action=argparse.BooleanOptionalAction, default=None,
                    help="LeNet-300-100's price-free last epochs at fixed deterministic "
                         "hard-concrete gates")
    ap.add_argument("--hc-per-weight300", action=argparse.BooleanOptionalAction,
                    default=None, help="price LeNet-300-100's hard-concrete units per weight")
    ap.add_argument("--hc-scales300", type=float, nargs=3, default=None,
                    help="LeNet-300-100's hard-concrete price multipliers (pixels, 300, 100)")
    ap.add_argument("--hc-dropout300", type=float, nargs="+", default=None,
                    help="dropout rates on LeNet-300-100's hard-concrete gated units (one, or "
                         "pixels 300 100)")
    ap.add_argument("--hc-dropout-free-only300", action=argparse.BooleanOptionalAction,
                    default=None, help="that dropout only in the price-free last epochs")
    ap.add_argument("--hc-weight-decay300", type=float, default=None,
                    help="L2 weight decay of LeNet-300-100's hard-concrete runs")
    ap.add_argument("--hc-epochs300", type=int, default=None,
                    help="epochs of LeNet-300-100's hard-concrete runs (0: --epochs300)")
    ap.add_argument("--hc-distill300", type=float, default=None,
                    help="weight of distillation from a dense teacher in LeNet-300-100's "
                         "hard-concrete runs (0: none)")
    ap.add_argument("--hc-distill-temp300", type=float, default=None,
                    help="the distillation's softmax temperature")
    ap.add_argument("--hc-teacher300", choices=[LENET300, LENET5], default=None,
                    help="the dense teacher network (trained on the same images)")
    ap.add_argument("--hc-shift300", type=int, default=None,
                    help="translate LeNet-300-100's hard-concrete training images by up to "
                         "this many pixels (distilled from the teacher's logits of each)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs, fewer prices")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--gate-lr", type=float, default=None,
                    help="Adam learning rate of the gates (default 1e-2)")
    ap.add_argument("--free-frac", type=float, default=None,
                    help="fraction of the epochs at the end trained without the price (1/3)")
    ap.add_argument("--warmup300", type=float, default=None,
                    help="fraction of LeNet-300-100's epochs at the start trained without "
                         "the price (full profile: 1/6)")
    ap.add_argument("--warmup5", type=float, default=None,
                    help="the same for LeNet-5-Caffe (0)")
    ap.add_argument("--scales300", type=float, nargs=3, default=None,
                    help="LeNet-300-100's price multipliers of the pixel, 300-unit and "
                         "100-unit gates (full profile: 8 2 1)")
    ap.add_argument("--network", choices=["both", "300", "5"], default="both")
    ap.add_argument("--no-cut", action="store_true",
                    help="skip the networks pruned after training (width_frontier)")
    ap.add_argument("--epochs300", type=int, default=None)
    ap.add_argument("--epochs5", type=int, default=None)
    ap.add_argument("--prices300", type=float, nargs="+", default=None)
    ap.add_argument("--prices5", type=float, nargs="+", default=None)
    ap.add_argument("--kinds", nargs="+", choices=GATE_KINDS, default=list(GATE_KINDS),
                    help="gate kinds to train (default both)")
    hc_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    p = profile(args)
    nets = {"both": [LENET300, LENET5], "300": [LENET300], "5": [LENET5]}[args.network]
    data = load_splits("mnist", val_size=0)
    start = time.perf_counter()
    rows = [run(net, price, data, p, kind) for net in nets for kind in p.gate_kinds
            for price in prices_of(p, net, kind)]
    cuts = [] if args.no_cut else [cut(net, data, p) for net in nets]
    table(rows, cuts)
    print(f"wall_minutes={(time.perf_counter() - start) / 60:.1f}")
    for c in cuts:
        tag = "lenet300" if c["network"] == LENET300 else "lenet5"
        print(f"{tag}_cut_widths={widths_text(c['widths'])}")
        print(f"{tag}_cut_weights={c['weights']}")
        print(f"{tag}_cut_error={c['error']:.2f}")
    for kind in p.gate_kinds:
        suffix = "" if kind == L1 else f"_{kind}"
        for network, tag in ((LENET300, "lenet300"), (LENET5, "lenet5")):
            b = best(rows, network, kind) if network in nets else None
            if b is None:
                continue
            print(f"{tag}_weights{suffix}={b['weights']}")
            print(f"{tag}_end_epoch_time_ratio{suffix}={b['time_ratio']:.3f}")
            print(f"{tag}_error{suffix}={b['error']:.2f}")
            print(f"{tag}_widths{suffix}={widths_text(b['widths'])}")
            print(f"{tag}_features{suffix}={sum(b['widths'])}")
        for line in reached(rows, kind):
            print(line)
    last = best(rows, LENET5 if LENET5 in nets else LENET300, p.gate_kinds[0])
    print(f"end_epoch_time_ratio={last['time_ratio']:.3f}")
    return 0


def reached(rows: list[dict], kind: str) -> list[str]:
    """Which published rows some final-epoch row of ``kind`` reaches (the lenet study's
    :func:`~widthlab.studies.lenet.verdicts.reached_rows`: at most the row's error with at
    most its total width on LeNet-300-100, at most its weights on LeNet-5-Caffe)."""
    frame = pd.DataFrame([{"network": r["network"], "method": r["method"], "price": r["price"],
                           "widths": widths_text(r["widths"]), "total_width": sum(r["widths"]),
                           "weights": r["weights"], "error": r["error"], "gate_kind": r["kind"]}
                          for r in rows if "kind" in r])
    out = []
    for (net, method, widths, err), hit in reached_rows(frame, kind) if len(frame) else []:
        what = (f"reached by price {hit.price:g} ({hit.widths}, {hit.error:.2f}%)"
                if hit is not None else "not reached")
        when = "its last epoch" if "end of training" in method else "its best epoch"
        out.append(f"# {GATED[kind]} (final epoch) vs {net} {method} {widths_text(widths)} "
                   f"{err}% ({when}): {what}")
    return out


if __name__ == "__main__":
    sys.exit(main())
