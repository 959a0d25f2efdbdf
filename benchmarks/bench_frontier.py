"""Width frontier of a trained MNIST MLP layer: widthlab's methods against Torch-Pruning 1.6.

Trains ``784-1024-10`` (3 epochs, Adam 1e-3, batch 128, seed 0) on the MNIST training split,
then on that one network:

* the frontier of the hidden layer by every widthlab method (calibration: the 5000-image
  validation split; evaluation: the test set), one-shot test accuracy at k = 16, 32, 64, 128;
* Torch-Pruning 1.6 (``pip install torch-pruning``) with its magnitude, Taylor, Hessian (OBD)
  and LAMP criteria at the same k, one-shot and after one epoch of fine-tuning (Adam 1e-3);
* widthlab's ``obs`` and ``obs_refit`` cuts after the same epoch of fine-tuning;
* the time of the whole ``obs`` frontier (every k from H to 1, plus the evaluation of the
  default grid), on ``--threads`` CPU threads.

Then the same for width 4096 (``--no-4096`` skips it). Figures are printed last, one
``name=value`` per line. Training and fine-tuning use ``--device`` (auto: cuda when present);
the frontier timing always runs on the CPU.

    PYTHONPATH=src python benchmarks/bench_frontier.py [--device auto] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import resource
import time

import torch
import torch.nn.functional as F
from torch import nn

from widthlab.data import load_splits
from widthlab.frontier import frontiers, width_frontier

KS = (16, 32, 64, 128)
TP_CRITERIA = ("magnitude", "taylor", "hessian", "lamp")


def train(model: nn.Module, x, y, epochs: int, seed: int, device) -> nn.Module:
    """Adam 1e-3, batch 128, a seeded minibatch order."""
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 128):
            b = perm[i:i + 128]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    model.eval()
    p = next(model.parameters())
    return float((model(x.to(p.device, p.dtype)).argmax(1) == y.to(p.device)).double().mean())


def tp_prune(model: nn.Module, crit: str, k: int, x, y) -> nn.Module:
    """A Torch-Pruning one-shot cut of the hidden layer to ``k`` neurons by ``crit``."""
    import torch_pruning as tp

    m = copy.deepcopy(model).train()
    imp = {"magnitude": tp.importance.MagnitudeImportance(p=2),
           "taylor": tp.importance.TaylorImportance(),
           "hessian": tp.importance.HessianImportance(),
           "lamp": tp.importance.LAMPImportance(p=2)}[crit]
    width = m[0].out_features
    pruner = tp.pruner.MetaPruner(m, x[:2], importance=imp, pruning_ratio=1 - k / width,
                                  ignored_layers=[m[2]])
    if crit == "taylor":
        m.zero_grad()
        F.cross_entropy(m(x), y).backward()
    elif crit == "hessian":
        imp.zero_grad()
        losses = F.cross_entropy(m(x[:128]), y[:128], reduction="none")
        for loss in losses:
            m.zero_grad()
            loss.backward(retain_graph=True)
            imp.accumulate_grad(m)
    pruner.step()
    assert m[0].out_features == k, (crit, k, m[0].out_features)
    return m.eval()


def run_width(width: int, data, device, threads: int) -> dict[str, float]:
    tr, va, te = data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))
    t = time.perf_counter()
    train(model, tr.x.to(device), tr.y.to(device), 3, 0, device)
    out: dict[str, float] = {"train_s": time.perf_counter() - t,
                             "full_acc": accuracy(model, te.x, te.y)}
    cpu = copy.deepcopy(model).cpu()
    torch.set_num_threads(threads)
    t = time.perf_counter()
    fr = width_frontier(cpu, "0", (va.x, va.y), (te.x, te.y))
    out["frontier_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.set_num_threads(max(threads, torch.get_num_threads()))
    methods = ["obs_ce", "obs_refit", "exact", "taylor", "taylor2", "act_std", "contribution",
               "random"]
    frs = {"obs": fr, **frontiers(cpu, "0", (va.x, va.y), (te.x, te.y), methods=methods)}
    for name, f in frs.items():
        acc = dict(zip(f.table.k, f.table.acc, strict=True))
        for k in KS:
            out[f"{name}_acc_k{k}"] = acc[k]
        out[f"{name}_recommend"] = f.recommend(0.005)
    xd, yd = tr.x.to(device), tr.y.to(device)
    for crit in TP_CRITERIA:
        for k in KS:
            small = tp_prune(model, crit, k, va.x.to(device), va.y.to(device))
            out[f"tp_{crit}_acc_k{k}"] = accuracy(small, te.x, te.y)
            train(small, xd, yd, 1, 1, device)
            out[f"tp_{crit}_ft_acc_k{k}"] = accuracy(small, te.x, te.y)
    for name in ("obs", "obs_refit"):
        for k in KS:
            small = train(frs[name].cut(k).to(device), xd, yd, 1, 1, device)
            out[f"{name}_ft_acc_k{k}"] = accuracy(small, te.x, te.y)
    for k in KS:
        for tag in ("", "_ft"):
            out[f"tp_best{tag}_acc_k{k}"] = max(out[f"tp_{c}{tag}_acc_k{k}"] for c in TP_CRITERIA)
    return out


HEADLINE = ("obs_acc_k32", "obs_acc_k64", "obs_acc_k128", "tp_best_acc_k64", "frontier_s")


def _print(res: dict[str, float], suffix: str, names) -> None:
    for name in names:
        value = res[name]
        print(f"{name}{suffix}={value:.4f}" if isinstance(value, float) else
              f"{name}{suffix}={value}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of the frontier timing")
    ap.add_argument("--no-4096", dest="wide", action="store_false")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    d = load_splits("mnist")
    data = (d.split("train"), d.split("val"), d.split("test"))
    print(f"device={device} frontier_threads={args.threads}", flush=True)
    results = {}
    for width in (1024, 4096) if args.wide else (1024,):
        res = results[width] = run_width(width, data, device, args.threads)
        suffix = "" if width == 1024 else f"_w{width}"
        _print(res, suffix, [n for n in res if n not in HEADLINE])  # details as they come
    for width, res in results.items():  # the headline figures, last
        _print(res, "" if width == 1024 else f"_w{width}", HEADLINE)


if __name__ == "__main__":
    main()
