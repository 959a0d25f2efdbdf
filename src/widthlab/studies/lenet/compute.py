"""The lenet study's steps: ordinary :class:`~widthlab.studies.base.ModuleExperiment` s (one
per gated run and per cut) trained by the one run lifecycle, and the manifest.

What is stored, per epoch:

- gated run ``lenet:gated-<net>-<price>`` (L1 gates; ``lenet:gated-hc-<net>-<price>``:
  hard-concrete gates, its config's ``gate_kind``): one model; ``test/error``, ``train/loss``,
  ``train/epoch_time`` (seconds of training), ``train/n_params``, ``train/price`` and
  ``train/width/<layer>`` (the widths as the papers count them: the
  :class:`~widthlab.studies.lenet.train.LenetWidths` hook);
- cut run ``lenet:cut-<net>``: one model, the network trained without gates (the same
  metrics, epochs 1..E), then cut and fine-tuned: epoch E + 1 is the fine-tuning epoch, with
  also ``test/error_before_finetune`` and per cut layer ``decide/k/<layer>``,
  ``decide/acc_before/<layer>`` and ``decide/acc_after/<layer>``
  (:class:`~widthlab.studies.lenet.train.CutRun`);
- manifest ``lenet:manifest``: no models; its config lists the runs of one profile on one
  dataset (what the report reads).

LeNet-5-Caffe on data that is not 28 x 28 images is stored as a run whose model failed, with
the reason.
"""

from __future__ import annotations

import dataclasses
import functools

from torch import nn

from widthlab.data import load_splits
from widthlab.data.tensors import DatasetSplits
from widthlab.engine.config import resolve_device
from widthlab.engine.lifecycle import Result
from widthlab.engine.module_run import ModuleRun
from widthlab.engine.modules import ModuleConfig
from widthlab.nn.lenet import IMAGE, LENET5, LENET300
from widthlab.store import Store
from widthlab.studies.base import Derived, ModuleExperiment, RunContext, StoredAnalysis
from widthlab.studies.lenet import train as tr
from widthlab.studies.lenet.config import (
    L1,
    NAME,
    LenetProfile,
    cut_name,
    dense_config,
    finetune_config,
    gated_config,
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


def _unsupported(network: str, data: DatasetSplits) -> str | None:
    if network == LENET5 and data.n_features != IMAGE * IMAGE:
        return (f"{LENET5} reads 28x28 images (784 inputs); the data has {data.n_features} "
                "inputs, so it was not trained")
    return None


def _spec(network: str, variant: str, p: LenetProfile, **options) -> dict:
    arch = [784, 300, 100] if network == LENET300 else [20, 50, 800, 500]
    return {"name": network, "arch": arch, "seed": p.seed, "variant": variant,
            "options": options}


def _placeholder() -> nn.Module:
    return nn.Linear(1, 1)


def _experiment(name: str, network: str, build, cfg: ModuleConfig, describe: dict,
                record: dict, data: DatasetSplits, trainable: type,
                teacher=None) -> ModuleExperiment:
    why = _unsupported(network, data)
    if why is not None:
        return ModuleExperiment(name, _placeholder, ModuleConfig(epochs=1),
                                describe={**describe, "why": why}, model_record=record,
                                data=data, trainable=tr.NotTrained)
    model = functools.partial(build, network, data.n_features, data.n_classes)
    return ModuleExperiment(name, model, cfg, describe=describe, model_record=record,
                            hooks=(tr.LenetWidths(network),), data=data, trainable=trainable,
                            teacher=teacher)


def gated_experiment(network: str, price: float, ctx: RunContext,
                     gate_kind: str = L1) -> ModuleExperiment:
    """One gated run (see the module docstring); ``gate_kind`` "l1" or "hard_concrete"."""
    p: LenetProfile = ctx.profile
    options = {"price": price} if gate_kind == L1 else {"price": price, "gate_kind": gate_kind}
    data = splits(ctx)
    device = resolve_device(ctx.device)
    return _experiment(gated_name(network, price, gate_kind), network,
                       lambda net, n_in, n_out: tr.build_gated(net, p, n_in, n_out, gate_kind),
                       gated_config(p, network, price, gate_kind),
                       gated_run_config(network, price, ctx, gate_kind),
                       _spec(network, "gated", p, **options), data, ModuleRun,
                       tr.teacher_of(network, p, data, device, gate_kind))


def cut_experiment(network: str, ctx: RunContext) -> ModuleExperiment:
    """The network without gates, cut and fine-tuned (see the module docstring)."""
    p: LenetProfile = ctx.profile
    describe = {**cut_run_config(network, ctx),
                "finetune": dataclasses.asdict(finetune_config(p))}
    return _experiment(cut_name(network), network,
                       lambda net, n_in, n_out: tr.build_dense(net, p, n_in, n_out),
                       dense_config(p, network), describe,
                       _spec(network, "frontier-cut", p, tol=p.tol), splits(ctx), tr.CutRun)


def unit_steps(p: LenetProfile) -> list[Derived]:
    """One step per gated run and per cut, in the profile's order."""
    out = []
    for net in p.networks:
        for kind in p.gate_kinds:
            for price in prices_of(p, net, kind):
                out.append(Derived(gated_name(net, price, kind),
                                   functools.partial(gated_experiment, net, price,
                                                     gate_kind=kind)))
        if p.cut:
            out.append(Derived(cut_name(net), functools.partial(cut_experiment, net)))
    return out


def manifest_config(ctx: RunContext) -> dict:
    names = [s.name for s in unit_steps(ctx.profile)]
    return {"runs": {n: ctx.runs[n] for n in names if n in ctx.runs},
            "profile": ctx.profile.to_dict()}


def manifest_compute(ctx: RunContext) -> Result:
    """The manifest: a run without models whose config lists this profile's runs."""
    cfg = manifest_config(ctx)
    first = next(iter(cfg["runs"].values()), None)
    dataset = ctx.store.get_run(first)["dataset"] if first else ctx.dataset
    return Result(dataset, config=cfg, device="none", precision="fp32",
                  seed=ctx.profile.seed, epoch=0)


def steps(p: LenetProfile) -> list[Derived | StoredAnalysis]:
    """Every step of the study on one dataset: the units, then the manifest."""
    return [*unit_steps(p), StoredAnalysis(MANIFEST, manifest_config, manifest_compute,
                                           label=f"{NAME}:{MANIFEST}")]


def manifest_runs(st: Store, manifest: str) -> dict[str, str]:
    """The runs a manifest lists (step name -> run id)."""
    return dict(st.require_run(manifest)["config"]["runs"])
