"""The resnet study's models and epoch hook: what its runs train (computes stored numbers).

- :func:`build_dense`, :func:`build_gated` (gates on every units-core group of the ResNet, one
  price, per unit scaled by its multiply-adds when ``price_by="macs"``), :func:`build_uniform`
  (every width times one factor, the factor chosen to meet a multiply-add target),
  :func:`build_slimming` (network slimming's L1 on the BatchNorm scales, added to their
  gradients as Liu et al.'s code does);
- :func:`build_pruned`: a fine-tuning run's starting model, the final weights of an upstream
  run (read from the store's final checkpoint) cut to a multiply-add target by Torch-Pruning,
  network slimming's global threshold or widthlab's compensated whole-network cut;
- :class:`Journal`: the epoch hook storing widths, multiply-adds and the journal's per-channel
  statistics (activation std of every channel, dead channels) of every group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from widthlab.engine.events import EpochContext
from widthlab.engine.lifecycle import EpochRows
from widthlab.engine.module_run import ModuleRun
from widthlab.errors import UsageError
from widthlab.frontier import unit_costs
from widthlab.nn.resnet import ResNet, ResNetConfig
from widthlab.nn.surgery import gate_layers, model_gates
from widthlab.nn.surgery.gates import NOISE_KEY
from widthlab.store import ArrayRow, MetricRow
from widthlab.units import build_graph, resize_to_state_

GATE_KEY = "widthlab_unit_gates"


def net_config(shape: Sequence[int], n_classes: int) -> ResNetConfig:
    """ResNet-20 for images of ``shape`` ``(C, H, W)`` (square) and ``n_classes``."""
    c, h, w = (int(v) for v in shape)
    if h != w:
        raise UsageError(f"the resnet study reads square images; the data's images are {h}x{w}"
                         "; crop or pad them to a square")
    return ResNetConfig(in_channels=c, image_size=h, n_classes=int(n_classes))


def example(cfg: ResNetConfig, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)


def placeholder() -> nn.Module:
    """The model of a run that cannot train (:class:`NotTrained`)."""
    return nn.Linear(1, 1)


class NotTrained(ModuleRun):
    """A run whose data ResNet-20 cannot read (``describe["why"]``): stored as a run whose one
    model failed at epoch 0, with the reason."""

    def train_epoch(self, epoch: int, advance) -> EpochRows:
        self.alive, self.epoch = False, self.epochs
        return EpochRows(failures=[(0, 0, self.describe["why"])])


def build_dense(cfg: ResNetConfig, seed: int) -> ResNet:
    """ResNet-20 of ``cfg``, seeded."""
    torch.manual_seed(seed)
    return ResNet(cfg)


def build_gated(cfg: ResNetConfig, seed: int, price_by: str = "macs",
                kind: str = "l1") -> ResNet:
    """ResNet-20 with a gate of ``kind`` (``"l1"`` or ``"hard_concrete"``) on every group (each
    stage's residual stream, each block's inner width); ``price_by="macs"``: a gate's price per
    unit is scaled by the multiply-adds one of its units carries over the mean unit's (one price
    in MAC units); ``"sqrt_macs"``: by the square root of that ratio; ``"unit"``: flat."""
    model = build_dense(cfg, seed)
    x = example(cfg)
    groups = list(build_graph(model, x).groups)
    if price_by != "unit":
        costs = unit_costs(model, groups, x)
        per = {g.name: float(costs[g.name]["macs"]) for g in groups}
        mean = float(np.mean(list(per.values())))
    gate_layers(model, groups=groups, example=x, kind=kind, seed=seed)
    if price_by != "unit":
        power = 0.5 if price_by == "sqrt_macs" else 1.0
        for gate in model_gates(model):  # by its group's name, not by position
            gate.price_scale = (per[gate.group_name] / mean) ** power
    return model


def uniform_config(cfg: ResNetConfig, target_macs: float) -> ResNetConfig:
    """``cfg`` with every width times one factor (rounded, at least 1), the factor whose
    multiply-adds are closest to ``target_macs`` (bisection over the factor)."""
    def scaled(f: float) -> ResNetConfig:
        return ResNetConfig(
            stage_widths=tuple(max(1, round(w * f)) for w in cfg.stage_widths),
            blocks=cfg.blocks,
            block_widths=tuple(tuple(max(1, round(w * f)) for w in row)
                               for row in cfg.block_widths),
            in_channels=cfg.in_channels, image_size=cfg.image_size, n_classes=cfg.n_classes)

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if scaled(mid).macs() < target_macs else (lo, mid)
    return min((scaled(lo), scaled(hi)), key=lambda c: abs(c.macs() - target_macs))


def build_uniform(cfg: ResNetConfig, seed: int, target_macs: float) -> ResNet:
    """The static ResNet with every width scaled uniformly to ``target_macs``, from scratch."""
    return build_dense(uniform_config(cfg, target_macs), seed)


def bn_l1_(model: nn.Module, penalty: float) -> nn.Module:
    """Network slimming's sparsity: ``penalty * sign(gamma)`` added to the gradient of every
    BatchNorm scale (the subgradient of ``penalty * sum |gamma|``)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            w = m.weight
            w.register_hook(lambda g, w=w: g + penalty * torch.sign(w.detach()))
    return model


def build_slimming(cfg: ResNetConfig, seed: int, penalty: float) -> ResNet:
    """ResNet-20 trained with network slimming's L1 on the BatchNorm scales."""
    return bn_l1_(build_dense(cfg, seed), penalty)


