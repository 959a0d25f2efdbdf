"""Learned widths of LeNet-300-100 and LeNet-5-Caffe on MNIST: gates, L1 prices, real shrinking.

    .venv/bin/python benchmarks/bench_lenet.py            # the full run (target < 40 min, 2 cores)
    .venv/bin/python benchmarks/bench_lenet.py --quick    # a few minutes: short runs, 2 prices

Both networks are written as plain ``nn.Module``s the way a user would and gated with
:func:`widthlab.nn.surgery.gate_layers`: LeNet-300-100 on the input features of all three
Linears (the 784 pixels, the 300 and 100 hidden units), LeNet-5-Caffe (conv 20, conv 50,
fc 500, fc 10, ReLU and 2x2 max-pooling after each conv) on both convs' channels and both
Linears' input features. Each price is one run of :func:`widthlab.engine.modules.train_module`
(Adam 1e-3, gates ``--gate-lr`` 1e-2, cosine schedule, batch 100, the 60,000 training
images, the price off for the last ``--free-frac`` (a third) of the epochs), shrunk after every
epoch with the journal's rule (gate exactly dead). A row is the widths after the last epoch and
the **final-epoch** test error; weights are computed from the widths the same way for widthlab's
and the published rows (conv: in * out * 25, linear: in * out, no biases).

The figures printed last: ``lenet300_error`` / ``lenet300_widths`` and ``lenet5_error`` /
``lenet5_widths`` of the row with the smallest total width within the error bound (1.6%,
1.0%; the lowest-error row when none is within), their weights, and
``end_epoch_time_ratio`` (last epoch's training time / first epoch's, of that LeNet-5 row).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from widthlab.data import load_splits
from widthlab.engine.modules import ModuleConfig, train_module
from widthlab.nn.surgery import gate_layers

PUBLISHED = [("LeNet-300-100", "L0 (Louizos 2018)", (266, 88, 33), 1.6),
             ("LeNet-300-100", "SBP", (245, 160, 55), 1.6),
             ("LeNet-300-100", "VIB", (97, 71, 33), 1.6),
             ("LeNet-300-100", "RigL (end of training)", (408, 100, 69), 1.48),
             ("LeNet-5-Caffe", "L0", (20, 25, 45, 462), 0.9),
             ("LeNet-5-Caffe", "BC-GHS", (5, 10, 76, 16), 1.0)]
BOUND = {"LeNet-300-100": 1.6, "LeNet-5-Caffe": 1.0}
GATE_LR = {"LeNet-300-100": 1e-2, "LeNet-5-Caffe": 1e-2}


class LeNet300(nn.Module):
    """784-300-100-10 with ReLU."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """LeNet-5-Caffe: conv 5x5 20, pool, conv 5x5 50, pool, fc 800-500, fc 500-10."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = x.view(-1, 1, 28, 28)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def weights(network: str, widths: tuple[int, ...]) -> int:
    """Weights (no biases) implied by a row's widths."""
    if network == "LeNet-300-100":
        a, b, c = widths
        return a * b + b * c + c * 10
    c1, c2, f1, f2 = widths
    return 25 * c1 + 25 * c1 * c2 + f1 * f2 + 10 * f2


