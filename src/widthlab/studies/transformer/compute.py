"""The transformer study's stored analyses: per-FFN-neuron statistics of the sweep, the frontier
of the trained dense GPT (every ranking, one-shot and fine-tuned, and the whole-network
allocation), and generated text. Each returns a :class:`~widthlab.engine.lifecycle.Result`;
rows that are not per-model scalars (the frontier's table, the samples) travel in its config.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
import torch.nn.functional as F

from widthlab.data import load_text
from widthlab.engine.lifecycle import Result
from widthlab.engine.token_run import TokenConfig, token_optimizer
from widthlab.errors import UsageError
from widthlab.frontier.models import cut_groups, model_loss
from widthlab.frontier.network import cut_network
from widthlab.nn.surgery import fold_gates_
from widthlab.store import ArrayRow, MetricRow, Store
from widthlab.studies.steps import RunContext
from widthlab.studies.transformer.models import (
    current_widths,
    ffn_group,
    gpt_model,
    heads_group,
    unit_params,
)
from widthlab.units import build_graph, resize_to_state_

GROUP_KINDS = ("ffn", "heads")
MANIFEST = "manifest"


@functools.lru_cache(maxsize=2)
def _load(name: str):
    return load_text(name)


def corpus_of(ctx: RunContext):
    """The corpus the study trains on: a user's text (``--data corpus.txt``) or the dataset's
    name (``shakespeare``)."""
    if ctx.data is not None:
        if not hasattr(ctx.data, "vocab"):
            raise UsageError("the transformer study trains on text: pass --data corpus.txt "
                             "(UTF-8; characters are the tokens), not a table")
        return ctx.data
    return _load(ctx.dataset)


def load_final(st: Store, run_id: str) -> torch.nn.Module:
    """The model of a finished TokenRun of this study at its last checkpoint (eval mode)."""
    c = st.get_run(run_id)["config"]
    model = gpt_model(c["gpt"], int(c["seed"]), gate=c["gate"], heads=bool(c["heads"]),
                      widths=c["widths"])
    found = st.latest_checkpoint(run_id)
    if found is None:
        raise UsageError(f"run {run_id} has no checkpoint; rerun the study to train it")
    state = found[1]
    if state.get("state", {}).get("folded") is not None:  # gates folded during training
        with torch.no_grad():
            fold_gates_(model)
    resize_to_state_(model, state["model"], state.get("sizes"))
    model.load_state_dict(state["model"])
    return model.eval()


def final_widths(st: Store, run_id: str) -> dict[str, int]:
    return current_widths(load_final(st, run_id))


def _runs(ctx: RunContext, prefix: str) -> dict[str, str]:
    return {k: v for k, v in sorted(ctx.runs.items()) if k.startswith(prefix)}


def _windows(ids: torch.Tensor, block: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` full windows spread evenly over ``ids``: inputs and next tokens ``(n, block)``."""
    starts = torch.linspace(0, len(ids) - block - 1, n).long()  # (n,)
    offs = torch.arange(block)  # (T,)
    return ids[starts[:, None] + offs], ids[starts[:, None] + offs + 1]


def _calib(p, data) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return data.batch("train", p.stat_windows, p.block_size, generator=g)


# ------------------------------------------------------------------ per-neuron statistics
def stats_config(p, ctx: RunContext) -> dict:
    return {"runs": _runs(ctx, "sweep-"), "windows": p.stat_windows, "blocks": p.n_layer}


