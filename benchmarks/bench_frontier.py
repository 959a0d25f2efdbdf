"""Width frontier of a trained MNIST MLP layer: widthlab's methods against Torch-Pruning 1.6.

Trains ``784-1024-10`` (3 epochs, Adam 1e-3, batch 128, seed 0) on the MNIST training split,
then on that one network:

* the frontier of the hidden layer by every widthlab method (calibration: the 5000-image
  validation split; evaluation: the test set), one-shot test accuracy at k = 16, 32, 64, 128;
* Torch-Pruning 1.6 (``pip install torch-pruning``) with its magnitude, Taylor, Hessian (OBD)
  and LAMP criteria at the same k, one-shot and after one epoch of fine-tuning;
* widthlab's ``obs`` and ``obs_refit`` cuts after the same epoch of fine-tuning.

Fine-tuning is one epoch of Adam at ``--ft-lr`` (default 1e-4, a tenth of the training rate, the
usual fine-tuning rate of the pruning literature), the same for every cut; the same epoch at the
training rate 1e-3 is printed too (``*_ft_lr1e-3_*``): a fresh Adam at the full rate moves every
weight by about the rate in its first steps, which undoes much of any cut's starting point;
* the time of the whole ``obs`` frontier (every k from H to 1, plus the evaluation of the
  default grid), on ``--threads`` CPU threads.

Then the same for width 4096 (``--no-4096`` skips it), and, in a fresh process, the peak memory
of the whole ``obs`` frontier of an untrained width-11585 layer against its documented bound
(``--memory-width``; 0 skips it). Figures are printed last, one
``name=value`` per line. Training and fine-tuning use ``--device`` (auto: cuda when present);
the frontier timing always runs on the CPU.

    PYTHONPATH=src python benchmarks/bench_frontier.py [--device auto] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from widthlab.data import load_splits
from widthlab.frontier import frontiers, width_frontier

KS = (16, 32, 64, 128)
TP_CRITERIA = ("magnitude", "taylor", "hessian", "lamp")


def train(model: nn.Module, x, y, epochs: int, seed: int, device, lr: float = 1e-3
          ) -> nn.Module:
    """Adam (``lr``), batch 128, a seeded minibatch order."""
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
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


def run_width(width: int, data, device, threads: int, ft_lr: float) -> dict[str, float]:
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
    tunes = {"_ft": ft_lr, "_ft_lr1e-3": 1e-3}

    def tuned(small: nn.Module, name: str, k: int) -> None:
        for tag, lr in tunes.items():
            fine = train(copy.deepcopy(small).to(device), xd, yd, 1, 1, device, lr)
            out[f"{name}{tag}_acc_k{k}"] = accuracy(fine, te.x, te.y)

    for crit in TP_CRITERIA:
        for k in KS:
            small = tp_prune(model, crit, k, va.x.to(device), va.y.to(device))
            out[f"tp_{crit}_acc_k{k}"] = accuracy(small, te.x, te.y)
            tuned(small, f"tp_{crit}", k)
    for name in ("obs", "obs_refit"):
        for k in KS:
            tuned(frs[name].cut(k), name, k)
    for k in KS:
        for tag in ("", *tunes):
            out[f"tp_best{tag}_acc_k{k}"] = max(out[f"tp_{c}{tag}_acc_k{k}"] for c in TP_CRITERIA)
    return out


HEADLINE = ("obs_acc_k32", "obs_acc_k64", "obs_acc_k128", "tp_best_acc_k64", "frontier_s")


def _print(res: dict[str, float], suffix: str, names) -> None:
    for name in names:
        value = res[name]
        print(f"{name}{suffix}={value:.4f}" if isinstance(value, float) else
              f"{name}{suffix}={value}", flush=True)


def _rss_mb() -> float:
    """Resident memory now (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def memory_child(width: int, threads: int) -> None:
    """The whole ``obs`` frontier of an untrained ``784-width-10`` layer on the real calibration
    and evaluation splits, in a fresh process: peak resident memory over what the data and the
    model take, against the documented bound (float64 values: ``2 (H+1)^2`` for the Gram matrix
    and its inverse, ``(N_calib + N_eval) H`` cached activations, ``max(N) H`` for one permuted
    split, the model's float64 copy)."""
    torch.set_num_threads(threads)
    d = load_splits("mnist")
    va, te = d.split("val"), d.split("test")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10)).eval()
    base = _rss_mb()
    t = time.perf_counter()
    width_frontier(model, "0", (va.x, va.y), (te.x, te.y))
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    n_c, n_e = len(va.y), len(te.y)
    params = sum(p.numel() for p in model.parameters())
    bound = 8 * (2 * (width + 1) ** 2 + (n_c + n_e) * width + max(n_c, n_e) * width + params)
    print(f"frontier_s_w{width}={seconds:.4f}")
    print(f"frontier_peak_mb_w{width}={peak:.1f}")
    print(f"frontier_bound_mb_w{width}={bound / 2 ** 20:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of the frontier timing")
    ap.add_argument("--no-4096", dest="wide", action="store_false")
    ap.add_argument("--ft-lr", type=float, default=1e-4, help="Adam rate of the fine-tuning epoch")
    ap.add_argument("--memory-width", type=int, default=11585,
                    help="width of the memory measurement (0: skip)")
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.threads)
        return
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    d = load_splits("mnist")
    data = (d.split("train"), d.split("val"), d.split("test"))
    print(f"device={device} frontier_threads={args.threads} ft_lr={args.ft_lr}", flush=True)
    results = {}
    for width in (1024, 4096) if args.wide else (1024,):
        res = results[width] = run_width(width, data, device, args.threads, args.ft_lr)
        suffix = "" if width == 1024 else f"_w{width}"
        _print(res, suffix, [n for n in res if n not in HEADLINE])  # details as they come
    memory = []
    if args.memory_width:  # a fresh process: its peak memory is the frontier's alone
        child = subprocess.run([sys.executable, __file__, "--memory-child", str(args.memory_width),
                                "--threads", str(args.threads)], check=True,
                               capture_output=True, text=True)
        memory = child.stdout.split()
    for width, res in results.items():  # the headline figures, last
        _print(res, "" if width == 1024 else f"_w{width}", HEADLINE)
    for line in memory:
        print(line, flush=True)


if __name__ == "__main__":
    main()
