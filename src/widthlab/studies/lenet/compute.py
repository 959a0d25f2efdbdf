"""The lenet study's stored runs: each gated run, each frontier cut and the manifest.

Every step is a :class:`~widthlab.studies.base.StoredAnalysis` that trains (with
:mod:`~widthlab.studies.lenet.train`) and stores a finished run, so a second invocation trains
nothing and the report draws from the store only. What is stored, per epoch:

- gated run ``lenet:gated-<net>-<price>`` (L1 gates; ``lenet:gated-hc-<net>-<price>``:
  hard-concrete gates, its config's ``gate_kind``): one model; ``test/error``, ``train/loss``,
  ``train/epoch_time`` (seconds of training), ``train/n_params``, ``train/price`` and
  ``train/width/<layer>`` (the widths as the papers count them);
- cut run ``lenet:cut-<net>``: one model, the network trained without gates (the same
  metrics, epochs 1..E), then cut and fine-tuned: epoch E + 1 is the fine-tuning epoch, with
  also ``test/error_before_finetune`` and per cut layer ``decide/k/<layer>``,
  ``decide/acc_before/<layer>`` and ``decide/acc_after/<layer>`` (accuracy on the deciding
  training images);
- manifest ``lenet:manifest``: no models; its config lists the runs of one profile on one
  dataset (what the report reads).

LeNet-5-Caffe on data that is not 28 x 28 images is stored as a run whose model failed, with
the reason.
"""

from __future__ import annotations

import functools
import time

from widthlab.data import load_splits
from widthlab.data.tensors import DatasetSplits
from widthlab.engine import resolve_device
from widthlab.engine.events import Reporter
from widthlab.nn.lenet import IMAGE, LAYERS, LENET5, LENET300
from widthlab.store import MetricRow, Store
from widthlab.studies.base import RunContext, StoredAnalysis
from widthlab.studies.lenet import train as tr
from widthlab.studies.lenet.config import (
    L1,
    NAME,
    LenetProfile,
    cut_name,
    epochs_of,
    gated_name,
    prices_of,
    settings,
)

MANIFEST = "manifest"


@functools.lru_cache(maxsize=1)
def _builtin(dataset: str) -> DatasetSplits:
    return load_splits(dataset, val_size=0)  # the 60,000 training images, the official test


def splits(ctx: RunContext) -> DatasetSplits:
    """The data of ``ctx`` (the user's, or the built-in dataset with every training image),
    cut to the profile's ``train_size``."""
    data = ctx.data if ctx.data is not None else _builtin(ctx.dataset)
    n = ctx.profile.train_size
    return data.head(min(n, len(data.train))) if n else data


def _data_id(ctx: RunContext) -> dict:
    if ctx.data is not None:
        return {"dataset": ctx.data.name, "content_id": ctx.data.content_id}
    return {"dataset": ctx.dataset}


def gated_run_config(network: str, price: float, ctx: RunContext, gate_kind: str = L1) -> dict:
    out = {"network": network, "price": price, "kind": "gated",
           "settings": settings(ctx.profile, network, "gated", gate_kind),
           "data": _data_id(ctx)}
    if gate_kind != L1:  # an L1 run's identity is that of before the gate kinds
        out["gate_kind"] = gate_kind
    return out


def cut_run_config(network: str, ctx: RunContext) -> dict:
    return {"network": network, "kind": "cut", "settings": settings(ctx.profile, network, "cut"),
            "data": _data_id(ctx)}


def _epoch_rows(model: int, rec: dict, network: str, epoch: int | None = None
                ) -> list[MetricRow]:
    e = int(epoch if epoch is not None else rec["epoch"])
    rows = [MetricRow(model, e, "test", "error", rec["test_error"]),
            MetricRow(model, e, "train", "loss", rec["train_loss"]),
            MetricRow(model, e, "train", "epoch_time", rec["epoch_time"]),
            MetricRow(model, e, "train", "n_params", rec["n_params"]),
            MetricRow(model, e, "train", "price", rec["price"])]
    rows += [MetricRow(model, e, "train", f"width/{name}", w)
             for name, w in zip(LAYERS[network], rec["row_widths"], strict=True)]
    return rows


def _start(ctx: RunContext, run_id: str, label: str, config: dict, models: list[dict],
           data: DatasetSplits) -> str:
    dev = resolve_device(ctx.device)
    ctx.store.create_run(run_id, study=f"{NAME}:{label}", dataset=data.name,
                         config={**config, "data": data.describe()}, models=models,
                         seed=ctx.profile.seed, device=str(dev), precision="fp32",
                         code_version=ctx.code[:16])
    return dev


def _unsupported(network: str, data: DatasetSplits) -> str | None:
    if network == LENET5 and data.n_features != IMAGE * IMAGE:
        return (f"{LENET5} reads 28x28 images (784 inputs); the data has {data.n_features} "
                "inputs, so it was not trained")
    return None


def _spec(network: str, variant: str, p: LenetProfile, **options) -> dict:
    arch = [784, 300, 100] if network == LENET300 else [20, 50, 800, 500]
    return {"name": network, "arch": arch, "seed": p.seed, "variant": variant,
            "options": options}