def build(network: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if network == "LeNet-300-100":
        model = LeNet300()
        gate_layers(model, ["fc1", "fc2", "fc3"], inputs="only")
    else:
        model = LeNet5()
        gate_layers(model, ["conv1", "conv2"])
        gate_layers(model, ["fc1", "fc2"], inputs="only")
    return model


def run(network: str, price: float, epochs: int, data, args) -> dict:
    model = build(network, args.seed)
    gate_lr = args.gate_lr or GATE_LR[network]
    cfg = ModuleConfig(epochs=epochs, price=price, free_epochs=int(epochs * args.free_frac),
                       lr=1e-3, gate_lr=gate_lr, batch_size=100, schedule="cosine",
                       seed=args.seed)
    order = {"LeNet-300-100": ["fc1:in", "fc2:in", "fc3:in"],
             "LeNet-5-Caffe": ["conv1", "conv2", "fc1:in", "fc2:in"]}[network]

    def progress(r: dict) -> None:
        print(f"  {network} price={price:g} epoch {r['epoch']}: error "
              f"{100 * r['test_error']:.2f}% widths "
              f"{'-'.join(str(r['widths'][k]) for k in order)} {r['epoch_time']:.1f}s",
              flush=True)

    recs = train_module(model, (data.train.x, data.train.y), (data.test.x, data.test.y), cfg,
                        on_epoch=progress)
    widths = tuple(recs[-1]["widths"][k] for k in order)
    row = {"network": network, "price": price, "widths": widths,
           "error": 100 * recs[-1]["test_error"], "weights": weights(network, widths),
           "time_ratio": recs[-1]["epoch_time"] / recs[0]["epoch_time"],
           "curve": [(r["epoch"], round(100 * r["test_error"], 2),
                      "-".join(str(r["widths"][k]) for k in order)) for r in recs]}
    print(f"{network} price={price:g}: widths={'-'.join(map(str, widths))} "
          f"error={row['error']:.2f}% weights={row['weights']} "
          f"epoch_time {recs[0]['epoch_time']:.1f}s -> {recs[-1]['epoch_time']:.1f}s "
          f"curve={row['curve']}", flush=True)
    return row


def best(rows: list[dict], network: str) -> dict:
    mine = [r for r in rows if r["network"] == network]
    within = [r for r in mine if r["error"] <= BOUND[network]]
    return (min(within, key=lambda r: (sum(r["widths"]), r["error"])) if within
            else min(mine, key=lambda r: r["error"]))


def table(rows: list[dict]) -> None:
    print("| network | method | learned widths | weights | test error |")
    print("| --- | --- | --- | --- | --- |")
    for net, method, widths, err in PUBLISHED:
        print(f"| {net} | {method} | {'-'.join(map(str, widths))} | {weights(net, widths)} "
              f"| {err}% |")
    for r in rows:
        print(f"| {r['network']} | widthlab gates, price {r['price']:g} | "
              f"{'-'.join(map(str, r['widths']))} | {r['weights']} | {r['error']:.2f}% |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs, two prices per network")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gate-lr", type=float, default=None,
                    help="Adam learning rate of the gates (default 1e-2)")
    ap.add_argument("--free-frac", type=float, default=1 / 3,
                    help="fraction of the epochs at the end trained without the price")
    ap.add_argument("--network", choices=["both", "300", "5"], default="both")
    ap.add_argument("--epochs300", type=int, default=None)
    ap.add_argument("--epochs5", type=int, default=None)
    ap.add_argument("--prices300", type=float, nargs="+", default=None)
    ap.add_argument("--prices5", type=float, nargs="+", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    e300, e5 = (3, 2) if args.quick else (30, 10)
    p300 = [2e-3, 8e-3] if args.quick else [2.5e-4, 5e-4, 1e-3]
    p5 = [1e-3] if args.quick else [2.5e-4, 5e-4, 1e-3]
    e300, e5 = args.epochs300 or e300, args.epochs5 or e5
    p300, p5 = args.prices300 or p300, args.prices5 or p5
    data = load_splits("mnist", val_size=0)
    start = time.perf_counter()
    rows = [run("LeNet-300-100", p, e300, data, args) for p in p300
            if args.network in ("both", "300")]
    rows += [run("LeNet-5-Caffe", p, e5, data, args) for p in p5
             if args.network in ("both", "5")]
    table(rows)
    print(f"wall_minutes={(time.perf_counter() - start) / 60:.1f}")
    for network, tag in (("LeNet-300-100", "lenet300"), ("LeNet-5-Caffe", "lenet5")):
        if any(r["network"] == network for r in rows):
            b = best(rows, network)
            print(f"{tag}_weights={b['weights']}")
            print(f"{tag}_end_epoch_time_ratio={b['time_ratio']:.3f}")
            print(f"{tag}_error={b['error']:.2f}")
            print(f"{tag}_widths={'-'.join(map(str, b['widths']))}")
    last = best(rows, "LeNet-5-Caffe" if args.network != "300" else "LeNet-300-100")
    print(f"end_epoch_time_ratio={last['time_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
