"""What the resnet study trains (declarative): ResNet-20 (:mod:`widthlab.nn.resnet`) on 28x28
images, dense and with gates on every units-core group, and the practitioner's alternatives at
the multiply-adds the gates learned.

Budgets: the dense network (a), the learned widths and the uniformly narrower network (b) train
``epochs`` epochs each; the prune-after-training methods start from the dense run (c: Torch-
Pruning, e: widthlab's compensated cut) or from a network-slimming run of ``epochs`` epochs (d)
and fine-tune ``finetune_epochs`` more, so they get ``finetune_epochs`` epochs more than the
learned widths (stated in the report in epochs and training multiply-adds).

Profiles: ``quick`` is a CI smoke test (a few hundred images, one or two epochs: the numbers
mean nothing); ``standard`` and ``full`` hold the comparison (``benchmarks/bench_resnet.py``
runs ``standard``'s settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from widthlab.engine.modules import ModuleConfig
from widthlab.errors import UsageError
from widthlab.frontier.gate_budget import SCORES
from widthlab.studies.base import Profile

NAME = "resnet"
DENSE, LEARNED, UNIFORM, TP, SLIM_TRAIN, SLIM, CUT = (
    "dense", "learned", "uniform", "torch-pruning", "slimming-train", "slimming", "widthlab-cut")
ALTERNATIVES = (UNIFORM, TP, SLIM, CUT)  # (b)-(e)
LETTERS = {DENSE: "a", UNIFORM: "b", TP: "c", SLIM: "d", CUT: "e"}
COST, MANIFEST = "cost", "manifest"
PRICE_BY = ("macs", "sqrt_macs", "unit")
GATE_KINDS = ("l1", "hard_concrete", "relative_l1")


@dataclass(frozen=True, kw_only=True)
class ResnetProfile(Profile):
    """Epochs, data, optimizer, the gates' price and the alternatives' settings."""

    epochs: int = field(default=6, metadata={"help": "training epochs of every network"})
    finetune_epochs: int = field(default=2, metadata={
        "help": "fine-tuning epochs after a prune-after-training method's cut"})
    train_size: int | None = field(default=10_000, metadata={
        "help": "first N training images (all: none)"})
    test_size: int | None = field(default=5000, metadata={
        "help": "first N test images (all: none)"})
    batch_size: int = field(default=128, metadata={"help": "minibatch size"})
    lr: float = field(default=0.05, metadata={"help": "SGD learning rate (cosine schedule)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "weight decay (not on gates)"})
    price: float = field(default=2e-4, metadata={"help": "L1 price of the gates, one for all"})
    price_by: str = field(default="macs", metadata={
        "help": "macs: a unit's price times its multiply-adds over the mean unit's; "
                "sqrt_macs: times the square root of that ratio; unit: every unit the same"})
    gate_lr: float = field(default=0.05, metadata={"help": "the gates' learning rate"})
    gate_kind: str = field(default="l1", metadata={
        "help": "l1: relu(g) gates under an L1 price; hard_concrete: Louizos et al.'s "
                "stochastic gates in [0, 1] under the expected-L0 price; relative_l1: "
                "relu(g) / max(relu(g)) per group under its L1 price (scale-free)"})
    target_ratio: float = field(default=0.0, metadata={
        "help": "> 1: after each priced epoch the learned run removes the units of lowest "
                "relative gate (gate / its group's largest, ranked over the network) until "
                "it costs dense MACs / target_ratio ** (k / priced epochs) "
                "(frontier.gate_budget); 0: units go only when their gate reaches 0"})
    min_width_frac: float = field(default=0.125, metadata={
        "help": "with target_ratio: the fewest units a group keeps, as a fraction of its "
                "dense width"})
    width_multiple: int = field(default=1, metadata={
        "help": "with target_ratio: every group the budget cuts keeps a multiple of this many "
                "units; 1: any width"})
    prunes_per_epoch: int = field(default=1, metadata={
        "help": "with target_ratio: budget prunes per priced epoch, evenly spaced (smaller "
                "steps on the same geometric schedule); 1: one at each priced epoch's end"})
    budget_score: str = field(default="max", metadata={
        "help": "with target_ratio: a unit's gate is ranked relative to its group's largest "
                "(max), its group's median (median: robust to one runaway gate), or as a "
                "robust z-score within its group (robust_z)"})
    free_frac: float = field(default=1 / 3, metadata={
        "help": "last fraction of the learned run's epochs without the price"})
    warmup_frac: float = field(default=0.0, metadata={
        "help": "first fraction of the learned run's epochs without the price (a warm-up)"})
    slim_penalty: float = field(default=1e-4, metadata={
        "help": "network slimming's L1 on the BatchNorm scales"})
    finetune_lr: float = field(default=0.01, metadata={"help": "fine-tuning learning rate"})
    calib_size: int = field(default=1024, metadata={
        "help": "training images the cuts calibrate on (Torch-Pruning, widthlab's cut)"})
    cut_scale: str = field(default="max", metadata={
        "help": "widthlab cut's loss scale: max, measured or fisher (frontier.cut_network)"})
    cut_rounds: int = field(default=4, metadata={"help": "widthlab cut's allocation rounds"})
    cut_tries: int = field(default=3, metadata={
        "help": "widthlab cut's most cut_network calls to reach the learned multiply-adds"})
    journal_images: int = field(default=256, metadata={
        "help": "training images of the per-channel activation statistics"})
    latency_repeats: int = field(default=20, metadata={
        "help": "timed repeats of each latency (median), one thread"})
    eager_latency: bool = field(default=True, metadata={
        "help": "also time the plain eager networks (NCHW, BatchNorm not folded) beside the "
                "deployed ones (BatchNorm folded, channels-last)"})
    seed: int = field(default=0, metadata={"help": "seed of the weights and the batches"})
    alternatives: tuple[str, ...] = field(default=ALTERNATIVES, metadata={
        "help": "the alternatives compared at the learned multiply-adds: uniform, "
                "torch-pruning, slimming, widthlab-cut"})

    def validate(self) -> None:
        bad = sorted(set(self.alternatives) - set(ALTERNATIVES))
        if bad or len(set(self.alternatives)) != len(self.alternatives):
            raise UsageError(f"alternatives must be distinct names from "
                             f"{', '.join(ALTERNATIVES)}, got {list(self.alternatives)}")
        for name in ("epochs", "batch_size", "calib_size", "journal_images", "width_multiple",
                     "prunes_per_epoch",
                     "latency_repeats", "cut_rounds", "cut_tries"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.finetune_epochs < 1:
            raise UsageError(f"finetune_epochs must be >= 1, got {self.finetune_epochs}")
        for name in ("train_size", "test_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UsageError(f"{name} must be >= 1 or none, got {v}")
        for name in ("lr", "gate_lr", "finetune_lr"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise UsageError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        for name in ("price", "slim_penalty", "weight_decay", "momentum"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise UsageError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        if not (0 <= self.free_frac < 1 and 0 <= self.warmup_frac < 1
                and self.free_frac + self.warmup_frac < 1):
            raise UsageError(f"free_frac and warmup_frac must be in [0, 1) with a sum < 1, got "
                             f"{self.free_frac} and {self.warmup_frac}")
        if self.target_ratio != 0 and not (self.target_ratio > 1
                                           and math.isfinite(self.target_ratio)):
            raise UsageError(f"target_ratio must be 0 (off) or a finite number > 1, got "
                             f"{self.target_ratio}")
        if not 0 < self.min_width_frac <= 1:
            raise UsageError(f"min_width_frac must be in (0, 1], got {self.min_width_frac}")
        if self.budget_score not in SCORES:
            raise UsageError(f"budget_score must be one of {', '.join(SCORES)}, got "
                             f"{self.budget_score!r}")
        if self.cut_scale not in ("max", "measured", "fisher"):
            raise UsageError(f"cut_scale must be max, measured or fisher, got "
                             f"{self.cut_scale!r}")
        if self.gate_kind not in GATE_KINDS:
            raise UsageError(f"gate_kind must be one of {', '.join(GATE_KINDS)}, got "
                             f"{self.gate_kind!r}")
        if self.price_by not in PRICE_BY:
            raise UsageError(f"price_by must be one of {', '.join(PRICE_BY)}, got "
                             f"{self.price_by!r}")


PROFILES = {
    # CI smoke test only (about 20 s per dataset on one idle thread): 128 training and 100 test
    # images, 1 epoch (the learned run 2, the price high so that some channels go): the
    # numbers say nothing about the question
    "quick": ResnetProfile(epochs=1, finetune_epochs=1, train_size=128, test_size=100,
                           batch_size=32, price=0.05, gate_lr=0.5, free_frac=0.0,
                           calib_size=32, cut_scale="fisher", cut_rounds=1, cut_tries=1,
                           journal_images=32, latency_repeats=3, eager_latency=False),
    # the comparison on 2 CPU cores (benchmarks/bench_resnet.py, about 23 min per seed on one
    # thread): 12,000 training and 5,000 test images, 8 epochs at lr 0.1; the learned run:
    # relative (scale-free) gates under one flat price, 1 warm-up epoch, 2 priced epochs with
    # 4 MAC-budget prunes each (geometric steps to 2.55x fewer MACs, every group keeps at
    # least half its width), 5 free epochs at the final widths; a unit is ranked by its gate
    # over its group's median (the relative gate's price grows each group's largest gate,
    # which under "max" made the ranking a ranking of groups); 1 epoch of fine-tuning for
    # (c)-(e). The numbers of each seed, and of the settings tried before: README.md and
    # benchmarks/README.md
    "standard": ResnetProfile(epochs=8, train_size=12_000, test_size=5000, finetune_epochs=1,
                              lr=0.1, gate_kind="relative_l1", price_by="unit",
                              price=4e-3, gate_lr=0.05, warmup_frac=1 / 8, free_frac=5 / 8,
                              target_ratio=2.55, min_width_frac=0.5, prunes_per_epoch=4,
                              budget_score="median", calib_size=512,
                              cut_rounds=2, cut_tries=4, latency_repeats=30),
    # every training image, the official test set, 15 epochs (2 warm-up, 4 priced ending with
    # the budget's prunes, 9 free), 3 of fine-tuning; the standard profile's flat price and
    # floor, the price scaled to the same gate travel over 10x the priced steps (not run here)
    "full": ResnetProfile(epochs=15, finetune_epochs=3, train_size=None, test_size=None,
                          lr=0.1, gate_kind="relative_l1", price_by="unit", price=4e-4,
                          gate_lr=0.05, warmup_frac=2 / 15, free_frac=9 / 15, target_ratio=2.55,
                          min_width_frac=0.5, calib_size=2048, latency_repeats=50),
}


def learned_epochs(p: ResnetProfile) -> int:
    """The quick profile's learned run gets 2 epochs (one priced, one shrunk) when
    ``epochs`` is 1; otherwise ``epochs``."""
    return max(p.epochs, 2) if p.epochs == 1 else p.epochs


def sgd(p: ResnetProfile, epochs: int, **kw) -> ModuleConfig:
    return ModuleConfig(epochs=epochs, optimizer="sgd", lr=p.lr, momentum=p.momentum,
                        weight_decay=p.weight_decay, batch_size=p.batch_size,
                        schedule="cosine", seed=p.seed, **{"shrink": False, **kw})


def dense_config(p: ResnetProfile) -> ModuleConfig:
    """(a), (b) and network slimming's training: SGD momentum, cosine, ``epochs``."""
    return sgd(p, p.epochs)


