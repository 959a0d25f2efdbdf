"""Probe LeNet-300-100 gated widths on full MNIST: per-layer price scales, epochs, free phase,
gate_lr, removal rule, a price-free warm-up. One run per call; appends a JSON line to --out.

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/lenet300_probe.py --price 5e-4 \
        --scales 3 1 0.3 --epochs 60 --free-frac 0.5 --out probes.jsonl
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from widthlab.data import load_splits
from widthlab.engine.modules import ModuleConfig, train_module
from widthlab.nn.lenet import LENET300, build_lenet, lenet_widths
from widthlab.nn.surgery import model_gates
from widthlab.nn.surgery.rules import SignFlipRule


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--price", type=float, required=True)
    ap.add_argument("--scales", type=float, nargs=3, default=[1.0, 1.0, 1.0],
                    help="price multipliers of the pixel, 300-unit and 100-unit gates")
    ap.add_argument("--scales2", type=float, nargs=3, default=None,
                    help="price multipliers from epoch --switch + 1 on (staged pricing)")
    ap.add_argument("--switch", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--free-frac", type=float, default=1 / 3)
    ap.add_argument("--warmup", type=int, default=0, help="first epochs without the price")
    ap.add_argument("--gate-lr", type=float, default=1e-2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.0, help="weight decay of the weights")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--noise", type=float, nargs=3, default=[0.0, 0.0, 0.0],
                    help="std of multiplicative Gaussian noise on each gate's output in training")
    ap.add_argument("--rule", default="dead", help="dead, smallify or smallify:<threshold>")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default="probes.jsonl")
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = load_splits("mnist", val_size=0)
    model = build_lenet(LENET300, a.seed, n_in=data.n_features, n_classes=data.n_classes)
    gates = model_gates(model)
    assert [g.key for g in gates] == ["fc1:in", "fc2:in", "fc3:in"], [g.key for g in gates]
    scales = dict(zip([g.key for g in gates], a.scales))

    def set_scales(on: bool) -> None:
        for g in model_gates(model):
            g.price_scale = scales[g.key] if on else 0.0

    set_scales(a.warmup == 0)
    for g, std in zip(gates, a.noise):
        if std > 0:
            def hook(mod, args, out, std=std):
                if mod.training:
                    return out * (1 + std * torch.randn_like(out))
                return out
            g.register_forward_hook(hook)
    rule = a.rule
    if rule.startswith("smallify:"):
        rule = SignFlipRule(threshold=float(rule.split(":")[1]))
    cfg = ModuleConfig(epochs=a.epochs, price=a.price, free_epochs=int(a.epochs * a.free_frac),
                       lr=a.lr, gate_lr=a.gate_lr, batch_size=100, schedule="cosine",
                       seed=a.seed, rule=rule, weight_decay=a.wd, optimizer=a.optimizer)
    curve = []
    start = time.perf_counter()

    def on_epoch(r: dict) -> None:
        if r["epoch"] == a.warmup:
            set_scales(True)
        if a.scales2 is not None and r["epoch"] == a.switch:
            scales.update(zip(["fc1:in", "fc2:in", "fc3:in"], a.scales2))
            set_scales(r["epoch"] >= a.warmup)
        w = lenet_widths(model)
        curve.append((r["epoch"], round(100 * r["test_error"], 2), "-".join(map(str, w))))
        print(f"ep {r['epoch']:3d} price {r['price']:g} err {100 * r['test_error']:.2f}% loss {r['train_loss']:.4f} "
              f"widths {w} sum {sum(w)} {r['epoch_time']:.1f}s", flush=True)

    train = (data.train.x, data.train.y)
    test = (data.test.x, data.test.y)
    recs = train_module(model, train, test, cfg, on_epoch=on_epoch)
    w = lenet_widths(model)
    row = {"tag": a.tag, "price": a.price, "scales": a.scales, "scales2": a.scales2, "switch": a.switch, "epochs": a.epochs,
           "free_frac": a.free_frac, "warmup": a.warmup, "gate_lr": a.gate_lr, "lr": a.lr,
           "rule": a.rule, "noise": a.noise, "wd": a.wd, "optimizer": a.optimizer, "seed": a.seed, "widths": w, "total": sum(w),
           "error": round(100 * recs[-1]["test_error"], 2), "train_loss": round(recs[-1]["train_loss"], 5),
           "min_error": round(100 * min(r["test_error"] for r in recs), 2),
           "wall_s": round(time.perf_counter() - start, 1), "curve": curve}
    print("RESULT", json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