def gated_compute(network: str, price: float, ctx: RunContext, run_id: str,
                  gate_kind: str = L1) -> None:
    """Train and store one gated run (see the module docstring)."""
    p: LenetProfile = ctx.profile
    data = splits(ctx)
    epochs = epochs_of(p, network)
    options = {"price": price} if gate_kind == L1 else {"price": price, "gate_kind": gate_kind}
    dev = _start(ctx, run_id, gated_name(network, price, gate_kind),
                 gated_run_config(network, price, ctx, gate_kind),
                 [_spec(network, "gated", p, **options)], data)
    if (why := _unsupported(network, data)) is not None:
        ctx.store.commit_epoch(run_id, 0, failures=[(0, 0, why)])
        ctx.store.finish_run(run_id, "done")
        return
    report = Reporter(ctx.progress, run_id, epochs, epochs, unit="epochs")
    t0 = time.perf_counter()

    def store(rec: dict) -> None:
        ctx.store.commit_epoch(run_id, rec["epoch"], metrics=_epoch_rows(0, rec, network))
        report.step()
        report.epoch(rec["epoch"])

    tr.gated_run(network, price, data, p, dev, store, kind=gate_kind)
    report.done(epochs)
    ctx.store.finish_run(run_id, "done", {"train_s": round(time.perf_counter() - t0, 3)})


def _cut_rows(network: str, result: dict, epoch: int) -> list[MetricRow]:
    rows = _epoch_rows(0, result["finetune"], network, epoch)
    rows.append(MetricRow(0, epoch, "test", "error_before_finetune", result["cut_error"]))
    for c in result["cuts"]:
        rows += [MetricRow(0, epoch, "decide", f"k/{c.layer}", c.k),
                 MetricRow(0, epoch, "decide", f"acc_before/{c.layer}", c.acc_before),
                 MetricRow(0, epoch, "decide", f"acc_after/{c.layer}", c.acc_after)]
    return rows


def cut_compute(network: str, ctx: RunContext, run_id: str) -> None:
    """Train the network without gates, cut it, fine-tune it; store it (module docstring)."""
    p: LenetProfile = ctx.profile
    data = splits(ctx)
    epochs = epochs_of(p, network)
    dev = _start(ctx, run_id, cut_name(network), cut_run_config(network, ctx),
                 [_spec(network, "frontier-cut", p, tol=p.tol)], data)
    if (why := _unsupported(network, data)) is not None:
        ctx.store.commit_epoch(run_id, 0, failures=[(0, 0, why)])
        ctx.store.finish_run(run_id, "done")
        return
    report = Reporter(ctx.progress, run_id, epochs + 1, epochs + 1, unit="epochs")
    t0 = time.perf_counter()

    def store(rec: dict) -> None:
        ctx.store.commit_epoch(run_id, rec["epoch"], metrics=_epoch_rows(0, rec, network))
        report.step()
        report.epoch(rec["epoch"])

    result = tr.cut_run(network, data, p, dev, store)
    ctx.store.commit_epoch(run_id, epochs + 1, metrics=_cut_rows(network, result, epochs + 1))
    report.step()
    report.done(epochs + 1)
    ctx.store.finish_run(run_id, "done", {"train_s": round(time.perf_counter() - t0, 3)})


def unit_steps(p: LenetProfile) -> list[StoredAnalysis]:
    """One step per gated run and per cut, in the profile's order."""
    out = []
    for net in p.networks:
        for kind in p.gate_kinds:
            for price in prices_of(p, net, kind):
                out.append(StoredAnalysis(
                    gated_name(net, price, kind),
                    functools.partial(gated_run_config, net, price, gate_kind=kind),
                    functools.partial(gated_compute, net, price, gate_kind=kind)))
        if p.cut:
            out.append(StoredAnalysis(cut_name(net), functools.partial(cut_run_config, net),
                                      functools.partial(cut_compute, net)))
    return out


def manifest_config(ctx: RunContext) -> dict:
    names = [s.name for s in unit_steps(ctx.profile)]
    return {"runs": {n: ctx.runs[n] for n in names if n in ctx.runs},
            "profile": ctx.profile.to_dict()}


def manifest_compute(ctx: RunContext, run_id: str) -> None:
    """Store the manifest: a run without models whose config lists this profile's runs."""
    cfg = manifest_config(ctx)
    first = next(iter(cfg["runs"].values()), None)
    dataset = ctx.store.get_run(first)["dataset"] if first else ctx.dataset
    ctx.store.create_run(run_id, study=f"{NAME}:{MANIFEST}", dataset=dataset, config=cfg,
                         models=[], seed=ctx.profile.seed, device="none", precision="fp32",
                         code_version=ctx.code[:16])
    ctx.store.finish_run(run_id, "done")


def steps(p: LenetProfile) -> list[StoredAnalysis]:
    """Every step of the study on one dataset: the units, then the manifest."""
    return [*unit_steps(p), StoredAnalysis(MANIFEST, manifest_config, manifest_compute)]


def manifest_runs(st: Store, manifest: str) -> dict[str, str]:
    """The runs a manifest lists (step name -> run id)."""
    return dict(st.require_run(manifest)["config"]["runs"])
