"""The engine epoch hook that scores every neuron: exact importance, proxies and top-k cuts.

:class:`ImportanceHook` is handed to :func:`widthlab.engine.train` (``hooks=[...]``); after the
chosen epochs it scores every hidden neuron of every live model with
:func:`widthlab.metrics.importance.exact_importance` and every proxy
(:func:`widthlab.metrics.importance.proxies`), and optionally measures the top-k cut curves of
each ordering (:data:`TOPK_ORDERINGS`) with the cut model's forward latency. Its rows are stored
with the run. The importance study (scores and cuts after the last epoch) and the
ordering-stability study (scores after every epoch) both train with it; its code enters the
run's fingerprint through the engine (:mod:`widthlab.engine.identity`).

Example::

    from widthlab.engine import train
    from widthlab.metrics.importance_hook import ImportanceHook

    run_id = train(specs, cfg, "widthlab-runs", hooks=[ImportanceHook(record="all",
                                                                      topk="none")])
    store.array(run_id, 0, "imp_exact", epoch=2)   # (H,) exact importance after epoch 2
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from widthlab.errors import UsageError
from widthlab.metrics.importance import (
    PROXIES,
    dense_latency,
    exact_importance,
    k_grid,
    proxies,
    topk_accuracy,
)
from widthlab.metrics.ordering import ordering
from widthlab.store import ArrayRow, MetricRow

if TYPE_CHECKING:
    from torch import nn

    from widthlab.engine.events import EpochContext
    from widthlab.nn.bank import MLPBank

#: The scores the hook stores (array ``imp_<name>``): the exact importance and every proxy
#: ("gate" only for models with modifiers).
SCORES = ("exact", *PROXIES)
#: Orderings of a top-k curve (arrays ``topk_acc_<name>``): the exact one, its magnitude (a
#: neuron whose removal *lowers* the loss by a lot matters too), every proxy, and a random
#: permutation.
TOPK_ORDERINGS = ("exact", "exact_abs", *PROXIES, "random")

When = str | tuple[int, ...]


def wanted(spec: When, epoch: int, last: int) -> bool:
    """Whether epoch ``epoch`` (of ``last``) is selected by ``spec`` ("all", "last", "none"
    or epoch numbers)."""
    if spec == "all":
        return True
    if spec == "none":
        return False
    if spec == "last":
        return epoch == last
    return epoch in spec


def check_when(spec: object, what: str) -> When:
    """``spec`` validated as an epoch selection (see :func:`wanted`); ``what`` names it in
    the error."""
    if isinstance(spec, str):
        if spec not in ("all", "last", "none"):
            raise UsageError(f"{what} must be 'all', 'last', 'none' or epoch numbers, got "
                             f"{spec!r}")
        return spec
    return tuple(int(e) for e in spec)


def bank_scale(bank: MLPBank) -> torch.Tensor | None:
    """The product of the bank's modifier scales, ``(H,)`` over all models' first-layer units,
    or None without modifiers (what multiplies each ReLU output at evaluation)."""
    if not len(bank.modifiers):
        return None
    with torch.no_grad():
        s = torch.ones(bank.n_hidden, device=bank.device)
        for mod in bank.modifiers:
            s = s * mod.scale().detach()
    return s


@dataclass(frozen=True)
class ImportanceHook:
    """Engine epoch hook: per-neuron importance scores (and optionally top-k curves).

    On the chosen epochs it stores, for every live model ``m``, the arrays ``imp_exact`` and
    ``imp_<proxy>`` (float64, one value per neuron of hidden layer ``layer``) computed on
    ``split``, plus the metrics ``imp_exact_s`` and ``imp_proxies_s`` (seconds). On the top-k
    epochs it also stores ``topk_k`` (kept counts), ``topk_acc_<ordering>`` and
    ``topk_loss_<ordering>`` on ``topk_split``, and ``topk_ms``: the forward latency of a dense
    MLP cut to ``k`` neurons on the whole ``topk_split`` (measured once per ``k`` per epoch, as it
    depends on ``k`` only). Models with modifiers are scored as they compute: the modifiers'
    scale multiplies the first layer's outputs and is the ``gate`` proxy.

    Parameters
    ----------
    split : str
        Split the scores are computed on ("val" by default: held out from training).
    record : "all", "last", "none" or tuple of int
        Epochs with scores.
    topk : "all", "last", "none" or tuple of int
        Epochs with top-k curves (they need scores: those epochs are scored too).
    topk_split : str
        Split the top-k accuracy and latency are measured on.
    layer : int
        Hidden layer scored.
    max_samples : int or None
        Score on the first ``max_samples`` samples of ``split`` only.
    latency_repeats : int
        Best-of count of each latency measurement.
    """

    split: str = "val"
    record: When = "last"
    topk: When = "last"
    topk_split: str = "test"
    layer: int = 0
    max_samples: int | None = None
    latency_repeats: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "record", check_when(self.record, "record"))
        object.__setattr__(self, "topk", check_when(self.topk, "topk"))
        for s in (self.split, self.topk_split):
            if s not in ("train", "val", "test"):
                raise UsageError(f"unknown split {s!r}; choose train, val or test")
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError(f"max_samples must be >= 1 or None, got {self.max_samples}")

    def describe(self) -> dict:
        """Settings entering the run's fingerprint. The code that computes the scores is in
        the run's code hash: the engine hashes the import closure of this module
        (:func:`widthlab.engine.identity.engine_code_hash`), so editing any scoring module it
        reaches, even indirectly, retrains."""
        return {"kind": "ImportanceHook", **asdict(self)}

    def __call__(self, ctx: EpochContext) -> list:
        epoch, last = ctx.epoch, ctx.cfg.epochs
        want_topk = wanted(self.topk, epoch, last)
        if not (want_topk or wanted(self.record, epoch, last)):
            return []
        bank = ctx.bank
        data = ctx.data.split(self.split)
        if len(data) == 0:
            raise UsageError(f"the {self.split} split is empty; the importance hook needs "
                             "samples (set val_size > 0 or score on another split)")
        x, y = data.x[:self.max_samples], data.y[:self.max_samples]
        scale_all = bank_scale(bank)
        rows: list = []
        cut_models = []
        for m in range(bank.n_models):
            if not ctx.alive[m]:
                continue
            mlp = bank.export(m)
            a, b = bank.slices[m]
            scale = None if scale_all is None else scale_all[a:b]
            t0 = time.perf_counter()
            exact = exact_importance(mlp, x, y, layer=self.layer, scale=scale)
            t1 = time.perf_counter()
            prox = proxies(mlp, x, y, layer=self.layer, scale=scale,
                           gates=scale if self.layer == 0 else None)
            t2 = time.perf_counter()
            rows += [ArrayRow(m, epoch, "imp_exact", exact),
                     *(ArrayRow(m, epoch, f"imp_{k}", v) for k, v in prox.items()),
                     MetricRow(m, epoch, self.split, "imp_exact_s", t1 - t0),
                     MetricRow(m, epoch, self.split, "imp_proxies_s", t2 - t1)]
            if want_topk:
                rows += self._topk(ctx, m, mlp, scale, {"exact": exact, **prox})
                cut_models.append((m, mlp))
        if cut_models:
            rows += self._latency(ctx, cut_models)
        return rows

    def _topk(self, ctx: EpochContext, m: int, mlp: nn.Module, scale: torch.Tensor | None,
              scores: dict) -> list:
        test = ctx.data.split(self.topk_split)
        orders = {k: ordering(v) for k, v in scores.items()}
        orders["exact_abs"] = ordering(np.abs(scores["exact"]))
        width = len(orders["exact"])
        orders["random"] = np.random.default_rng([m, ctx.epoch]).permutation(width)
        ks = k_grid(width)
        curves = topk_accuracy(mlp, test.x, test.y, orders, ks, layer=self.layer, scale=scale)
        rows = [ArrayRow(m, ctx.epoch, "topk_k", np.asarray(ks, dtype=np.int64))]
        for name, c in curves.groupby("ordering", sort=False):
            rows += [ArrayRow(m, ctx.epoch, f"topk_acc_{name}", c["acc"].to_numpy(np.float64)),
                     ArrayRow(m, ctx.epoch, f"topk_loss_{name}",
                              c["loss"].to_numpy(np.float64))]
        return rows

    def _latency(self, ctx: EpochContext, models: list) -> list:
        test = ctx.data.split(self.topk_split)
        widest = max(models, key=lambda t: t[1].sizes[self.layer + 1])[1]
        ks = sorted({k for _, mlp in models for k in k_grid(mlp.sizes[self.layer + 1])})
        lat = dense_latency(widest, test.x, ks, layer=self.layer, repeats=self.latency_repeats)
        ms = dict(zip(lat["k"], lat["ms"], strict=True))
        return [ArrayRow(m, ctx.epoch, "topk_ms",
                         np.array([ms[k] for k in k_grid(mlp.sizes[self.layer + 1])]))
                for m, mlp in models]


__all__ = ["SCORES", "TOPK_ORDERINGS", "ImportanceHook", "When", "bank_scale",
           "check_when", "wanted"]