def state_config(sd: dict, cfg: ResNetConfig) -> ResNetConfig:
    """The ResNet sizes a (possibly shrunk or pruned) state dict holds."""
    stages = len(cfg.stage_widths)
    return ResNetConfig(
        stage_widths=tuple(int(sd[f"stages.{s}.0.conv2.weight"].shape[0])
                           for s in range(stages)),
        blocks=cfg.blocks,
        block_widths=tuple(tuple(int(sd[f"stages.{s}.{b}.conv1.weight"].shape[0])
                                 for b in range(cfg.blocks)) for s in range(stages)),
        in_channels=cfg.in_channels, image_size=cfg.image_size, n_classes=cfg.n_classes)


def plain_model(ckpt: dict, cfg: ResNetConfig, kind: str | None = None) -> ResNet:
    """The network of a final checkpoint as a plain ResNet at its sizes (the gates' values,
    if any, folded into the weights that read the gated units); ``kind``: the gates' kind
    (None: hard-concrete when the gates carry noise state, else L1)."""
    sd = dict(ckpt["model"])
    gates = {k: v for k, v in sd.items() if k.startswith(GATE_KEY)}
    if gates:
        from widthlab.nn.surgery import fold_gates_

        if kind is None:
            kind = "hard_concrete" if any(k.endswith(NOISE_KEY) for k in gates) else "l1"
        model = build_gated(cfg, 0, price_by="unit", kind=kind)
        resize_to_state_(model, sd, ckpt.get("sizes"))
        model.load_state_dict(sd)
        with torch.no_grad():  # the gates re-hook to the shrunk groups on a forward
            model.eval()(example(cfg))
        fold_gates_(model)
        sd = model.state_dict()
    plain = ResNet(state_config(sd, cfg))
    plain.load_state_dict(sd)
    return plain.eval()


def _prune(model: ResNet, method: str, target: float, calib: tuple, cut: dict) -> ResNet:
    """Cut ``model`` in place to at most ``target`` multiply-adds per image by ``method``."""
    from widthlab.frontier.peers import cut_network_to_macs_, slim_, tp_prune_

    x = example(model.config)
    if method == "torch-pruning":
        tp_prune_(model, x, target_macs=int(target))
    elif method == "slimming":
        slim_(model, x, target_macs=int(target))
    elif method == "widthlab-cut":
        cut_network_to_macs_(model, calib, target_macs=int(target), example=x, **cut)
    else:
        raise UsageError(f"unknown prune method {method!r}")
    return model


def build_pruned(ckpt: dict, cfg: ResNetConfig, method: str, target: float,
                 calib: tuple, seed: int, cut: dict | None = None) -> ResNet:
    """A fine-tuning run's start: the upstream run's final weights (dense or slimming-trained),
    cut by ``method`` to at most ``target`` multiply-adds per image: Torch-Pruning, network
    slimming's global threshold, or widthlab's compensated whole-network cut
    (:func:`widthlab.frontier.peers.cut_network_to_macs_`; ``cut``: its ``scale``, ``rounds``
    and ``calls``)."""
    torch.manual_seed(seed)
    model = plain_model(ckpt, cfg).train()
    return _prune(model, method, target, calib, cut or {})


def group_stats(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per group the std of every channel's activation over the images and positions of ``x``:
    a block's inner channels at its second conv's input (after the gate, if any), a stage's
    stream at its last block's output."""
    out: dict[str, np.ndarray] = {}
    handles = []

    def keep(name):
        def hook(mod, args, result=None):
            t = (args[0] if result is None else result).detach().double()
            out[name] = t.transpose(0, 1).reshape(t.shape[1], -1).std(1).numpy()
        return hook

    for s, stage in enumerate(model.stages):
        handles.append(stage[-1].register_forward_hook(keep(f"stream{s}")))
        for b, block in enumerate(stage):
            handles.append(block.conv2.register_forward_pre_hook(keep(f"inner{s}.{b}")))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return out


def group_widths(cfg: ResNetConfig) -> dict[str, int]:
    """``stream<s>`` and ``inner<s>.<b>`` widths of ``cfg``."""
    out = {f"stream{s}": w for s, w in enumerate(cfg.stage_widths)}
    for s, row in enumerate(cfg.block_widths):
        out.update({f"inner{s}.{b}": w for b, w in enumerate(row)})
    return out


def dead(std: np.ndarray) -> int:
    """Channels whose activation is constant over the images: std at most 1e-4 of the
    group's largest."""
    return int((std <= 1e-4 * max(float(std.max(initial=0.0)), 1e-12)).sum())


class Journal:
    """Epoch hook: ``train/width/<group>``, ``train/macs`` and ``train/params`` of the network
    now, per group ``journal/dead/<group>`` and the array ``std/<group>`` (each channel's
    activation std on the first ``n_images`` training images)."""

    def __init__(self, n_images: int):
        self.n_images = int(n_images)

    def describe(self) -> dict:
        return {"resnet_journal": self.n_images}

    def __call__(self, ctx: EpochContext) -> list:
        model, e = ctx.bank, ctx.epoch
        cfg = model.current_config()
        rows: list = [MetricRow(0, e, "train", "macs", float(cfg.macs())),
                      MetricRow(0, e, "train", "params", float(cfg.param_count()))]
        rows += [MetricRow(0, e, "train", f"width/{g}", float(w))
                 for g, w in group_widths(cfg).items()]
        stats = group_stats(model, ctx.data.train.x[:self.n_images])
        for g, std in stats.items():
            rows.append(MetricRow(0, e, "journal", f"dead/{g}", float(dead(std))))
            rows.append(ArrayRow(0, e, f"std/{g}", std.astype(np.float64)))
        return rows
