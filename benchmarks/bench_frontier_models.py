"""Group frontiers on trained models, every ranking, and whole-network allocation.

* GPT: nanoGPT's CPU character model (4 layers, 4 heads, width 128, FFN 512, context 64,
  batch 12, AdamW 1e-3 with 100 warm-up steps) trained ``--gpt-steps`` (500) steps on
  Shakespeare, seed 0; the state dict is cached under ``--cache`` and reused. Calibration: 256
  random training windows (16,384 tokens); evaluation: 512 random validation windows (32,768
  tokens, mean cross-entropy per character). Every method cuts every block's FFN to 50% and
  25% and, separately, every block's heads to half (sequentially, block by block, with
  :func:`~widthlab.frontier.models.cut_groups`; ``obs`` refits each consumer).
  Then :func:`~widthlab.frontier.network.cut_network` over the FFN and head groups at the
  parameter count of the uniform ``obs`` FFN cut (50% and 25%).
* ResNet: ``ResNetConfig(stage_widths=(8, 16, 32))`` (three blocks per stage) trained one pass
  over 8000 MNIST training images (Adam 3e-3, batch 32, BatchNorm statistics recomputed),
  cached likewise. Calibration: 1000 validation images; evaluation: the 10,000 test images.
  Every method cuts every block's inner width to half; then ``cut_network`` over the inner
  channel groups at the multiply-adds of the uniform ``obs`` cut (50% and 25%).
  Allocations are printed one-shot with Fisher scales and with the default (max of the
  Fisher and measured scales, 4 rounds).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_frontier_models.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch

from widthlab.frontier.group import GROUP_METHODS
from widthlab.frontier.models import cut_groups, model_loss
from widthlab.frontier.network import cut_network, network_groups, unit_costs
from widthlab.nn import GPT, GPTConfig, GPTTrain, ResNet, ResNetConfig, train_gpt
from widthlab.units import build_graph


def n_params(m) -> int:
    return sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())


def gpt_model(steps: int, cache: str):
    from widthlab.data import load_text

    c = load_text("shakespeare")
    cfg = GPTConfig(n_layer=4, n_head=4, n_embd=128, n_ffn=512, block_size=64,
                    vocab_size=c.vocab_size)
    path = os.path.join(cache, f"widthlab_gpt_{c.content_id}_{steps}.pt")
    model = GPT(cfg)
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, weights_only=True))
        print(f"gpt: cached {path}")
    else:
        t = time.perf_counter()
        model, _ = train_gpt(cfg, c, steps, GPTTrain(), seed=0, eval_windows=8)
        torch.save(model.state_dict(), path)
        print(f"gpt: trained {steps} steps in {time.perf_counter() - t:.0f} s -> {path}")
    gen = torch.Generator().manual_seed(1)
    calib = c.batch("train", 256, 64, generator=gen)
    ev = c.batch("val", 512, 64, generator=gen)
    return model.eval(), calib, ev


def resnet_model(cache: str, n_train: int = 8000):
    from widthlab.data import load_splits

    d = load_splits("mnist")
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(stage_widths=(8, 16, 32)))
    path = os.path.join(cache, f"widthlab_resnet8_{n_train}_s0.pt")
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, weights_only=True))
        print(f"resnet: cached {path}")
    else:
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        x, y = d.train.x[:n_train], d.train.y[:n_train]
        for i in range(0, len(x), 32):
            loss = torch.nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        with torch.no_grad():
            model(x[:2000])
        torch.save(model.state_dict(), path)
    return model.eval(), (d.val.x[:1000], d.val.y[:1000]), (d.test.x, d.test.y)


def uniform(model, graph, kinds, frac, calib, method):
    m2, g2 = copy.deepcopy(model), copy.deepcopy(graph)
    names = [g.name for g in g2.groups if g.kind in kinds]
    frs = cut_groups(m2, g2, {n: frac for n in names}, calib, method)
    return m2, frs


def methods_table(model, graph, calib, ev, settings, methods) -> None:
    for label, kinds, frac in settings:
        for method in methods:
            t = time.perf_counter()
            m2, frs = uniform(model, graph, kinds, frac, calib, method)
            loss, acc = model_loss(m2, ev)
            used = ",".join(sorted({f.used for f in frs}))
            print(f"  {label:<14} {method:<10} loss={loss:.4f} acc={acc:.4f} used={used} "
                  f"params={n_params(m2)} ({time.perf_counter() - t:.1f} s)", flush=True)


def allocation_line(model, graph, calib, ev, kinds, target, base, label, scale="max",
                    rounds=4) -> None:
    """``cut_network`` at the saving of the uniform obs cut ``base`` (a cut model)."""
    m3, g3 = copy.deepcopy(model), copy.deepcopy(graph)
    grps = network_groups(m3, g3, kinds)
    per = unit_costs(m3, grps, calib[0][:1])
    total = sum(g.size * per[g.name][target] for g in grps)
    gb = build_graph(base, calib[0][:1])
    left = sum(g.size * c[target] for g, c in
               ((g, unit_costs(base, [g], calib[0][:1])[g.name])
                for g in network_groups(base, gb, kinds)))
    t = time.perf_counter()
    nc = cut_network(m3, g3, calib, target=target, amount=(total - left) / total, groups=grps,
                     scale=scale, rounds=rounds)
    loss, acc = model_loss(m3, ev)
    ub_loss, ub_acc = model_loss(base, ev)
    print(f"  {label} [{scale}, {rounds} rounds]: uniform obs loss={ub_loss:.4f} "
          f"acc={ub_acc:.4f} {target}_kept={left:.0f} | allocated loss={loss:.4f} "
          f"acc={acc:.4f} {target}_kept="
          f"{total - nc.allocation.curve[-1][0]:.0f} params={n_params(m3)} "
          f"({time.perf_counter() - t:.1f} s)", flush=True)
    if hasattr(m3, "current_config"):  # the ResNet's own multiply-add formula
        print(f"    real macs: uniform {base.current_config().macs()} allocated "
              f"{m3.current_config().macs()} (per image)", flush=True)
    print(f"    widths {nc.allocation.widths}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpt-steps", type=int, default=500)
    ap.add_argument("--cache", default="/tmp")
    ap.add_argument("--quick", action="store_true", help="obs and magnitude only")
    ap.add_argument("--skip", default="", help="comma list of gpt,resnet to skip")
    ap.add_argument("--alloc-only", action="store_true", help="no per-method tables")
    a = ap.parse_args()
    methods = () if a.alloc_only else ("obs", "magnitude") if a.quick else GROUP_METHODS
    torch.manual_seed(0)
    if "gpt" not in a.skip:
        model, calib, ev = gpt_model(a.gpt_steps, a.cache)
        graph = build_graph(model, calib[0][:1])
        loss, acc = model_loss(model, ev)
        print(f"gpt dense loss={loss:.4f} acc={acc:.4f} params={n_params(model)}", flush=True)
        methods_table(model, graph, calib, ev, [("ffn 50%", ("ffn",), 0.5),
                                                ("ffn 25%", ("ffn",), 0.25),
                                                ("heads 50%", ("heads",), 0.5)], methods)
        for frac in (0.5, 0.25):
            base, _ = uniform(model, graph, ("ffn",), frac, calib, "obs")
            for scale, rounds in (("fisher", 1), ("max", 4)):
                allocation_line(model, graph, calib, ev, ("ffn", "heads"), "params", base,
                                f"gpt alloc at ffn {frac:.0%} params", scale, rounds)
    if "resnet" not in a.skip:
        model, calib, ev = resnet_model(a.cache)
        graph = build_graph(model, calib[0][:1])
        loss, acc = model_loss(model, ev)
        print(f"resnet dense loss={loss:.4f} acc={acc:.4f} params={n_params(model)}",
              flush=True)
        methods_table(model, graph, calib, ev, [("inner 50%", ("channels",), 0.5)], methods)
        for frac in (0.5, 0.25):
            base, _ = uniform(model, graph, ("channels",), frac, calib, "obs")
            for scale, rounds in (("fisher", 1), ("max", 4)):
                allocation_line(model, graph, calib, ev, ("channels",), "macs", base,
                                f"resnet alloc at inner {frac:.0%} macs", scale, rounds)


if __name__ == "__main__":
    main()
