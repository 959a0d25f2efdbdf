"""What the ``deadwidth`` study computes: its profile, one engine run (a bank of MLPs), one run
of a user's own ``nn.Module`` and one stored analysis.

Everything in this module decides stored numbers: the steps' code identity is computed from
what they call (this module and its imports), so editing it retrains (or recomputes the
analysis); editing ``study.py`` (tables, verdicts, figures) only redraws.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from widthlab.engine import TrainConfig, load_bank
from widthlab.engine.lifecycle import Result
from widthlab.engine.modules import ModuleConfig
from widthlab.store import ArrayRow, MetricRow
from widthlab.studies.base import (
    Derived,
    Experiment,
    ModuleExperiment,
    Profile,
    RunContext,
    StoredAnalysis,
    sweep_specs,
)


@dataclass(frozen=True, kw_only=True)
class DeadProfile(Profile):
    widths: tuple[int, ...] = field(default=(8, 32, 128), metadata={"help": "hidden widths"})
    seeds: int = field(default=2, metadata={"help": "seeds per width"})
    epochs: int = field(default=1, metadata={"help": "training epochs"})
    train_size: int | None = field(default=5000, metadata={"help": "training images"})


def sweep(p: DeadProfile) -> Experiment:
    """One engine run: every width x seed in one bank, neuron statistics after the last epoch."""
    cfg = TrainConfig(epochs=p.epochs, train_size=p.train_size, eval_splits=("test",))
    return Experiment("sweep", sweep_specs(p.widths, p.seeds, "deadwidth"), cfg)


class SmallNet(nn.Module):
    """A user's own module: any ``nn.Module`` with a loss trains through the same lifecycle
    (stored per epoch, checkpointed, resumed after kill -9, divergence flagged)."""

    def __init__(self, n_in: int, width: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(n_in, width), nn.BatchNorm1d(width), nn.ReLU(),
                                  nn.Linear(width, 10))

    def forward(self, x):
        return self.body(x.flatten(1))


def module_run(p: DeadProfile, ctx: RunContext) -> ModuleExperiment:
    """The widest layer as a user module, trained with Adam (``ModuleConfig``)."""
    n_in = ctx.data.n_features if ctx.data is not None else 784
    cfg = ModuleConfig(epochs=p.epochs, lr=1e-2, batch_size=64, shrink=False, seed=0)
    return ModuleExperiment("module", functools.partial(SmallNet, n_in, max(p.widths), 0), cfg,
                            model_record={"name": "small-net", "arch": [max(p.widths)]})


def norms_config(ctx: RunContext) -> dict:
    return {"source": ctx.runs["sweep"]}


def weight_norms(ctx: RunContext) -> Result:
    """A stored analysis: the incoming-weight norm of every neuron, read from the checkpoint
    (the study stores what it returns as a run of its own)."""
    source = ctx.runs["sweep"]
    bank = load_bank(ctx.store, source)
    models = ctx.store.models(source)
    norms = bank.w0.detach().double().norm(dim=1).numpy()  # (H,) one per hidden unit
    arrays = [ArrayRow(m, 1, "w_norm", norms[a:b]) for m, (a, b) in enumerate(bank.slices)]
    metrics = [MetricRow(m, 1, "train", "w_norm_mean", float(np.mean(norms[a:b])))
               for m, (a, b) in enumerate(bank.slices)]
    return Result(ctx.dataset, models=[
        {"name": r.name, "arch": r.arch, "seed": int(r.seed), "variant": r.variant,
         "options": r.options} for r in models.itertuples()],
        metrics=metrics, arrays=arrays, config={"source_run": source}, device="cpu")


def steps(p: DeadProfile) -> list:
    return [sweep(p), Derived("module", functools.partial(module_run, p)),
            StoredAnalysis("norms", norms_config, weight_norms, label="deadwidth:norms")]
