"""A tiny gated GPT trained through the one lifecycle by :class:`TokenRun` in a child process.

    python tests/engine/child_token_run.py STORE [--hang-at-step N] [--fold]

``--hang-at-step N``: write STORE/../hang and sleep at the N-th AdamW step, so the parent can
SIGKILL the process there. ``--fold``: :data:`FOLDED` (the gates folded into the weights
after chunk 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib

import torch

from tests.children import hang_at_step
from widthlab.data.text import tokenize
from widthlab.engine.lifecycle import run_trainable
from widthlab.engine.token_run import TokenConfig, TokenRun
from widthlab.studies.transformer.models import gpt_model

TEXT = "".join(f"{w} to be or not to be, that is the question {i % 7}.\n"
               for i, w in enumerate(["First", "Second", "Third", "Fourth"] * 40))
GPT_CFG = dict(n_layer=2, n_head=4, n_embd=16, n_ffn=24, block_size=16, vocab_size=0,
               dropout=0.0)
# the price kills units during chunk 2, so the kill in chunk 3 resumes a shrunk model
CONFIG = TokenConfig(steps=40, chunk=10, batch_size=4, lr=3e-3, warmup_steps=5, gate_lr=0.05,
                     final_windows=8,
                     price=1e-3, price_from=0.25, price_until=0.5, eval_windows=8)
FOLDED = dataclasses.replace(CONFIG, fold_at=0.5)


def half_open(cfg: dict, seed: int, gate: str | None):
    """The gated GPT with every other gate started near 0, so the price removes about half
    of each group's units in chunk 2 (no group goes down to one unit)."""
    model = gpt_model(cfg, seed, gate=gate)
    with torch.no_grad():
        for g in model.widthlab_unit_gates.values():
            g.gate[1::2] = 0.1
    return model


def corpus():
    return tokenize(TEXT, name="toy", source="test")


def make_run(gate: str | None = "l1", cfg: TokenConfig = CONFIG) -> TokenRun:
    data = corpus()
    model_cfg = {**GPT_CFG, "vocab_size": data.vocab_size}
    return TokenRun(functools.partial(half_open, model_cfg, 0, gate), data, cfg,
                    label="tok:gpt", device="cpu")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--hang-at-step", type=int)
    ap.add_argument("--fold", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    marker = pathlib.Path(args.store).parent / "hang"
    if args.hang_at_step is not None:
        hang_at_step(torch.optim.AdamW, args.hang_at_step, marker)
    from tests.engine.child_token_run import FOLDED as folded
    from tests.engine.child_token_run import make_run as importable

    print(run_trainable(importable(cfg=folded if args.fold else CONFIG), args.store))


if __name__ == "__main__":
    main()
