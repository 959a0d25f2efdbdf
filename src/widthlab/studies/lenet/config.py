"""What the lenet study trains (declarative): LeNet-300-100 and LeNet-5-Caffe, gated as the papers
count widths, at every price of the profile (one stored run each), and per network the same
network trained without gates and cut after training by ``widthlab.frontier`` layer by layer
with one epoch of fine-tuning (one stored run); a manifest run lists the runs of one profile.

Two gate kinds (``gate_kinds``, :mod:`widthlab.nn.surgery.kinds`): ``"l1"`` (``relu(g)``
under an L1 price, ``prices300`` / ``prices5``, the stored runs of before) and
``"hard_concrete"`` (Louizos et al.'s L0 gates, ``hc_prices300`` / ``hc_prices5``: the price
of one weight's expected L0 when ``hc_per_weight300`` / ``hc_per_weight5``, else of one
unit's).

The full profile is ``benchmarks/bench_lenet.py``'s settings (the 60,000 training images,
30 / 10 epochs, three prices each); the quick one fits CI time (3,000 images, 3 / 2 epochs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from widthlab.engine.modules import ModuleConfig
from widthlab.errors import UsageError
from widthlab.nn.lenet import LENET5, LENET300, NETWORKS
from widthlab.studies.base import Profile

NAME = "lenet"
TAGS = {LENET300: "lenet300", LENET5: "lenet5"}
L1, HC = "l1", "hard_concrete"
GATE_KINDS = (L1, HC)
KIND_TAGS = {L1: "", HC: "hc-"}  # step names: gated-lenet300-0.0005, gated-hc-lenet300-1e-05


@dataclass(frozen=True, kw_only=True)
class LenetProfile(Profile):
    """Networks, prices, epochs, and the frontier cut they are compared with."""

    networks: tuple[str, ...] = field(default=NETWORKS,
                                      metadata={"help": "LeNet-300-100 and/or LeNet-5-Caffe"})
    prices300: tuple[float, ...] = field(default=(2.5e-4, 5e-4, 1e-3),
                                         metadata={"help": "L1 prices of LeNet-300-100"})
    prices5: tuple[float, ...] = field(default=(2.5e-4, 5e-4, 1e-3),
                                       metadata={"help": "L1 prices of LeNet-5-Caffe"})
    epochs300: int = field(default=30, metadata={"help": "epochs of LeNet-300-100"})
    epochs5: int = field(default=10, metadata={"help": "epochs of LeNet-5-Caffe"})
    train_size: int | None = field(default=None,
                                   metadata={"help": "first N training images (all: none)"})
    seed: int = field(default=0, metadata={"help": "seed of the weights and the batches"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (cosine schedule)"})
    gate_lr: float = field(default=1e-2, metadata={"help": "the gates' learning rate"})
    free_frac: float = field(default=1 / 3,
                             metadata={"help": "last fraction of the epochs without the price"})
    warmup300: float = field(default=0.0, metadata={
        "help": "first fraction of LeNet-300-100's epochs without the price (a warm-up)"})
    warmup5: float = field(default=0.0, metadata={
        "help": "first fraction of LeNet-5-Caffe's epochs without the price (a warm-up)"})
    scales300: tuple[float, ...] = field(
        default=(1.0, 1.0, 1.0),
        metadata={"help": "LeNet-300-100's price multipliers of the pixel, 300-unit and "
                          "100-unit gates"})
    batch_size: int = field(default=100, metadata={"help": "minibatch size"})
    gate_kinds: tuple[str, ...] = field(default=GATE_KINDS, metadata={
        "help": "gate kinds trained at their prices: l1 and/or hard_concrete"})
    hc_prices300: tuple[float, ...] = field(default=(2e-3, 3e-3, 5e-3), metadata={
        "help": "hard-concrete prices of LeNet-300-100 (per weight when hc_per_weight300)"})
    hc_prices5: tuple[float, ...] = field(default=(1e-3, 1.5e-3, 2e-3), metadata={
        "help": "hard-concrete prices of LeNet-5-Caffe (per weight when hc_per_weight5)"})
    hc_per_weight300: bool = field(default=False, metadata={
        "help": "price LeNet-300-100's hard-concrete units per weight they gate (Louizos et "
                "al.; else per unit, like the L1 gates)"})
    hc_per_weight5: bool = field(default=False, metadata={
        "help": "price LeNet-5-Caffe's hard-concrete units per weight they gate"})
    hc_init: float | None = field(default=None, metadata={
        "help": "initial log_alpha of the hard-concrete gates (none: log 4, drop rate 0.2)"})
    hc_gate_lr: float | None = field(default=None, metadata={
        "help": "learning rate of log_alpha (none: gate_lr)"})
    hc_scales300: tuple[float, ...] = field(
        default=(1.0, 1.0, 1.0),
        metadata={"help": "LeNet-300-100's hard-concrete price multipliers of the pixel, "
                          "300-unit and 100-unit gates"})
    hc_ramp300: float = field(default=0.0, metadata={
        "help": "fraction of LeNet-300-100's epochs over which the hard-concrete price rises "
                "linearly after the warm-up (0: the full price at once)"})
    hc_fix_gates300: bool = field(default=False, metadata={
        "help": "train LeNet-300-100's hard-concrete price-free last epochs at fixed, "
                "deterministic gates (a fine-tune at the learned widths)"})
    hc_dropout300: tuple[float, ...] = field(default=(), metadata={
        "help": "dropout rates on LeNet-300-100's hard-concrete gated units (pixels, 300 "
                "units, 100 units; or one rate for all; none: no dropout)"})
    hc_dropout_free_only300: bool = field(default=False, metadata={
        "help": "apply hc_dropout300 only in the price-free last epochs"})
    hc_weight_decay300: float = field(default=0.0, metadata={
        "help": "L2 weight decay of LeNet-300-100's hard-concrete runs' weights (not the "
                "gates)"})
    hc_epochs300: int = field(default=0, metadata={
        "help": "epochs of LeNet-300-100's hard-concrete runs (0: epochs300)"})
    hc_distill300: float = field(default=0.0, metadata={
        "help": "weight a of knowledge distillation in LeNet-300-100's hard-concrete runs: "
                "loss (1-a)*CE + a*T^2*KL(teacher || student) from a dense teacher's logits "
                "(hc_teacher300; 0: none)"})
    hc_distill_temp300: float = field(default=4.0, metadata={
        "help": "softmax temperature T of the distillation"})
    hc_teacher300: str = field(default=LENET5, metadata={
        "help": "the teacher: this network trained without gates on the same images (its "
                "own epochs; LeNet-300-100 on data that is not 28x28 images)"})
    hc_shift300: int = field(default=0, metadata={
        "help": "LeNet-300-100's hard-concrete runs see their training images translated by "
                "up to this many pixels (a random one of the (2s+1)^2 per image and step; "
                "distilled from the teacher's logits of that translation; 0: none)"})
    cut: bool = field(default=True, metadata={"help": "also prune after training (frontier)"})
    tol: float = field(default=0.005,
                       metadata={"help": "training accuracy the frontier cut may lose"})
    calib_size: int | None = field(
        default=10_000, metadata={"help": "training images fitting the cut's compensation; "
                                          "as many others decide its width (none: halves)"})
    finetune_lr: float = field(default=1e-3,
                               metadata={"help": "learning rate of the fine-tuning epoch"})

    def validate(self) -> None:
        bad = sorted(set(self.networks) - set(NETWORKS))
        if bad or not self.networks:
            raise UsageError(f"unknown network(s) {bad}; choose from {', '.join(NETWORKS)}")
        kinds = sorted(set(self.gate_kinds) - set(GATE_KINDS))
        if kinds or not self.gate_kinds or len(set(self.gate_kinds)) != len(self.gate_kinds):
            raise UsageError(f"gate_kinds must be distinct names from {', '.join(GATE_KINDS)}, "
                             f"got {list(self.gate_kinds)}; e.g. l1,hard_concrete")
        prices = (*self.prices300, *self.prices5, *self.hc_prices300, *self.hc_prices5)
        if any(not (v >= 0 and math.isfinite(v)) for v in prices):
            raise UsageError(f"prices must be finite and >= 0, got {list(prices)}; e.g. "
                             "2.5e-4,5e-4,1e-3")
        if self.epochs300 < 1 or self.epochs5 < 1 or self.batch_size < 1 or self.hc_epochs300 < 0:
            raise UsageError("epochs300, epochs5 and batch_size must be >= 1 (hc_epochs300 >= 0)")
        if not 0 <= self.free_frac < 1 or not 0 <= self.tol < 1:
            raise UsageError(f"free_frac and tol must be in [0, 1), got {self.free_frac} and "
                             f"{self.tol}")
        for name in ("warmup300", "warmup5"):
            w = getattr(self, name)
            if not (0 <= w < 1 and w + self.free_frac <= 1):
                raise UsageError(f"{name} must be in [0, 1 - free_frac], got {w}")
        for name in ("scales300", "hc_scales300"):
            v = getattr(self, name)
            if len(v) != 3 or any(not (x >= 0 and math.isfinite(x)) for x in v):
                raise UsageError(f"{name} must be three finite values >= 0 (pixels, 300 "
                                 f"units, 100 units), got {list(v)}")
        if len(self.hc_dropout300) not in (0, 1, 3) or any(
                not 0 <= r < 1 for r in self.hc_dropout300):
            raise UsageError(f"hc_dropout300 must be empty, one rate or three rates (pixels, "
                             f"300 units, 100 units) in [0, 1), got {list(self.hc_dropout300)}")
        if not (self.hc_weight_decay300 >= 0 and math.isfinite(self.hc_weight_decay300)):
            raise UsageError(f"hc_weight_decay300 must be finite and >= 0, got "
                             f"{self.hc_weight_decay300}")
        if not (0 <= self.hc_distill300 <= 1 and 0 < self.hc_distill_temp300 < math.inf):
            raise UsageError(f"hc_distill300 must be in [0, 1] and hc_distill_temp300 finite and "
                             f"> 0, got {self.hc_distill300} and {self.hc_distill_temp300}")
        if self.hc_shift300 < 0:
            raise UsageError(f"hc_shift300 must be >= 0 pixels, got {self.hc_shift300}")
        if self.hc_teacher300 not in NETWORKS:
            raise UsageError(f"unknown hc_teacher300 {self.hc_teacher300!r}; choose from "
                             f"{', '.join(NETWORKS)}")
        if not 0 <= self.hc_ramp300 <= 1:
            raise UsageError(f"hc_ramp300 must be in [0, 1], got {self.hc_ramp300}")
        if self.hc_gate_lr is not None and not self.hc_gate_lr > 0:
            raise UsageError(f"hc_gate_lr must be > 0 or none, got {self.hc_gate_lr}")
        if self.hc_init is not None and not math.isfinite(self.hc_init):
            raise UsageError(f"hc_init must be finite or none, got {self.hc_init}")
        if self.train_size is not None and self.train_size < 1:
            raise UsageError(f"train_size must be >= 1 or none, got {self.train_size}")


PROFILES = {
    # CI time (about a minute per dataset on one thread): 3,000 training images, 3 / 2 epochs,
    # two prices per network; the gates learn
    # 5x faster than in the full run so that units die within those few hundred steps
    # (the hard-concrete gates: one price per network, log_alpha learning 3x faster: it travels
    # from log 4 to below log(1/11) before a unit is removed)
    "quick": LenetProfile(prices300=(5e-4, 2e-3), prices5=(5e-4, 2e-3), epochs300=3, epochs5=2,
                          train_size=3000, gate_lr=5e-2, calib_size=1000,
                          hc_prices300=(3e-3,), hc_prices5=(1e-3,), hc_gate_lr=0.15),
    # between the two: 20,000 images, half the full epochs (15 / 5), two prices per network
    "standard": LenetProfile(prices300=(5e-4, 1e-3), prices5=(5e-4, 1e-3), epochs300=15,
                             epochs5=5, train_size=20_000, gate_lr=2e-2, calib_size=5000,
                             hc_prices300=(2e-3, 3e-3), hc_prices5=(1e-3, 2e-3)),
    # benchmarks/bench_lenet.py: the 60,000 training images, 30 / 10 epochs, three prices;
    # LeNet-300-100's pixels priced 8x and its 300 units 2x its 100 units, no price in its
    # first 5 epochs (about 100 features fewer at the same error than one price for every
    # gate). Its hard-concrete gates: the 100-unit gates priced 2x, the price-free last third
    # at fixed deterministic gates (a price ramp kept more units at no lower error), L2 weight
    # decay 5e-4 on the weights (dropout, pricing the hidden units above the pixels and a
    # slower gate learning rate were worse), distilled (a = 0.5, T = 4) from a dense
    # LeNet-5-Caffe trained first on the same images, on training images shifted by up to 1
    # pixel (the teacher's logits of each of the 9 translations), 150 epochs: without the
    # shift, or at 30-90 epochs, no price reaches 1.6% near 200 features. Every probe behind
    # these choices, with its numbers: benchmarks/README.md (issue 33's runs).
    "full": LenetProfile(prices300=(2.5e-4, 4e-4, 5e-4), scales300=(8.0, 2.0, 1.0),
                         warmup300=1 / 6, hc_scales300=(1.0, 1.0, 2.0),
                         hc_fix_gates300=True, hc_prices300=(7e-2, 7.25e-2, 7.75e-2),
                         hc_weight_decay300=5e-4, hc_epochs300=150, hc_distill300=0.5,
                         hc_shift300=1),
}


def epochs_of(p: LenetProfile, network: str, kind: str = L1) -> int:
    if network == LENET300 and kind == HC and p.hc_epochs300:
        return p.hc_epochs300
    return p.epochs300 if network == LENET300 else p.epochs5


def warmup_of(p: LenetProfile, network: str) -> float:
    return p.warmup300 if network == LENET300 else p.warmup5


def prices_of(p: LenetProfile, network: str, kind: str = L1) -> tuple[float, ...]:
    if kind == HC:
        return p.hc_prices300 if network == LENET300 else p.hc_prices5
    return p.prices300 if network == LENET300 else p.prices5


def gated_name(network: str, price: float, kind: str = L1) -> str:
    """The step (and run label) of one gated run: ``gated-lenet300-0.0005`` (L1),
    ``gated-hc-lenet300-5e-06`` (hard-concrete)."""
    return f"gated-{KIND_TAGS[kind]}{TAGS[network]}-{price:g}"


def cut_name(network: str) -> str:
    return f"cut-{TAGS[network]}"


def hc_per_weight_of(p: LenetProfile, network: str) -> bool:
    return p.hc_per_weight300 if network == LENET300 else p.hc_per_weight5


def gate_lr_of(p: LenetProfile, kind: str = L1) -> float:
    return p.hc_gate_lr if kind == HC and p.hc_gate_lr is not None else p.gate_lr


def gated_config(p: LenetProfile, network: str, price: float, kind: str = L1) -> ModuleConfig:
    """How one gated run trains: Adam, cosine schedule, the price off for the first
    ``warmup300``/``warmup5`` and the last ``free_frac`` of the epochs, shrunk after every
    epoch (the journal's rule: a unit goes when its evaluation gate is exactly 0)."""
    epochs = epochs_of(p, network, kind)
    hc = {"ramp_epochs": round(epochs * p.hc_ramp300), "fix_gates": p.hc_fix_gates300,
          "dropout": p.hc_dropout300,
          "dropout_free_only": p.hc_dropout_free_only300 and bool(p.hc_dropout300),
          "weight_decay": p.hc_weight_decay300, "distill": p.hc_distill300,
          "distill_temperature": p.hc_distill_temp300,
          "shift": p.hc_shift300} if kind == HC and network == LENET300 else {}
    return ModuleConfig(epochs=epochs, price=price, free_epochs=int(epochs * p.free_frac),
                        warmup_epochs=int(epochs * warmup_of(p, network)), lr=p.lr,
                        gate_lr=gate_lr_of(p, kind), batch_size=p.batch_size,
                        schedule="cosine", seed=p.seed, **hc)


def dense_config(p: LenetProfile, network: str) -> ModuleConfig:
    """The network without gates, the same epochs and schedule."""
    return ModuleConfig(epochs=epochs_of(p, network), lr=p.lr, batch_size=p.batch_size,
                        schedule="cosine", shrink=False, seed=p.seed)


def finetune_config(p: LenetProfile) -> ModuleConfig:
    """One epoch of fine-tuning after the cut (cosine from ``finetune_lr``)."""
    return ModuleConfig(epochs=1, lr=p.finetune_lr, batch_size=p.batch_size,
                        schedule="cosine", shrink=False, seed=p.seed + 1)


def hc_regularisers(p: LenetProfile, network: str) -> dict:
    """LeNet-300-100's hard-concrete regularisers (dropout, its phase, weight decay,
    distillation and its teacher) by their settings keys; a run's settings carry only those
    that are set."""
    if network != LENET300:
        return {}
    distill = {"distill": p.hc_distill300, "distill_temp": p.hc_distill_temp300,
               "teacher": p.hc_teacher300,
               "teacher_epochs": epochs_of(p, p.hc_teacher300)} if p.hc_distill300 else {}
    return {"dropout": list(p.hc_dropout300),
            "dropout_free_only": p.hc_dropout_free_only300 and bool(p.hc_dropout300),
            "weight_decay": p.hc_weight_decay300, "shift": p.hc_shift300, **distill}


def settings(p: LenetProfile, network: str, kind: str, gate_kind: str = L1) -> dict:
    """The profile fields one run of ``kind`` ("gated" or "cut") depends on (its identity:
    adding a price does not retrain the others); an L1 run's are those of before the gate
    kinds, a hard-concrete run's add its own fields (and drop ``scales300``)."""
    keys = ["train_size", "seed", "lr", "batch_size"]
    keys += ["gate_lr", "free_frac"] if kind == "gated" else ["tol", "calib_size",
                                                               "finetune_lr"]
    out = {"epochs": epochs_of(p, network, gate_kind if kind == "gated" else L1),
           **{k: getattr(p, k) for k in keys}}
    if kind == "gated":
        out["warmup"] = warmup_of(p, network)
        if gate_kind == HC:
            out.update(gate_kind=HC, gate_lr=gate_lr_of(p, HC),
                       per_weight=hc_per_weight_of(p, network), init=p.hc_init)
            if network == LENET300 and (p.hc_ramp300 or p.hc_fix_gates300):
                out.update(ramp=p.hc_ramp300, fix_gates=p.hc_fix_gates300)  # else as before
            out.update({k: v for k, v in hc_regularisers(p, network).items() if v})
            if network == LENET300:
                out["scales300"] = list(p.hc_scales300)
        elif network == LENET300:
            out["scales300"] = list(p.scales300)
    return out
