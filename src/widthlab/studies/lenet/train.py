"""The lenet study's training: the networks as user modules of the one trainer.

:func:`build_gated` / :func:`build_dense` build the networks a
:class:`~widthlab.studies.base.ModuleExperiment` trains through
:class:`~widthlab.engine.module_run.ModuleRun` (the one run lifecycle); :class:`LenetWidths`
is the epoch hook storing the widths as the papers count them; :class:`CutRun` is the cut
run's extra epoch (cut by the frontier, then one epoch of fine-tuning); :class:`NotTrained`
stores a network that cannot read the data as a failed model.

Without the store (``benchmarks/bench_lenet.py``): :func:`gated_run` trains one gated network
at one price with :func:`widthlab.engine.modules.train_module`, shrunk after every epoch;
:func:`cut_run` trains
the same network without gates, prunes it after training with
:func:`widthlab.frontier.cut_layers` (every Linear that ``width_frontier`` supports, layer by
layer, deciding on training images only, as the gates do: :func:`decision_data`) and
fine-tunes it for one epoch.
Every record carries ``row_widths``, the widths as the papers count them
(:func:`widthlab.nn.lenet.lenet_widths`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from widthlab.data.tensors import DatasetSplits
from widthlab.engine.distill import image_augment, shifted_teacher_logits
from widthlab.engine.events import EpochContext
from widthlab.engine.lifecycle import EpochRows
from widthlab.engine.module_run import ModuleRun
from widthlab.engine.modules import ModuleConfig, error_rate, train_module
from widthlab.frontier import cut_layers
from widthlab.nn.lenet import (
    FRONTIER_LAYERS,
    IMAGE,
    LAYERS,
    LENET300,
    build_lenet,
    lenet_widths,
)
from widthlab.nn.surgery import model_gates
from widthlab.store import MetricRow
from widthlab.studies.lenet.config import (
    HC,
    L1,
    LenetProfile,
    dense_config,
    epochs_of,
    finetune_config,
    gated_config,
    hc_per_weight_of,
)

OnEpoch = Callable[[dict], None] | None


def _pairs(data: DatasetSplits, device) -> tuple[tuple, tuple]:
    return ((data.train.x.to(device), data.train.y.to(device)),
            (data.test.x.to(device), data.test.y.to(device)))


def _train(model, data, cfg, device, on_epoch: OnEpoch, teacher=None) -> list[dict]:
    def record(rec: dict) -> None:
        rec["row_widths"] = lenet_widths(model)
        if on_epoch is not None:
            on_epoch(rec)

    train, test = _pairs(data, device)
    return train_module(model, train, test, cfg, on_epoch=record, teacher=teacher,
                        sample_shape=data.sample_shape)


def decision_data(data: DatasetSplits, size: int | None, device) -> tuple[tuple, tuple]:
    """What the frontier cut reads: the first ``size`` training images fit the compensation,
    the next ``size`` decide the width (at most half the training set each; none: halves)."""
    n = len(data.train) // 2 if size is None else min(size, len(data.train) // 2)
    n = max(n, 1)
    x, y = data.train.x.to(device), data.train.y.to(device)
    second = slice(n, 2 * n) if len(data.train) >= 2 else slice(0, n)
    return (x[:n], y[:n]), (x[second], y[second])


def build_gated(network: str, p: LenetProfile, n_in: int, n_classes: int,
                kind: str = L1) -> nn.Module:
    """``network`` gated as the papers count widths. L1 gates (``kind="l1"``): LeNet-300-100's
    three gates (pixels, 300 units, 100 units) priced ``price * p.scales300``. Hard-concrete
    gates (``kind="hard_concrete"``): initial ``log_alpha`` ``p.hc_init``, priced per weight
    when ``p.hc_per_weight300`` / ``p.hc_per_weight5``, LeNet-300-100's three gates times
    ``p.hc_scales300``."""
    if kind == HC:
        model = build_lenet(network, p.seed, n_in=n_in, n_classes=n_classes, kind=HC,
                            per_weight=hc_per_weight_of(p, network), init=p.hc_init)
    else:
        model = build_lenet(network, p.seed, n_in=n_in, n_classes=n_classes)
    if network == LENET300:
        scales = p.scales300 if kind == L1 else p.hc_scales300
        for gate, scale in zip(model_gates(model), scales, strict=True):
            gate.price_scale = float(scale)
    return model


def build_dense(network: str, p: LenetProfile, n_in: int, n_classes: int) -> nn.Module:
    """``network`` without gates (the cut run's)."""
    return build_lenet(network, p.seed, n_in=n_in, n_classes=n_classes, gated=False)


def gated_run(network: str, price: float, data: DatasetSplits, p: LenetProfile,
              device: str | torch.device = "cpu", on_epoch: OnEpoch = None,
              kind: str = L1) -> list[dict]:
    """Train ``network`` gated (gate ``kind``) at ``price`` on ``data`` in memory; the
    per-epoch records of :func:`~widthlab.engine.modules.train_module` plus ``row_widths``
    (distilled from :class:`LenetTeacher` when the run is distilled)."""
    model = build_gated(network, p, data.n_features, data.n_classes, kind).to(device)
    teacher = teacher_of(network, p, data, device, kind)
    return _train(model, data, gated_config(p, network, price, kind), device, on_epoch,
                  None if teacher is None else teacher())


class LenetTeacher:
    """The distillation teacher of a hard-concrete LeNet-300-100 run: ``p.hc_teacher300``
    (LeNet-300-100 when the data are not 28x28 images) trained without gates on ``data`` as
    the cut run's dense phase trains (:func:`dense_config`); called, its logits of the
    training images, of each of their ``p.hc_shift300`` translations when set (computed
    once per profile and data, kept for the other prices)."""

    _memo: dict = {}

    def __init__(self, p: LenetProfile, data: DatasetSplits, device):
        image = data.n_features == IMAGE * IMAGE
        self.network = p.hc_teacher300 if image else LENET300
        self.p, self.data, self.device = p, data, device

    def describe(self) -> dict:
        p = self.p
        return {"teacher": self.network, "epochs": epochs_of(p, self.network), "seed": p.seed,
                "lr": p.lr, "batch_size": p.batch_size, "shift": p.hc_shift300}

    def __call__(self) -> torch.Tensor:
        key = (repr(self.describe()), id(self.data.train.x), len(self.data.train),
               str(self.device))
        if key not in self._memo:
            self._memo.clear()  # one teacher kept
            d = self.data
            model = build_dense(self.network, self.p, d.n_features, d.n_classes).to(self.device)
            _train(model, d, dense_config(self.p, self.network), self.device, None)
            x = d.train.x.to(self.device)
            aug = image_augment(d, self.p.hc_shift300) or ((), 0.0)
            logits = shifted_teacher_logits(model, x, aug[0], self.p.hc_shift300, aug[1])
            self._memo[key] = (d.train.x, logits)
        return self._memo[key][1]


def teacher_of(network: str, p: LenetProfile, data: DatasetSplits, device,
               kind: str = L1) -> LenetTeacher | None:
    """The run's teacher (none unless a distilled hard-concrete LeNet-300-100 run)."""
    if kind == HC and network == LENET300 and p.hc_distill300:
        return LenetTeacher(p, data, device)
    return None


def cut_run(network: str, data: DatasetSplits, p: LenetProfile,
            device: str | torch.device = "cpu", on_epoch: OnEpoch = None) -> dict:
    """Train ``network`` without gates, cut it with the frontier layer by layer, fine-tune
    one epoch.

    Returns
    -------
    dict
        ``dense`` (the dense run's records), ``cuts`` (:class:`~widthlab.frontier.LayerCut`
        per layer), ``cut_error`` (test error right after the cut), ``finetune`` (the
        fine-tuning epoch's record, ``row_widths`` the cut widths).
    """
    model = build_dense(network, p, data.n_features, data.n_classes).to(device)
    dense = _train(model, data, dense_config(p, network), device, on_epoch)
    calib, decide = decision_data(data, p.calib_size, device)
    small, cuts = cut_layers(model, FRONTIER_LAYERS[network], calib, decide, tol=p.tol)
    _, (xt, yt) = _pairs(data, device)
    cut_error = error_rate(small, xt, yt)
    finetune = _train(small, data, finetune_config(p), device, None)[0]
    return {"dense": dense, "cuts": cuts, "cut_error": cut_error, "finetune": finetune}


class LenetWidths:
    """Epoch hook: ``train/width/<layer>``, the widths as the papers count them."""

    def __init__(self, network: str):
        self.network = network

    def describe(self) -> dict:
        return {"lenet_widths": self.network}

    def __call__(self, ctx: EpochContext) -> list[MetricRow]:
        return width_rows(self.network, ctx.bank, ctx.epoch)


def width_rows(network: str, model: nn.Module, epoch: int) -> list[MetricRow]:
    return [MetricRow(0, epoch, "train", f"width/{name}", w)
            for name, w in zip(LAYERS[network], lenet_widths(model), strict=True)]


class CutRun(ModuleRun):
    """The cut run: the network trained without gates for ``cfg.epochs`` epochs, then one more
    epoch that cuts it with the frontier layer by layer (deciding on training images:
    :func:`decision_data`) and fine-tunes it (``describe["finetune"]``: a ModuleConfig's
    fields). That epoch also stores ``test/error_before_finetune`` and per cut layer
    ``decide/k/<layer>``, ``decide/acc_before/<layer>`` and ``decide/acc_after/<layer>``."""

    @property
    def epochs(self) -> int:
        return self.cfg.epochs + 1

    def train_epoch(self, epoch: int, advance: Callable[[int], None]) -> EpochRows:
        if epoch <= self.cfg.epochs or not self.alive:
            return super().train_epoch(epoch, advance)
        d = self.describe
        network, settings = d["network"], d["settings"]
        calib, decide = decision_data(self.data, settings["calib_size"], self.device)
        small, cuts = cut_layers(self.model, FRONTIER_LAYERS[network], calib, decide,
                                 tol=settings["tol"])
        cut_error = error_rate(small, self.data.test.x, self.data.test.y)
        tune = ModuleRun(small, self.data, ModuleConfig(**d["finetune"]),
                         describe={"finetune": True})
        tune.train_epoch(1, advance)
        self.model, self.epoch = small, epoch
        self.train_s += tune.train_s
        rows = self.rows(tune.last_record, epoch=epoch)
        rows.metrics += width_rows(network, small, epoch)
        rows.metrics.append(MetricRow(0, epoch, "test", "error_before_finetune", cut_error))
        for c in cuts:
            rows.metrics += [MetricRow(0, epoch, "decide", f"k/{c.layer}", c.k),
                             MetricRow(0, epoch, "decide", f"acc_before/{c.layer}", c.acc_before),
                             MetricRow(0, epoch, "decide", f"acc_after/{c.layer}", c.acc_after)]
        return rows


class NotTrained(ModuleRun):
    """A network that cannot read the data (``describe["why"]``): stored as a run whose one
    model failed at epoch 0, with the reason."""

    def train_epoch(self, epoch: int, advance: Callable[[int], None]) -> EpochRows:
        self.alive, self.epoch = False, self.epochs
        return EpochRows(failures=[(0, 0, self.describe["why"])])