def learned_config(p: ResnetProfile) -> ModuleConfig:
    """The gated run: the same SGD, the price on but for the first ``warmup_frac`` and the last
    ``free_frac`` of the epochs,
    shrunk after every epoch (the optimizer's momentum sliced with the weights)."""
    e = learned_epochs(p)
    return sgd(p, e, price=p.price, gate_lr=p.gate_lr, free_epochs=int(e * p.free_frac),
               warmup_epochs=int(e * p.warmup_frac), shrink=True)


def finetune_config(p: ResnetProfile) -> ModuleConfig:
    """Fine-tuning after a cut: ``finetune_epochs`` of SGD momentum, cosine from
    ``finetune_lr``."""
    return ModuleConfig(epochs=p.finetune_epochs, optimizer="sgd", lr=p.finetune_lr,
                        momentum=p.momentum, weight_decay=p.weight_decay,
                        batch_size=p.batch_size, schedule="cosine", shrink=False,
                        seed=p.seed + 1)


def settings(p: ResnetProfile, *names: str) -> dict:
    """The profile fields a run depends on (its identity): the data and optimizer ones, plus
    ``names``."""
    keys = ("epochs", "train_size", "test_size", "batch_size", "lr", "momentum",
            "weight_decay", "seed", *names)
    return {k: getattr(p, k) for k in keys}
