"""The rows an engine epoch stores per model of the bank: running training loss and accuracy,
batch losses, modifier records, evaluation loss and accuracy, neuron statistics, hook rows.

:class:`BankRows` is a mixin of :class:`~widthlab.engine.trainer.Engine` (it reads the engine's
``bank``, ``cfg``, ``data``, ``state`` and ``hooks``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from widthlab.engine.banks import EvalResult, evaluate
from widthlab.engine.events import EpochContext
from widthlab.store import ArrayRow, MetricRow


@dataclass
class EpochSums:
    """Per-model sums over one epoch's minibatches."""

    loss: Tensor       # (M,) float64 sum of batch mean losses x batch sizes
    correct: Tensor    # (M,) correct predictions
    finite: Tensor     # (M,) whether every loss was finite
    n: int             # training samples
    batch_losses: list[Tensor] = field(default_factory=list)

    @classmethod
    def zeros(cls, n_models: int, device: torch.device, n: int) -> EpochSums:
        return cls(torch.zeros(n_models, dtype=torch.float64, device=device),
                   torch.zeros(n_models, dtype=torch.long, device=device),
                   torch.ones(n_models, dtype=torch.bool, device=device), n)



class BankRows:
    """Row builders of the engine (see the module docstring)."""

    @staticmethod
    def _train_rows(epoch: int, sums: EpochSums, live: list[int]
                    ) -> tuple[list[MetricRow], list[ArrayRow]]:
        """Running train loss and accuracy, and the batch losses when recorded."""
        metrics: list[MetricRow] = []
        arrays: list[ArrayRow] = []
        run_loss = (sums.loss / sums.n).tolist()
        run_acc = (sums.correct.double() / sums.n).tolist()
        for m in live:
            metrics += [MetricRow(m, epoch, "train", "loss_running", run_loss[m]),
                        MetricRow(m, epoch, "train", "acc_running", run_acc[m])]
        if sums.batch_losses:
            per_batch = torch.stack(sums.batch_losses).double().cpu().numpy()  # (steps, M)
            for m in live:
                col = per_batch[:, m]
                arrays.append(ArrayRow(m, epoch, "batch_loss", col.copy()))
                metrics += [MetricRow(m, epoch, "train", f"batch_loss_{k}", float(f(col)))
                            for k, f in (("min", np.min), ("median", np.median),
                                         ("max", np.max))]
        return metrics, arrays

    def _modifier_rows(self, epoch: int) -> tuple[list[MetricRow], list[ArrayRow]]:
        metrics: list[MetricRow] = []
        arrays: list[ArrayRow] = []
        for mod in self.bank.modifiers:
            for m, name, value in mod.epoch_records():
                if self.state.alive[m]:
                    if np.ndim(value) == 0:
                        metrics.append(MetricRow(m, epoch, "train", name, float(value)))
                    else:
                        arrays.append(ArrayRow(m, epoch, name, np.asarray(value)))
        return metrics, arrays

    def _eval_rows(self, epoch: int, live: list[int]) -> tuple[list[MetricRow], list[ArrayRow]]:
        """Loss and accuracy on the evaluated splits; neuron statistics when asked."""
        cfg = self.cfg
        metrics: list[MetricRow] = []
        arrays: list[ArrayRow] = []
        splits = list(cfg.eval_splits) if (cfg.eval_epochs == "all"
                                           or epoch == cfg.epochs) else []
        want_stats = cfg.wants_stats(epoch)
        if want_stats and cfg.stats_split not in splits:
            splits.append(cfg.stats_split)
        for name in splits:
            stats = want_stats and name == cfg.stats_split
            res = evaluate(self.bank, self.data.split(name), batch_size=cfg.eval_batch_size,
                           stats=stats, preact_cov=stats and cfg.preact_cov,
                           precision=cfg.precision)
            loss_l, acc_l = res.loss.tolist(), res.acc.tolist()
            for m in live:
                metrics += [MetricRow(m, epoch, name, "loss", loss_l[m]),
                            MetricRow(m, epoch, name, "acc", acc_l[m])]
            if stats:
                metrics_s, arrays_s = self._neuron_arrays(res, epoch, live, name)
                metrics += metrics_s
                arrays += arrays_s
        return metrics, arrays

    def _hook_rows(self, epoch: int) -> tuple[list[MetricRow], list[ArrayRow]]:
        metrics: list[MetricRow] = []
        arrays: list[ArrayRow] = []
        ctx = EpochContext(epoch, self.bank, self.cfg, self.data, tuple(self.state.alive))
        for hook in self.hooks:
            for row in hook(ctx) or ():
                if self.state.alive[row.model]:
                    (arrays if isinstance(row, ArrayRow) else metrics).append(row)
        return metrics, arrays

    def _neuron_arrays(self, res: EvalResult, epoch: int, live: list[int], split: str):
        mom = res.moments
        mean = mom.mean.cpu().numpy()
        std = mom.std(ddof=0).cpu().numpy()
        active = mom.active.cpu().numpy()
        metrics, arrays = [], []
        for m in live:
            a, b = self.bank.slices[m]
            arrays += [ArrayRow(m, epoch, "act_mean", mean[a:b].copy()),
                       ArrayRow(m, epoch, "act_std", std[a:b].copy()),
                       ArrayRow(m, epoch, "dead", (~active[a:b]).astype(np.uint8))]
            metrics += [MetricRow(m, epoch, split, "dead", float((~active[a:b]).sum())),
                        MetricRow(m, epoch, split, "total_std", float(std[a:b].sum()))]
            if res.cov is not None:
                arrays += [ArrayRow(m, epoch, "pre_mean", res.cov.mean(m).cpu().numpy()),
                           ArrayRow(m, epoch, "pre_cov", res.cov.covariance(m).cpu().numpy())]
        return metrics, arrays

