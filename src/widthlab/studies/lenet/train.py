"""The lenet study's training, without the store (``benchmarks/bench_lenet.py`` calls it too).

:func:`gated_run` trains one gated network at one price with
:func:`widthlab.engine.modules.train_module`, shrunk after every epoch; :func:`cut_run` trains
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

from widthlab.data.tensors import DatasetSplits
from widthlab.engine.modules import error_rate, train_module
from widthlab.frontier import cut_layers
from widthlab.nn.lenet import FRONTIER_LAYERS, LENET300, build_lenet, lenet_widths
from widthlab.nn.surgery import model_gates
from widthlab.studies.lenet.config import (
    HC,
    L1,
    LenetProfile,
    dense_config,
    finetune_config,
    gated_config,
    hc_per_weight_of,
)

OnEpoch = Callable[[dict], None] | None


def _pairs(data: DatasetSplits, device) -> tuple[tuple, tuple]:
    return ((data.train.x.to(device), data.train.y.to(device)),
            (data.test.x.to(device), data.test.y.to(device)))


def _train(model, data, cfg, device, on_epoch: OnEpoch) -> list[dict]:
    def record(rec: dict) -> None:
        rec["row_widths"] = lenet_widths(model)
        if on_epoch is not None:
            on_epoch(rec)

    train, test = _pairs(data, device)
    return train_module(model, train, test, cfg, on_epoch=record)


def decision_data(data: DatasetSplits, size: int | None, device) -> tuple[tuple, tuple]:
    """What the frontier cut reads: the first ``size`` training images fit the compensation,
    the next ``size`` decide the width (at most half the training set each; none: halves)."""
    n = len(data.train) // 2 if size is None else min(size, len(data.train) // 2)
    n = max(n, 1)
    x, y = data.train.x.to(device), data.train.y.to(device)
    second = slice(n, 2 * n) if len(data.train) >= 2 else slice(0, n)
    return (x[:n], y[:n]), (x[second], y[second])


def gated_run(network: str, price: float, data: DatasetSplits, p: LenetProfile,
              device: str | torch.device = "cpu", on_epoch: OnEpoch = None,
              kind: str = L1) -> list[dict]:
    """Train ``network`` gated at ``price`` on ``data``; the per-epoch records of
    :func:`~widthlab.engine.modules.train_module` plus ``row_widths``. L1 gates
    (``kind="l1"``): LeNet-300-100's three gates (pixels, 300 units, 100 units) are priced
    ``price * p.scales300``. Hard-concrete gates (``kind="hard_concrete"``): initial
    ``log_alpha`` ``p.hc_init``, priced per weight when ``p.hc_per_weight300`` /
    ``p.hc_per_weight5``, LeNet-300-100's three gates times ``p.hc_scales300``."""
    if kind == HC:
        model = build_lenet(network, p.seed, n_in=data.n_features, n_classes=data.n_classes,
                            kind=HC, per_weight=hc_per_weight_of(p, network),
                            init=p.hc_init).to(device)
    else:
        model = build_lenet(network, p.seed, n_in=data.n_features,
                            n_classes=data.n_classes).to(device)
    if network == LENET300:
        scales = p.scales300 if kind == L1 else p.hc_scales300
        for gate, scale in zip(model_gates(model), scales, strict=True):
            gate.price_scale = float(scale)
    return _train(model, data, gated_config(p, network, price, kind), device, on_epoch)


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
    model = build_lenet(network, p.seed, n_in=data.n_features, n_classes=data.n_classes,
                        gated=False).to(device)
    dense = _train(model, data, dense_config(p, network), device, on_epoch)
    calib, decide = decision_data(data, p.calib_size, device)
    small, cuts = cut_layers(model, FRONTIER_LAYERS[network], calib, decide, tol=p.tol)
    _, (xt, yt) = _pairs(data, device)
    cut_error = error_rate(small, xt, yt)
    finetune = _train(small, data, finetune_config(p), device, None)[0]
    return {"dense": dense, "cuts": cuts, "cut_error": cut_error, "finetune": finetune}
