"""The resnet study's steps, in order, each an ordinary step of the one run lifecycle:

- ``dense`` (a) and ``learned`` (gates on every group, shrunk after every epoch):
  :class:`~widthlab.studies.base.ModuleExperiment` s with the :class:`~.train.Journal` hook
  (per epoch ``train/macs``, ``train/params``, ``train/width/<group>``, ``journal/dead/<group>``,
  the arrays ``std/<group>``);
- ``uniform`` (b): built once the learned run is done, every width scaled to its final
  multiply-adds, trained from scratch;
- ``slimming-train``: network slimming's training (L1 on the BatchNorm scales);
- ``torch-pruning`` (c), ``slimming`` (d), ``widthlab-cut`` (e): fine-tuning runs whose model
  is an upstream run's final checkpoint cut to the learned multiply-adds
  (:func:`~.train.build_pruned`); the step is a ModuleExperiment like any other, its identity
  the upstream run id, the method and the target;
- ``cost``: a stored analysis of every final network: parameters, multiply-adds, CPU latency
  (one thread, batch 1 and 64, median; BatchNorm folded, channels-last, the networks timed in
  turn; optionally also the plain eager model);
- ``manifest``: the runs of this profile.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from widthlab.data import load_splits
from widthlab.data.tensors import DatasetSplits, Split
from widthlab.engine.lifecycle import Result
from widthlab.engine.module_run import ModuleRun
from widthlab.engine.spec import without_defaults
from widthlab.frontier.gate_budget import MacBudget, MacBudgetRun
from widthlab.nn.resnet import ResNetConfig
from widthlab.store import MetricRow, Store
from widthlab.studies.base import Derived, ModuleExperiment, RunContext, StoredAnalysis
from widthlab.studies.resnet import train as tr
from widthlab.studies.resnet.config import (
    COST,
    CUT,
    DENSE,
    LEARNED,
    MANIFEST,
    NAME,
    SLIM,
    SLIM_TRAIN,
    TP,
    UNIFORM,
    ResnetProfile,
    dense_config,
    finetune_config,
    learned_config,
    settings,
)

# learned-run fields added after runs were stored: in the run's identity only when not default
LATER = {"prunes_per_epoch": 1, "budget_score": "max"}
UPSTREAM = {TP: DENSE, CUT: DENSE, SLIM: SLIM_TRAIN}
TRAINED = (DENSE, LEARNED, UNIFORM, SLIM_TRAIN, TP, SLIM, CUT)


@functools.lru_cache(maxsize=1)
def _builtin(dataset: str) -> DatasetSplits:
    return load_splits(dataset, val_size=0)  # the 60,000 training images, the official test


def raw(ctx: RunContext) -> DatasetSplits:
    return ctx.data if ctx.data is not None else _builtin(ctx.dataset)


def not_images(data: DatasetSplits) -> str | None:
    """Why ResNet-20 cannot read ``data`` (None when it can)."""
    shape = data.sample_shape
    if shape is None or len(shape) != 3 or math.prod(shape) != data.n_features:
        return (f"ResNet-20 reads images; {data.name} has {data.n_features} values per sample "
                "and no image shape (give x as (N, C, H, W) or (N, H, W) in an .npz file)")
    if shape[1] != shape[2]:
        return f"ResNet-20 reads square images; {data.name}'s are {shape[1]}x{shape[2]}"
    return None


def splits(ctx: RunContext) -> DatasetSplits | None:
    """The data as images ``(N, C, H, W)``, cut to the profile's train and test sizes; None
    when it holds no square images."""
    data = raw(ctx)
    if not_images(data) is not None:
        return None
    data = data.images()
    p: ResnetProfile = ctx.profile
    if p.train_size:
        data = data.head(min(p.train_size, len(data.train)))
    if p.test_size:
        n = min(p.test_size, len(data.test))
        data = dataclasses.replace(data, test=Split(data.test.x[:n], data.test.y[:n]))
    return data


def net_config(data: DatasetSplits) -> ResNetConfig:
    return tr.net_config(data.sample_shape, data.n_classes)


def _data_id(data: DatasetSplits) -> dict:
    return {"dataset": data.name, "content_id": data.content_id, "shape": data.sample_shape,
            "n_train": len(data.train), "n_test": len(data.test)}


def _experiment(name: str, build, cfg, ctx: RunContext, describe: dict,
                data: DatasetSplits, journal: bool = True,
                trainable=ModuleRun) -> ModuleExperiment:
    p: ResnetProfile = ctx.profile
    hooks = (tr.Journal(p.journal_images),) if journal else ()
    return ModuleExperiment(name, build, cfg, hooks=hooks, data=data,
                            describe={"method": name, **describe, "data": _data_id(data)},
                            model_record={"name": "resnet20", "arch": [], "seed": p.seed,
                                          "variant": name}, trainable=trainable)


def dense_step(ctx: RunContext) -> ModuleExperiment:
    data, p = splits(ctx), ctx.profile
    if data is None:  # stored as a failed model with the reason; nothing else is trained
        flat = raw(ctx)
        return ModuleExperiment(DENSE, tr.placeholder, dense_config(p), data=flat,
                                describe={"method": DENSE, "why": not_images(flat),
                                          "data": _data_id(flat)},
                                trainable=tr.NotTrained)
    return _experiment(DENSE, functools.partial(tr.build_dense, net_config(data), p.seed),
                       dense_config(p), ctx, {"settings": settings(p)}, data)


def learned_step(ctx: RunContext) -> ModuleExperiment | None:
    data, p = splits(ctx), ctx.profile
    if data is None:
        return None
    build = functools.partial(tr.build_gated, net_config(data), p.seed, p.price_by,
                              p.gate_kind)
    names = ("price", "price_by", "gate_lr", "free_frac", "warmup_frac")
    if p.gate_kind != "l1":  # an L1 run keeps its identity
        names += ("gate_kind",)
    trainable = ModuleRun
    if p.target_ratio > 0:  # the gates choose the units, a schedule how many MACs stay
        names += ("target_ratio", "min_width_frac", "width_multiple")
        names += tuple(without_defaults({n: getattr(p, n) for n in LATER}, LATER))
        trainable = functools.partial(MacBudgetRun, budget=MacBudget(
            p.target_ratio, p.min_width_frac, p.width_multiple, p.prunes_per_epoch,
            p.budget_score))
    return _experiment(LEARNED, build, learned_config(p), ctx,
                       {"settings": settings(p, *names)}, data, trainable=trainable)


def slim_train_step(ctx: RunContext) -> ModuleExperiment | None:
    data, p = splits(ctx), ctx.profile
    if data is None:
        return None
    build = functools.partial(tr.build_slimming, net_config(data), p.seed, p.slim_penalty)
    return _experiment(SLIM_TRAIN, build, dense_config(p), ctx,
                       {"settings": settings(p, "slim_penalty")}, data)


def final(st: Store, run_id: str, name: str) -> float:
    """The last stored value of ``train/<name>`` of a run."""
    m = st.metrics(run_id)
    m = m[(m.split == "train") & (m.name == name)]
    return float(m.sort_values("epoch").value.iloc[-1])


def target_macs(ctx: RunContext) -> float:
    """The learned network's final multiply-adds (the alternatives' target)."""
    return final(ctx.store, ctx.runs[LEARNED], "macs")


def uniform_step(ctx: RunContext) -> ModuleExperiment | None:
    if LEARNED not in ctx.runs:
        return None
    data, p = splits(ctx), ctx.profile
    target = target_macs(ctx)
    build = functools.partial(tr.build_uniform, net_config(data), p.seed, target)
    return _experiment(UNIFORM, build, dense_config(p), ctx,
                       {"settings": settings(p), "target_macs": target}, data)


def _final_ckpt(st: Store, run_id: str) -> dict:
    latest = st.latest_checkpoint(run_id)
    if latest is None:
        raise RuntimeError(f"run {run_id} has no checkpoint to start from; rerun it")
    return latest[1]


def pruned_step(method: str, ctx: RunContext) -> ModuleExperiment | None:
    up = UPSTREAM[method]
    if LEARNED not in ctx.runs or up not in ctx.runs:
        return None
    data, p = splits(ctx), ctx.profile
    target = target_macs(ctx)
    n = min(p.calib_size, len(data.train))
    calib = (data.train.x[:n], data.train.y[:n])
    cut = {"scale": p.cut_scale, "rounds": p.cut_rounds, "calls": p.cut_tries} \
        if method == CUT else {}
    build = functools.partial(tr.build_pruned, _final_ckpt(ctx.store, ctx.runs[up]),
                              net_config(data), method, target, calib, p.seed, cut)
    describe = {"settings": settings(p, "finetune_epochs", "finetune_lr", "calib_size"),
                "cut": cut,
                "upstream": ctx.runs[up], "target_macs": target}
    return _experiment(method, build, finetune_config(p), ctx, describe, data)


def unit_steps(p: ResnetProfile) -> list[Derived]:
    """dense, learned, then the profile's alternatives (slimming's training before its cut)."""
    out = [Derived(DENSE, dense_step), Derived(LEARNED, learned_step)]
    if UNIFORM in p.alternatives:
        out.append(Derived(UNIFORM, uniform_step))
    if SLIM in p.alternatives:
        out.append(Derived(SLIM_TRAIN, slim_train_step))
    out += [Derived(m, functools.partial(pruned_step, m)) for m in (TP, SLIM, CUT)
            if m in p.alternatives]
    return out


def cost_config(ctx: RunContext) -> dict:
    p = ctx.profile
    return {"runs": {n: ctx.runs[n] for n in TRAINED if n in ctx.runs},
            "repeats": p.latency_repeats, "latency": "folded-bn channels-last interleaved",
            "eager_latency": p.eager_latency}


def latencies(models: list, x1, x64, repeats: int, eager: bool) -> dict[str, list[float]]:
    """Per model the one-thread latency (seconds, median of ``repeats``, the models timed in
    turn) of batch ``x1`` and ``x64`` on the inference path a practitioner deploys: every
    BatchNorm folded into its conv (:func:`~widthlab.nn.resnet.fold_batchnorm`), the network and
    the images in ``channels_last`` memory format (``latency_b1``, ``latency_b64``); with
    ``eager`` also the plain eval model in NCHW (``latency_eager_b1``, ``latency_eager_b64``)."""
    from widthlab.metrics.cost import measure_latencies
    from widthlab.nn.resnet import fold_batchnorm

    def timed(nets, x, cl):
        return measure_latencies(nets, x, threads=1, repeats=repeats, warmup=2,
                                 channels_last=cl)

    folded = [fold_batchnorm(m) for m in models]
    out = {"latency_b1": timed(folded, x1, True), "latency_b64": timed(folded, x64, True)}
    if eager:
        out |= {"latency_eager_b1": timed(models, x1, False),
                "latency_eager_b64": timed(models, x64, False)}
    return out


def cost_compute(ctx: RunContext) -> Result:
    """Per final network (model i = ``TRAINED``'s i-th run present): ``cost/params``,
    ``cost/macs`` (counted on the module) and the latencies of :func:`latencies`
    (``cost/latency_b1``, ``cost/latency_b64``, and the eager ones when the profile's
    ``eager_latency``)."""
    from widthlab.metrics.cost import count_macs, count_params

    cfg, rows, models, nets = cost_config(ctx), [], [], []
    data = splits(ctx)
    if data is None or not cfg["runs"]:
        return Result(raw(ctx).name, config=cfg, device="cpu", precision="fp32", epoch=0,
                      seed=ctx.profile.seed)
    net = net_config(data)
    x1 = data.test.x[:1]
    x64 = data.test.x[:64] if len(data.test) >= 64 else x1.expand(64, *x1.shape[1:])
    for i, (name, run_id) in enumerate(cfg["runs"].items()):
        kind = ctx.profile.gate_kind if name == LEARNED else None
        model = tr.plain_model(_final_ckpt(ctx.store, run_id), net, kind)
        nets.append(model)
        rows += [MetricRow(i, 1, "cost", "params", float(count_params(model))),
                 MetricRow(i, 1, "cost", "macs", float(count_macs(model, x1)))]
        models.append({"name": "resnet20", "arch": list(model.current_config().stage_widths),
                       "seed": 0, "variant": name})
    lat = latencies(nets, x1, x64.contiguous(), cfg["repeats"], cfg["eager_latency"])
    rows += [MetricRow(i, 1, "cost", key, sec) for key, secs in lat.items()
             for i, sec in enumerate(secs)]
    return Result(data.name, models=models, metrics=rows, config=cfg, device="cpu",
                  precision="fp32", epoch=1, seed=ctx.profile.seed)


def manifest_config(ctx: RunContext) -> dict:
    names = [*TRAINED, COST]
    return {"runs": {n: ctx.runs[n] for n in names if n in ctx.runs},
            "profile": ctx.profile.to_dict()}


def manifest_compute(ctx: RunContext) -> Result:
    """A run without models whose config lists this profile's runs."""
    return Result(ctx.dataset if ctx.data is None else ctx.data.name,
                  config=manifest_config(ctx), device="none", precision="fp32",
                  seed=ctx.profile.seed, epoch=0)


def steps(p: ResnetProfile) -> list:
    """Every step of the study on one dataset."""
    return [*unit_steps(p),
            StoredAnalysis(COST, cost_config, cost_compute, label=f"{NAME}:{COST}"),
            StoredAnalysis(MANIFEST, manifest_config, manifest_compute,
                           label=f"{NAME}:{MANIFEST}")]