@torch.no_grad()
def ffn_stds(model: torch.nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Per block, each FFN neuron's activation std (the GELU output the down projection reads)
    over every position of ``x`` ``(N, T)`` (float64, population std)."""
    acts: dict[int, torch.Tensor] = {}
    hooks = [b.mlp.proj.register_forward_pre_hook(
        lambda m, a, i=i: acts.__setitem__(i, a[0].detach().flatten(0, 1).double()))
        for i, b in enumerate(model.blocks)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return [acts[i].std(dim=0, unbiased=False).numpy() for i in range(len(model.blocks))]


def stats(p, ctx: RunContext) -> Result:
    data = corpus_of(ctx)
    x, _ = _calib(p, data)
    models, arrays, metrics = [], [], []
    for i, (step, run_id) in enumerate(stats_config(p, ctx)["runs"].items()):
        model = load_final(ctx.store, run_id)
        found = ffn_stds(model, x)
        for b, s in enumerate(found):
            arrays.append(ArrayRow(i, 1, f"std/{b}", s))
        metrics.append(MetricRow(i, 1, "ffn", "neurons", float(sum(len(s) for s in found))))
        _, width, seed = step.split("-")
        models.append({"name": step, "arch": [int(width)], "seed": int(seed[1:]),
                       "options": {"run": run_id}})
    return Result(data.name, models=models, metrics=metrics, arrays=arrays,
                  config=stats_config(p, ctx),
                  precision="fp64")


# ------------------------------------------------------------------ the frontier
def frontier_config(p, ctx: RunContext) -> dict:
    return {"dense": ctx.runs.get("dense"), "fracs": list(p.fracs), "methods": list(p.methods),
            "finetune_steps": p.finetune_steps, "calib": p.stat_windows,
            "eval": p.frontier_windows}


def finetune(model: torch.nn.Module, data, p, steps: int) -> None:
    """``steps`` AdamW steps at the end-of-training learning rate (``lr / 10``), on the
    same seeded windows for every model."""
    if steps <= 0:
        return
    tc = TokenConfig(steps=steps, chunk=steps, lr=p.lr / 10, min_lr=p.lr / 10)
    opt = token_optimizer(model, tc)
    g = torch.Generator().manual_seed(2)
    model.train()
    for _ in range(steps):
        x, y = data.batch("train", p.batch_size, p.block_size, generator=g)  # (B, T)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()


def _groups(p, kind: str) -> list[str]:
    name = ffn_group if kind == "ffn" else heads_group
    return [name(b) for b in range(p.n_layer)]


def _cut_row(dense, p, data, calib, ev, kind: str, method: str, frac: float) -> dict:
    model = copy.deepcopy(dense)
    graph = build_graph(model, calib[0][:1])
    frs = cut_groups(model, graph, {g: frac for g in _groups(p, kind)}, calib, method)
    one = model_loss(model, ev, batch=64)[0]
    finetune(model, data, p, p.finetune_steps)
    return {"group": kind, "method": method, "frac": frac, "used": frs[0].used,
            "widths": current_widths(model), "loss": one,
            "loss_ft": model_loss(model, ev, batch=64)[0]}


def _allocation(dense, p, calib, ev, frac: float, kinds: tuple[str, ...]) -> dict:
    """``cut_network`` over the groups of ``kinds``, removing as many parameters as the
    uniform cut of every FFN to ``frac`` does."""
    model = copy.deepcopy(dense)
    graph = build_graph(model, calib[0][:1])
    names = [g for k in kinds for g in _groups(p, k)]
    cfg = dense.cfg
    total = sum(graph[g].size * unit_params(cfg, g) for g in names)
    removed = sum(graph[g].size * unit_params(cfg, g) for g in _groups(p, "ffn")) * (1 - frac)
    cut_network(model, graph, calib, target="params", amount=removed / total, groups=names)
    return {"group": "alloc:" + "+".join(kinds), "method": "allocation (obs)", "frac": frac,
            "used": "obs", "widths": current_widths(model),
            "loss": model_loss(model, ev, batch=64)[0], "loss_ft": float("nan")}


def frontier(p, ctx: RunContext) -> Result:
    data = corpus_of(ctx)
    dense = load_final(ctx.store, ctx.runs["dense"])
    calib = _calib(p, data)
    ev = _windows(data.val, p.block_size, p.frontier_windows)
    rows = [{"group": "dense", "method": "dense", "frac": 1.0, "used": "",
             "widths": current_widths(dense), "loss": model_loss(dense, ev, batch=64)[0],
             "loss_ft": float("nan")}]
    for kind in GROUP_KINDS:
        for method in p.methods:
            for frac in p.fracs:
                rows.append(_cut_row(dense, p, data, calib, ev, kind, method, float(frac)))
    for frac in [f for f in p.fracs if f in (0.5, 0.25)]:
        for kinds in (("ffn",), ("ffn", "heads")):
            rows.append(_allocation(dense, p, calib, ev, float(frac), kinds))
    return Result(data.name, models=[{"name": "dense", "arch": [p.n_ffn], "seed": 0}],
                  config={**frontier_config(p, ctx), "rows": rows}, epoch=0)


# ------------------------------------------------------------------ generated text
def samples_config(p, ctx: RunContext) -> dict:
    return {"runs": {k: v for k, v in sorted(ctx.runs.items())
                     if k == "dense" or k.startswith(("gated-", "static-"))},
            "chars": p.sample_chars, "tol": p.good_tol}


def final_row(st: Store, run_id: str) -> dict:
    """The last stored row of a TokenRun: ``val_loss`` and ``ffn_params``."""
    met = st.metrics(run_id)
    last = met[met.epoch == met.epoch.max()].set_index(["split", "name"]).value
    return {"val_loss": float(last[("val", "loss")]),
            "ffn_params": int(last[("train", "ffn_params")])}


def smallest_good(st: Store, runs: dict[str, str], tol: float) -> tuple[str | None, str]:
    """The run with the fewest FFN parameters whose loss is within ``tol`` of the dense run's
    (``"good"``), else the lowest loss among the smaller ones (``"best"``)."""
    dense = final_row(st, runs["dense"])
    rows = {k: final_row(st, v) for k, v in runs.items() if k != "dense"}
    small = {k: r for k, r in rows.items() if r["ffn_params"] < dense["ffn_params"]}
    good = [k for k, r in small.items() if r["val_loss"] <= dense["val_loss"] + tol]
    if good:
        return min(good, key=lambda k: (small[k]["ffn_params"], k)), "good"
    if small:
        return min(small, key=lambda k: (small[k]["val_loss"], k)), "best"
    return None, ""


@torch.no_grad()
def samples(p, ctx: RunContext) -> Result:
    data = corpus_of(ctx)
    cfg = samples_config(p, ctx)
    pick, why = smallest_good(ctx.store, cfg["runs"], p.good_tol)
    out = []
    for step, tag in [("dense", "dense"), *([(pick, why)] if pick else [])]:
        model = load_final(ctx.store, cfg["runs"][step])
        g = torch.Generator().manual_seed(0)
        ids = model.generate(data.val[None, :1], p.sample_chars, temperature=0.8, generator=g)
        out.append({"step": step, "why": tag, **final_row(ctx.store, cfg["runs"][step]),
                    "text": data.decode(ids[0].tolist())})
    return Result(data.name, config={**cfg, "samples": out}, epoch=0)


def manifest_config(ctx: RunContext) -> dict:
    return {"runs": {k: v for k, v in sorted(ctx.runs.items()) if k != MANIFEST},
            "profile": ctx.profile.to_dict()}


def manifest_compute(ctx: RunContext) -> Result:
    """The manifest: a run without models whose config lists this profile's runs (the
    report finds runs by label, and the sweep's runs share one)."""
    cfg = manifest_config(ctx)
    first = next(iter(cfg["runs"].values()), None)
    dataset = ctx.store.get_run(first)["dataset"] if first else ctx.dataset
    return Result(dataset, config=cfg, device="none", precision="fp32", epoch=0)


__all__ = ["MANIFEST", "corpus_of", "ffn_stds", "final_row", "final_widths", "finetune",
           "frontier", "load_final", "manifest_compute", "manifest_config", "samples",
           "smallest_good", "stats"]
