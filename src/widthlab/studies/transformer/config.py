"""The transformer study's profiles and steps: what is trained and computed.

Steps (all on one corpus: Shakespeare, or a user's text with ``--data corpus.txt``):

- ``sweep-<F>-s<seed>``: a dense GPT with FFN width ``F`` in every block (the journal's sweep);
  ``dense`` is the sweep's model at ``n_ffn`` and seed 0 (the same run when both are there);
- ``gated-<kind>-<price>``: the ``n_ffn`` GPT with gates on every block's FFN neurons (and
  heads), priced per parameter a unit carries and shrunk after every chunk of steps;
- ``static-<kind>-<price>``: a GPT of the widths that gated run ended with, trained from
  scratch for the same steps;
- ``stats``, ``frontier``, ``samples``: stored analyses (:mod:`.compute`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from widthlab.engine.token_run import TokenConfig, TokenRun
from widthlab.errors import UsageError
from widthlab.frontier.group import GROUP_METHODS as METHODS
from widthlab.studies.base import Profile, seed_list
from widthlab.studies.steps import Derived, ModuleExperiment, RunContext, StoredAnalysis
from widthlab.studies.transformer import compute
from widthlab.studies.transformer.models import gpt_model

NAME = "transformer"
KINDS = ("l1", "hard_concrete")


@dataclass(frozen=True, kw_only=True)
class TransformerProfile(Profile):
    """Settings of the transformer study (defaults: nanoGPT's CPU configuration)."""

    n_layer: int = field(default=4, metadata={"help": "transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "attention heads per block"})
    n_embd: int = field(default=128, metadata={"help": "model (residual stream) width"})
    block_size: int = field(default=64, metadata={"help": "context length"})
    n_ffn: int = field(default=512, metadata={"help": "FFN width of the dense, frontier and "
                                                      "gated models"})
    ffn_widths: tuple[int, ...] = field(default=(32, 64, 128, 256, 512, 1024, 2048),
                                        metadata={"help": "FFN widths of the sweep"})
    seeds: int = field(default=2, metadata={"help": "seeds per sweep width"})
    steps: int = field(default=2000, metadata={"help": "AdamW steps of every training run"})
    chunk: int = field(default=250, metadata={"help": "steps per stored row"})
    batch_size: int = field(default=12, metadata={"help": "windows per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    eval_windows: int = field(default=400, metadata={"help": "validation windows per row"})
    final_windows: int = field(default=0, metadata={"help": "validation windows of the last "
                                                            "row (0: all, the exact loss)"})
    stat_windows: int = field(default=128, metadata={"help": "training windows for activation "
                                                             "statistics and calibration"})
    fracs: tuple[float, ...] = field(default=(0.75, 0.5, 0.25, 0.125),
                                     metadata={"help": "fractions of units kept (frontier)"})
    methods: tuple[str, ...] = field(default=tuple(METHODS),
                                     metadata={"help": "rankings of the frontier"})
    finetune_steps: int = field(default=100, metadata={"help": "fine-tune steps after a cut"})
    frontier_windows: int = field(default=512, metadata={"help": "validation windows of the "
                                                                 "frontier's losses"})
    gate_kinds: tuple[str, ...] = field(default=KINDS, metadata={"help": "gate kinds"})
    prices: tuple[float, ...] = field(default=(1e-7, 2e-7, 4e-7),
                                      metadata={"help": "L1 prices per parameter"})
    # hard-concrete at 2e-7 removed only 10% of the FFN in 2000 steps (measured): priced higher
    hc_prices: tuple[float, ...] = field(default=(5e-7, 1e-6, 2e-6),
                                         metadata={"help": "hard-concrete prices per parameter"})
    gate_heads: bool = field(default=False, metadata={"help": "gate the heads too"})
    gate_lr: float = field(default=1e-2, metadata={"help": "peak learning rate of the gates"})
    price_from: float = field(default=0.05, metadata={"help": "price on from this fraction "
                                                              "of the steps"})
    price_until: float = field(default=0.4, metadata={"help": "price off from this fraction"})
    fold_at: float = field(default=0.0, metadata={"help": "fold the gates into the weights "
                                                          "after this fraction of the steps "
                                                          "and train on at fixed widths "
                                                          "(0: never)"})
    good_tol: float = field(default=0.02, metadata={"help": "nats above dense a 'good' "
                                                            "smaller model may be"})
    sample_chars: int = field(default=300, metadata={"help": "characters generated per model"})

    def validate(self) -> None:
        bad = sorted(set(self.gate_kinds) - set(KINDS))
        if bad:
            raise UsageError(f"unknown gate kind(s) {bad}; choose from {', '.join(KINDS)}")
        bad = sorted(set(self.methods) - set(METHODS))
        if bad:
            raise UsageError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        if not self.ffn_widths or self.n_embd % self.n_head or self.steps % self.chunk:
            raise UsageError("transformer profile: need FFN widths, n_embd divisible by n_head "
                             "and steps a multiple of chunk")
        if self.fold_at and not (self.price_until <= self.fold_at < 1
                                 and (self.fold_at * self.steps) % self.chunk == 0):
            raise UsageError(f"fold_at ({self.fold_at}) must be in [price_until, 1) with "
                             f"fold_at * steps a multiple of chunk ({self.chunk}); or 0")
        if any(not 0 < f < 1 for f in self.fracs):
            raise UsageError(f"fracs must be in (0, 1), got {self.fracs}")

    def gpt(self, n_ffn: int, vocab_size: int) -> dict:
        return dict(n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                    n_ffn=int(n_ffn), block_size=self.block_size, vocab_size=int(vocab_size),
                    dropout=0.0)

    def train(self, seed: int = 0, price: float = 0.0) -> TokenConfig:
        return TokenConfig(steps=self.steps, chunk=self.chunk, batch_size=self.batch_size,
                           lr=self.lr, min_lr=self.lr / 10, warmup_steps=self.warmup_steps,
                           gate_lr=self.gate_lr, price=price, price_from=self.price_from,
                           price_until=self.price_until, seed=seed, data_seed=seed,
                           fold_at=(self.fold_at or None) if price else None,
                           eval_windows=self.eval_windows,
                           final_windows=self.final_windows or None)


QUICK = TransformerProfile(n_layer=2, n_head=2, n_embd=32, block_size=32, n_ffn=64,
                           ffn_widths=(16, 64), seeds=1, steps=60, chunk=30, batch_size=8,
                           lr=3e-3, warmup_steps=6, eval_windows=32, final_windows=128,
                           stat_windows=32, fracs=(0.5, 0.25), finetune_steps=10,
                           frontier_windows=64, prices=(3e-5,), hc_prices=(3e-5,),
                           gate_lr=5e-2, gate_heads=True, sample_chars=80)
# gated runs priced from 5% to 25% of the steps, then folded (measured, tgate, 2000 steps,
# L1): 4e-7 -> 3.9x fewer FFN params at 1.8898, its static twin 1.8902 (gates to the end at
# 2e-7 until 40%: 0.013 above the static twin; folded at 50%: 0.004 above)
FOLD = dict(price_until=0.25, fold_at=0.25)
STANDARD = TransformerProfile(ffn_widths=(32, 128, 512, 2048), seeds=1, steps=1000,
                              finetune_steps=50, prices=(4e-7,), hc_prices=(1e-6,), **FOLD)
FULL = TransformerProfile(prices=(2e-7, 4e-7, 8e-7), **FOLD)
PROFILES = {"quick": QUICK, "standard": STANDARD, "full": FULL}


def price_name(price: float) -> str:
    return f"{price:g}"


def _sweep(p: TransformerProfile, width: int, seed: int, ctx: RunContext) -> ModuleExperiment:
    data = compute.corpus_of(ctx)
    cfg = p.gpt(width, data.vocab_size)
    return ModuleExperiment(
        f"sweep-{width}-s{seed}", functools.partial(gpt_model, cfg, seed), p.train(seed),
        describe={"gpt": cfg, "seed": seed, "gate": None, "heads": False, "widths": None},
        model_record={"name": f"gpt-ffn{width}", "arch": [width], "seed": seed},
        label=f"{NAME}:sweep", data=data, trainable=TokenRun)


def _gated(p: TransformerProfile, kind: str, price: float, ctx: RunContext) -> ModuleExperiment:
    data = compute.corpus_of(ctx)
    cfg = p.gpt(p.n_ffn, data.vocab_size)
    return ModuleExperiment(
        f"gated-{kind}-{price_name(price)}",
        functools.partial(gpt_model, cfg, 0, gate=kind, heads=p.gate_heads),
        p.train(0, price),
        describe={"gpt": cfg, "seed": 0, "gate": kind, "heads": p.gate_heads, "widths": None},
        model_record={"name": f"gpt-gated-{kind}", "arch": [p.n_ffn], "seed": 0,
                      "variant": kind, "options": {"price": price}},
        label=f"{NAME}:gated", data=data, trainable=TokenRun)


def _static(p: TransformerProfile, kind: str, price: float,
            ctx: RunContext) -> ModuleExperiment | None:
    gated = ctx.runs.get(f"gated-{kind}-{price_name(price)}")
    if gated is None:
        return None
    data = compute.corpus_of(ctx)
    cfg = p.gpt(p.n_ffn, data.vocab_size)
    widths = compute.final_widths(ctx.store, gated)
    return ModuleExperiment(
        f"static-{kind}-{price_name(price)}", functools.partial(gpt_model, cfg, 0,
                                                                 widths=widths),
        p.train(0), describe={"gpt": cfg, "seed": 0, "gate": None, "heads": False,
                              "widths": widths},
        model_record={"name": "gpt-static", "seed": 0, "options": {"of": gated},
                      "arch": [widths[k] for k in sorted(widths) if k.endswith(":out")]},
        label=f"{NAME}:static", data=data, trainable=TokenRun)


def _prices(p: TransformerProfile) -> list[tuple[str, float]]:
    by_kind = {"l1": p.prices, "hard_concrete": p.hc_prices}
    return [(k, float(x)) for k in p.gate_kinds for x in by_kind[k]]


def steps(p: TransformerProfile) -> list:
    """The study's steps in order (see the module docstring)."""
    out: list = [Derived("dense", functools.partial(_dense, p))]
    out += [Derived(f"sweep-{w}-s{s}", functools.partial(_sweep, p, int(w), s))
            for w in p.ffn_widths for s in seed_list(p.seeds)]
    for kind, price in _prices(p):
        out.append(Derived(f"gated-{kind}-{price_name(price)}",
                           functools.partial(_gated, p, kind, price)))
        out.append(Derived(f"static-{kind}-{price_name(price)}",
                           functools.partial(_static, p, kind, price)))
    for name in ("stats", "frontier", "samples"):
        out.append(StoredAnalysis(name, functools.partial(getattr(compute, f"{name}_config"), p),
                                  functools.partial(getattr(compute, name), p),
                                  label=f"{NAME}:{name}"))
    out.append(StoredAnalysis(compute.MANIFEST, compute.manifest_config,
                              compute.manifest_compute, label=f"{NAME}:{compute.MANIFEST}"))
    return out


def _dense(p: TransformerProfile, ctx: RunContext) -> ModuleExperiment:
    exp = _sweep(p, p.n_ffn, 0, ctx)
    return ModuleExperiment("dense", exp.model, exp.config, describe=exp.describe,
                            model_record=exp.model_record, label=exp.label, data=exp.data,
                            trainable=exp.trainable)


__all__ = ["FULL", "KINDS", "NAME", "PROFILES", "QUICK", "STANDARD", "TransformerProfile",
           "price_name", "steps"]
